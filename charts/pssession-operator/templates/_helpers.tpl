{{- define "psso.name" -}}pssession-operator{{- end -}}
{{- define "psso.fullname" -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}-pssession-operator{{- end -}}
{{- define "psso.labels" -}}
app.kubernetes.io/name: {{ include "psso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "psso.selector" -}}
app.kubernetes.io/name: {{ include "psso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
