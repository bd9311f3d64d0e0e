{{/* Names, labels and images. */}}

{{- define "vm-dhcp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The controller's name: its Deployment, ClusterRole, metrics Service and --name. */}}
{{- define "vm-dhcp.fullname" -}}
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

{{/* The webhook's --name: its Service, Secrets <name>-ca/<name>-tls and configurations. */}}
{{- define "vm-dhcp.webhookName" -}}
{{- printf "%s-webhook" (include "vm-dhcp.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{- define "vm-dhcp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vm-dhcp.labels" -}}
helm.sh/chart: {{ include "vm-dhcp.chart" . }}
{{ include "vm-dhcp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
{{- end }}

{{- define "vm-dhcp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vm-dhcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Service accounts: <sa>, <sa>-agent, <sa>-webhook (upstream's). */}}
{{- define "vm-dhcp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vm-dhcp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vm-dhcp.agentServiceAccountName" -}}
{{- printf "%s-agent" (include "vm-dhcp.serviceAccountName" .) }}
{{- end }}

{{- define "vm-dhcp.webhookServiceAccountName" -}}
{{- printf "%s-webhook" (include "vm-dhcp.serviceAccountName" .) }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. Argument: an image dict
and the root context, as (list $image $). */}}
{{- define "vm-dhcp.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* "true" when a ServiceMonitor/PodMonitor switch (true, false or "auto") is on here.
Argument: (list $switch $root "monitoring.coreos.com/v1/Kind"). */}}
{{- define "vm-dhcp.monitorEnabled" -}}
{{- $switch := toString (index . 0) }}
{{- $root := index . 1 }}
{{- $api := index . 2 }}
{{- if eq $switch "true" }}true
{{- else if and (eq $switch "auto") ($root.Capabilities.APIVersions.Has $api) }}true
{{- else if not (has $switch (list "true" "false" "auto")) }}
{{- fail (printf "monitor switches take true, false or \"auto\", not %q" $switch) }}
{{- end }}
{{- end }}
