{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "relayprobe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "relayprobe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version for the helm.sh/chart label ("+" is not allowed in label values). */}}
{{- define "relayprobe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Namespace of the namespaced resources. */}}
{{- define "relayprobe.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: the stable subset only (a changed selector would orphan the old pods). */}}
{{- define "relayprobe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relayprobe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Standard labels for every resource. */}}
{{- define "relayprobe.labels" -}}
helm.sh/chart: {{ include "relayprobe.chart" . }}
{{ include "relayprobe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | replace "+" "_" | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: relayprobe
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "relayprobe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relayprobe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: registry/repository, then @digest or :tag (default: appVersion). */}}
{{- define "relayprobe.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry -}}
{{- $repo := .Values.image.repository -}}
{{- if $registry }}{{ $repo = printf "%s/%s" $registry $repo }}{{ end -}}
{{- if .Values.image.digest -}}
{{ printf "%s@%s" $repo .Values.image.digest }}
{{- else -}}
{{ printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) }}
{{- end -}}
{{- end }}

{{/* The site's instance id: config.instance, else the release name. */}}
{{- define "relayprobe.instance" -}}
{{- .Values.config.instance | default .Release.Name }}
{{- end }}

{{/* Name of the ConfigMap holding config.yml. */}}
{{- define "relayprobe.configMapName" -}}
{{- .Values.existingConfigMap | default (include "relayprobe.fullname" .) }}
{{- end }}

{{/* Name of the Secret mounted at /etc/relayprobe/secrets. */}}
{{- define "relayprobe.secretName" -}}
{{- .Values.existingSecret | default (include "relayprobe.fullname" .) }}
{{- end }}

{{/* The configuration file: values.config with the instance id and tag secret path filled in. */}}
{{- define "relayprobe.config" -}}
{{- $defaults := dict "instance" (include "relayprobe.instance" .) -}}
{{- if not (hasKey .Values.config "tag_secret") }}
{{- $_ := set $defaults "tag_secret_file" "/etc/relayprobe/secrets/tag_secret" }}
{{- end }}
{{- $config := merge (deepCopy .Values.config) $defaults -}}
{{- toYaml $config }}
{{- end }}
