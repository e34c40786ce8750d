{{/* The pod template (at spec.template) of the Deployment (shards: 1) and of the StatefulSet
(shards > 1): one source for both. */}}
{{- define "relayprobe.podTemplate" }}
    metadata:
      labels:
        {{- include "relayprobe.labels" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- /* A config or secret change restarts the pod (the files are mounted with subPath). */}}
      {{- $annotations := deepCopy .Values.podAnnotations }}
      {{- if not .Values.existingConfigMap }}
      {{- $_ := set $annotations "checksum/config" (include "relayprobe.config" . | sha256sum) }}
      {{- end }}
      {{- if not .Values.existingSecret }}
      {{- $_ := set $annotations "checksum/secret" (toYaml .Values.secrets | sha256sum) }}
      {{- end }}
      {{- with $annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "relayprobe.serviceAccountName" . }}
      automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
      {{- with .Values.global.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      containers:
        - name: relayprobe
          image: {{ include "relayprobe.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args:
            - run
            - --config.file=/etc/relayprobe/config.yml
            - --web.listen-address=:9833
            - --log.level={{ .Values.logLevel }}
            - --log.format={{ .Values.logFormat }}
            {{- if .Values.webConfig.enabled }}
            - --web.config.file={{ include "relayprobe.webDir" . }}{{ .Values.webConfig.fileKey }}
            {{- end }}
            {{- range .Values.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            # The root filesystem is read-only: no .pyc writes (the image ships them precompiled).
            - name: PYTHONDONTWRITEBYTECODE
              value: "1"
            {{- if gt (int .Values.shards) 1 }}
            # Sharded (docs/kubernetes.md#shards): the shard number is the pod name's StatefulSet
            # ordinal (RELEASE-relayprobe-N), the count comes from shards.
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: RELAYPROBE_SHARDS
              value: {{ .Values.shards | quote }}
            {{- end }}
            {{- with .Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with .Values.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: http
              containerPort: 9833
              protocol: TCP
          livenessProbe:
            {{- include "relayprobe.probe" (dict "probe" .Values.livenessProbe "root" .) | nindent 12 }}
          readinessProbe:
            {{- include "relayprobe.probe" (dict "probe" .Values.readinessProbe "root" .) | nindent 12 }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          securityContext:
            {{- toYaml .Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/relayprobe/config.yml
              subPath: config.yml
              readOnly: true
            - name: secrets
              mountPath: /etc/relayprobe/secrets
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- if .Values.webConfig.enabled }}
            - name: web
              mountPath: {{ include "relayprobe.webDir" . | trimSuffix "/" }}
              readOnly: true
            {{- end }}
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "relayprobe.configMapName" . }}
        - name: secrets
          secret:
            secretName: {{ include "relayprobe.secretName" . }}
            # Readable by the pod's group only (fsGroup), never world-readable.
            defaultMode: 0440
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if .Values.webConfig.enabled }}
        {{- include "relayprobe.webVolume" . | nindent 8 }}
        {{- end }}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
