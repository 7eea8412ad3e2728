{{/* The release's name prefix, at most 63 characters with its suffixes. */}}
{{- define "warren.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "warren.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
warren.dev/region: {{ .Values.region | quote }}
{{- end -}}

{{- define "warren.proxySelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end -}}

{{- define "warren.agentSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "warren.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "warren.headless" -}}
{{ include "warren.fullname" . }}-proxy-headless
{{- end -}}

{{/*
The gossip seeds: every proxy of this release by its pod DNS name (the
headless Service publishes them before they are ready, so the first
proxies find each other), then the other regions' seeds.
*/}}
{{- define "warren.seeds" -}}
{{- $seeds := list -}}
{{- $full := include "warren.fullname" . -}}
{{- $headless := include "warren.headless" . -}}
{{- range $i := until (int .Values.proxy.replicas) -}}
{{- $seeds = append $seeds (printf "%s-proxy-%d.%s.%s.svc.%s:3020" $full $i $headless $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- concat $seeds .Values.proxy.gossip.extraSeeds | toJson -}}
{{- end -}}

{{/*
The pod security context of every Warren container: the image's
unprivileged user, nothing else.
*/}}
{{- define "warren.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Seconds a proxy may take to stop: the preStop sleep, the hand-off
of its agents (at most 5 s), shutdown.grace, the gossip leave (up to 2 s)
and a margin for closing listeners and persisting the catalog. */}}
{{- define "warren.terminationGrace" -}}
{{- add (int .Values.proxy.preStopSleepSeconds) 5 (int .Values.proxy.shutdownGraceSeconds) 2 8 -}}
{{- end -}}
