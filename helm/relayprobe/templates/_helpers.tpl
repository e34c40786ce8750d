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

{{/* The Service's cluster DNS name: the name the serving certificate must carry under webConfig.tls. */}}
{{- define "relayprobe.serviceHost" -}}
{{- printf "%s.%s.svc" (include "relayprobe.fullname" .) (include "relayprobe.namespace" .) }}
{{- end }}

{{/* http or https: what the daemon serves (webConfig.tls), for probes, helm test and ServiceMonitor. */}}
{{- define "relayprobe.webScheme" -}}
{{- if and .Values.webConfig.enabled .Values.webConfig.tls }}https{{ else }}http{{ end }}
{{- end }}

{{/* Where the web config Secret(s) are mounted. */}}
{{- define "relayprobe.webDir" -}}
/etc/relayprobe/web/
{{- end }}

{{/* The web config volume: existingSecret, plus tlsSecret projected into the same directory. */}}
{{- define "relayprobe.webVolume" -}}
- name: web
  projected:
    # Readable by the pod's group only (fsGroup), never world-readable.
    defaultMode: 0440
    sources:
      - secret:
          name: {{ .Values.webConfig.existingSecret }}
      {{- with .Values.webConfig.tlsSecret }}
      - secret:
          name: {{ . }}
      {{- end }}
{{- end }}

{{/*
The exec probe under basic auth (python is in the image): GET argv[1] with the credentials read
from the mounted files named by argv[3:] (none: no credentials), timeout argv[2]; exit 0 on HTTP
200. It calls 127.0.0.1 in its own pod, so the certificate (issued for the Service name) is not
verified; the credentials never appear in the pod spec, only in the mounted Secret.
*/}}
{{- define "relayprobe.probeScript" -}}
import base64, ssl, sys, urllib.error, urllib.request
url, timeout, keys = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
request = urllib.request.Request(url)
if keys:
    user, password = (open("{{ include "relayprobe.webDir" . }}" + k, "rb").read() for k in keys)
    token = base64.b64encode(user + b":" + password).decode()
    request.add_header("Authorization", "Basic " + token)
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
try:
    with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
        status = reply.status
except urllib.error.HTTPError as err:
    status = err.code
except OSError as err:
    sys.exit(f"{url}: {err}")
print(f"{url}: HTTP {status}")
sys.exit(0 if status == 200 else 1)
{{- end }}

{{/*
A liveness/readiness probe from values: under webConfig, an httpGet handler becomes an exec probe
sending the basic-auth credentials (webConfig.basicAuth), or an HTTPS httpGet (webConfig.tls
alone). Timings and any other handler (exec, tcpSocket) are kept as given.
Call with (dict "probe" .Values.livenessProbe "root" $).
*/}}
{{- define "relayprobe.probe" -}}
{{- $probe := deepCopy .probe -}}
{{- $web := .root.Values.webConfig -}}
{{- if and $web.enabled $probe.httpGet -}}
{{- if $web.basicAuth.enabled -}}
{{- $url := printf "%s://127.0.0.1:9833%s" (include "relayprobe.webScheme" .root) ($probe.httpGet.path | default "/") -}}
{{- $timeout := max 1 (sub (int ($probe.timeoutSeconds | default 1)) 1) -}}
{{- $command := list "python" "-c" (include "relayprobe.probeScript" .root) $url (toString $timeout) $web.basicAuth.usernameKey $web.basicAuth.passwordKey -}}
{{- $_ := unset $probe "httpGet" -}}
{{- $_ := set $probe "exec" (dict "command" $command) -}}
{{- else if $web.tls -}}
{{- $_ := set $probe.httpGet "scheme" "HTTPS" -}}
{{- end -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end }}

{{/* Values removed in 2.0 that would now do the wrong thing silently: fail with what to set instead. */}}
{{- define "relayprobe.removedReleaseLabel" -}}
{{- if .values.releaseLabel }}
{{- fail (printf "%s.releaseLabel was removed in chart 2.0: it labelled the %s with relayprobe's release name (%q), which kube-prometheus-stack never selects (it selects ITS release name). Set %s.additionalLabels to the labels your Prometheus selects on instead, e.g. {release: kube-prometheus-stack}, and drop releaseLabel." .key .kind .root.Release.Name .key .key) }}
{{- end }}
{{- end }}
