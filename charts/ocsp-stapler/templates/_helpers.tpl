{{/* Names and labels shared by every template (Kubernetes recommended labels). */}}
{{- define "ocsp-stapler.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* At most 46 characters, so that the longest Service name (<fullname>-operator-metrics)
stays within the 63 of a DNS label. */}}
{{- define "ocsp-stapler.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "ocsp-stapler.name" . -}}
{{- if contains $name .Release.Name -}}{{ .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}{{- end -}}
{{- end -}}
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

{{/* The ServiceAccount a component's pods run as: (dict "root" $ "component" "operator"). */}}
{{- define "ocsp-stapler.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount -}}
{{- if $sa.create -}}
{{- $sa.name | default (printf "%s-%s" (include "ocsp-stapler.fullname" .root) .component) -}}
{{- else -}}
{{- required (printf "%s.serviceAccount.name is required when %s.serviceAccount.create is false" .component .component) $sa.name -}}
{{- end -}}
{{- end -}}

{{/* The component's ServiceAccount when serviceAccount.create: (dict "root" $ "component" NAME). */}}
{{- define "ocsp-stapler.serviceAccount" -}}
{{- $sa := (index .root.Values .component).serviceAccount -}}
{{- if $sa.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "ocsp-stapler.serviceAccountName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "ocsp-stapler.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  {{- with $sa.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
A container's env: the chart's entries (each with a "from" key naming the value it comes
from, dropped from the output), then the component's extraEnv. A name the chart sets, or one
extraEnv gives twice, fails rendering: every variable is in the container exactly once, and
never behind the chart's back (OCSP_STAPLER_NAMESPACES must match the RBAC, the ports the
probes). Call with (dict "chart" LIST "extra" LIST "component" NAME).
*/}}
{{- define "ocsp-stapler.env" -}}
{{- $from := dict -}}
{{- $out := list -}}
{{- range $e := .chart -}}
{{- $_ := set $from $e.name $e.from -}}
{{- $out = append $out (omit $e "from") -}}
{{- end -}}
{{- $given := dict -}}
{{- range $e := .extra -}}
{{- if hasKey $from $e.name -}}
{{- fail (printf "%s.extraEnv sets %s, which the chart sets from %s: set that instead" $.component $e.name (get $from $e.name)) -}}
{{- end -}}
{{- if hasKey $given $e.name -}}
{{- fail (printf "%s.extraEnv gives %s twice" $.component $e.name) -}}
{{- end -}}
{{- $_ := set $given $e.name true -}}
{{- $out = append $out $e -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* A container's args: (dict "args" LIST "extra" LIST "refused" LIST "component" NAME). */}}
{{- define "ocsp-stapler.args" -}}
{{- range $a := .extra -}}
{{- range $flag := $.refused -}}
{{- if or (eq $a $flag) (hasPrefix (printf "%s=" $flag) $a) -}}
{{- fail (printf "%s.extraArgs: %s is set by the chart from its values" $.component $flag) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml (concat .args .extra) -}}
{{- end -}}

{{/*
The pod template's metadata and the scheduling and security parts of its spec, shared by
both components: (dict "root" $ "component" "operator" "values" .Values.operator).
*/}}
{{- define "ocsp-stapler.podMetadata" -}}
{{- $chart := merge (include "ocsp-stapler.labels" .root | fromYaml) (dict "app.kubernetes.io/component" .component) -}}
labels:
  {{- toYaml (merge $chart (.values.podLabels | default dict)) | nindent 2 }}
{{- with .values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "ocsp-stapler.podScheduling" -}}
{{- $v := .values -}}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
{{- $selector := dict "matchLabels" (include "ocsp-stapler.selector" . | fromYaml) }}
{{- $constraints := list }}
{{- range $v.topologySpreadConstraints }}
{{- $c := deepCopy . }}
{{- if not $c.labelSelector }}{{ $_ := set $c "labelSelector" $selector }}{{ end }}
{{- $constraints = append $constraints $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget for a component with more than one replica. */}}
{{- define "ocsp-stapler.podDisruptionBudget" -}}
{{- $pdb := .values.podDisruptionBudget -}}
{{- if and $pdb.enabled (gt (int .values.replicas) 1) }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "ocsp-stapler.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "ocsp-stapler.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if ne (toString $pdb.minAvailable) "" }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "ocsp-stapler.selector" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Checks the schema cannot express (it cannot compare two values). */}}
{{- define "ocsp-stapler.validate" -}}
{{- $le := .Values.operator.leaderElection -}}
{{- $retry := float64 $le.retryPeriodSeconds -}}
{{- $renew := float64 $le.renewDeadlineSeconds -}}
{{- $lease := float64 $le.leaseDurationSeconds -}}
{{- if not (and (lt $retry $renew) (lt $renew $lease)) -}}
{{- fail (printf "operator.leaderElection needs retryPeriodSeconds (%v) < renewDeadlineSeconds (%v) < leaseDurationSeconds (%v)" $retry $renew $lease) -}}
{{- end -}}
{{- if le $renew (addf $retry 1) -}}
{{- fail (printf "operator.leaderElection.renewDeadlineSeconds (%v) must exceed retryPeriodSeconds (%v) by more than 1 s, the write fence's safety margin" $renew $retry) -}}
{{- end -}}
{{- $att := float64 .Values.operator.responder.attemptTimeoutSeconds -}}
{{- $fetch := float64 .Values.operator.responder.timeoutSeconds -}}
{{- if lt $att $fetch -}}
{{- fail (printf "operator.responder.attemptTimeoutSeconds (%v) is below operator.responder.timeoutSeconds (%v)" $att $fetch) -}}
{{- end -}}
{{- $i := .Values.ingress -}}
{{- $stopping := addf $i.shutdownDelaySeconds $i.drainTimeoutSeconds 5 -}}
{{- if lt (float64 $i.terminationGracePeriodSeconds) $stopping -}}
{{- fail (printf "ingress.terminationGracePeriodSeconds (%v) is below shutdownDelaySeconds + drainTimeoutSeconds + 5 (%v): the kubelet would kill pods still draining" $i.terminationGracePeriodSeconds $stopping) -}}
{{- end -}}
{{- end -}}
