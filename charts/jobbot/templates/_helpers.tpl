{{/* The chart's name, cut to a DNS label. */}}
{{- define "jobbot.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of jobbot's objects: the release name, prefixed with the chart's unless it holds it. */}}
{{- define "jobbot.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "jobbot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "jobbot.labels" -}}
helm.sh/chart: {{ include "jobbot.chart" . }}
{{ include "jobbot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jobbot
{{- end }}

{{/* Labels that select jobbot's pods. */}}
{{- define "jobbot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jobbot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The app.yaml text: appConfig as given (`--set-file`) or rendered from a map. */}}
{{- define "jobbot.appConfig" -}}
{{- if kindIs "string" .Values.appConfig }}
{{- .Values.appConfig | trimAll "\n" }}
{{- else }}
{{- toYaml .Values.appConfig }}
{{- end }}
{{- end }}

{{/*
The jobs' namespace, checked against appConfig: the executor's Role is there only, so an app
whose jobs go elsewhere (its `kubernetes.namespace`, by default its name) could not run them.
*/}}
{{- define "jobbot.jobsNamespace" -}}
{{- $app := include "jobbot.appConfig" . | fromYaml }}
{{- if hasKey $app "Error" }}
{{- fail (printf "appConfig is not YAML: %s" $app.Error) }}
{{- end }}
{{- $k8s := $app.kubernetes | default dict }}
{{- $ns := $k8s.namespace | default $app.app }}
{{- if ne $ns .Values.jobs.namespace }}
{{- fail (printf "appConfig's app %v runs its jobs in namespace %v, but jobs.namespace is %v: set kubernetes: {namespace: %v} in appConfig, or jobs.namespace: %v" $app.app $ns .Values.jobs.namespace .Values.jobs.namespace $ns) }}
{{- end }}
{{- .Values.jobs.namespace }}
{{- end }}

{{/* JOBBOT_PUBLIC_URL: publicUrl, else the ingress host, else none (the Secret may set it). */}}
{{- define "jobbot.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if .Values.ingress.enabled }}
{{- printf "https://%s" .Values.ingress.host }}
{{- end }}
{{- end }}
