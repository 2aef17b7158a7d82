{{/* Names and labels shared by every template (Kubernetes recommended labels). */}}
{{- define "ocsp-stapler.name" -}}ocsp-stapler{{- end -}}

{{- define "ocsp-stapler.fullname" -}}
{{- if contains "ocsp-stapler" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-ocsp-stapler" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "ocsp-stapler.labels" -}}
app.kubernetes.io/name: {{ include "ocsp-stapler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ocsp-stapler
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ocsp-stapler.selector" -}}
app.kubernetes.io/name: {{ include "ocsp-stapler.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ocsp-stapler.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Pod Security "restricted": non-root, no escalation, no capabilities, read-only root, seccomp. */}}
{{- define "ocsp-stapler.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ocsp-stapler.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
