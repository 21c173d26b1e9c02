{{- define "netconf-migrator.labels" -}}
app.kubernetes.io/name: netconf-migrator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "netconf-migrator.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "netconf-migrator.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "netconf-migrator.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop:
    - ALL
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/*
The backup namespaces this release's runs use, each once, as a JSON list.
*/}}
{{- define "netconf-migrator.backupNamespaces" -}}
{{- $ns := list -}}
{{- if .Values.operator.enabled -}}{{- $ns = append $ns .Values.operator.backupNamespace -}}{{- end -}}
{{- if .Values.migrationJob.enabled -}}{{- $ns = append $ns .Values.migrationJob.backupNamespace -}}{{- end -}}
{{- $ns | uniq | toJson -}}
{{- end -}}

{{/*
True when the namespace an earlier version kept its backups in is this
release's (it exists, and the release's webhook lives there).
*/}}
{{- define "netconf-migrator.earlierHere" -}}
{{- if and .Values.backups.earlierNamespace (eq .Values.backups.earlierNamespace .Release.Namespace) -}}true{{- end -}}
{{- end -}}
