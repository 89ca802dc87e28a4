{{/* Chart name, overridable. */}}
{{- define "gemma-serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "gemma-serve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gemma-serve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gemma-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gemma-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gemma-serve.labels" -}}
helm.sh/chart: {{ include "gemma-serve.chart" . }}
{{ include "gemma-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "gemma-serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gemma-serve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gemma-serve.image" -}}
{{- printf "%s:%s%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) .Values.image.tagSuffix -}}
{{- end -}}

{{/* The model directory the server is pointed at (GEMMA_SERVE_MODEL). */}}
{{- define "gemma-serve.modelPath" -}}
{{- if .Values.model.dir -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) (trimPrefix "/" .Values.model.dir) -}}
{{- else -}}
{{- .Values.model.mountPath -}}
{{- end -}}
{{- end -}}

{{- define "gemma-serve.modelClaimName" -}}
{{- default (printf "%s-model" (include "gemma-serve.fullname" .)) .Values.model.persistence.existingClaim -}}
{{- end -}}

{{/* The metric name prefix the server emits: gemma_serve: or vllm: (metrics.names). */}}
{{- define "gemma-serve.metricPrefix" -}}
{{- if eq .Values.metrics.names "vllm" -}}vllm:{{- else if eq .Values.metrics.names "gemma_serve" -}}gemma_serve:{{- else -}}
{{- fail (printf "metrics.names must be gemma_serve or vllm, got %q" .Values.metrics.names) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding API keys, or "" when auth is off. */}}
{{- define "gemma-serve.apiKeySecretName" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else if .Values.auth.apiKeys -}}
{{- printf "%s-api-keys" (include "gemma-serve.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: preStop + drain + margin, or a given value no smaller. */}}
{{- define "gemma-serve.terminationGracePeriodSeconds" -}}
{{- $needed := add (int .Values.shutdown.preStopSleepSeconds) (int .Values.server.shutdownTimeoutSeconds) -}}
{{- if .Values.shutdown.terminationGracePeriodSeconds -}}
{{- $given := int .Values.shutdown.terminationGracePeriodSeconds -}}
{{- if lt $given $needed -}}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) must be at least shutdown.preStopSleepSeconds + server.shutdownTimeoutSeconds (%d)" $given $needed) -}}
{{- end -}}
{{- $given -}}
{{- else -}}
{{- add $needed (int .Values.shutdown.graceMarginSeconds) -}}
{{- end -}}
{{- end -}}

{{/* Values checks shared by the templates. */}}
{{- define "gemma-serve.validate" -}}
{{- if not (has .Values.server.device (list "cpu" "cuda")) -}}
{{- fail (printf "server.device must be cpu or cuda, got %q" .Values.server.device) -}}
{{- end -}}
{{- if not (has .Values.model.source (list "pvc" "hostPath" "none")) -}}
{{- fail (printf "model.source must be pvc, hostPath or none, got %q" .Values.model.source) -}}
{{- end -}}
{{- if and (eq .Values.model.source "hostPath") (not .Values.model.hostPath) -}}
{{- fail "model.source is hostPath but model.hostPath is empty" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled -}}
{{- fail "enable either autoscaling (HPA on CPU) or keda (ScaledObject), not both: KEDA manages its own HPA" -}}
{{- end -}}
{{- if and (eq .Values.server.device "cuda") (lt (int .Values.gpu.count) 1) -}}
{{- fail "server.device is cuda but gpu.count is 0: request a GPU (see values-gpu.yaml)" -}}
{{- end -}}
{{- end -}}
