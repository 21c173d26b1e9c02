{{/*
The name in every object's app.kubernetes.io/name label and in the
selectors: nameOverride, or the chart's name.
*/}}
{{- define "netconf-migrator.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
What every object this chart makes is named after: fullnameOverride, else
nameOverride, else the chart's name. Unlike Helm's scaffold it does not
prefix the release's name: the tool is one per cluster (one webhook for
every NAD, one run at a time), its cluster-scoped objects (the webhook
configuration, ClusterRoles, the admission policy) keep their names
whatever the release is called, and a release renamed in Rancher or Argo
CD must not rename them on upgrade. At most 40 characters, so the longest
name made from it fits every kind's limit (a Service's 63).
*/}}
{{- define "netconf-migrator.fullname" -}}
{{- .Values.fullnameOverride | default (include "netconf-migrator.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "netconf-migrator.labels" -}}
app.kubernetes.io/name: {{ include "netconf-migrator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
The image, behind a private registry when one is set: Rancher's
global.cattle.systemDefaultRegistry (its app installer sets it for every
chart; an air-gapped Harvester points every image at its registry that
way), else global.systemDefaultRegistry (RKE2's spelling, in its own
charts).
*/}}
{{- define "netconf-migrator.image" -}}
{{- $registry := "" -}}
{{- with .Values.global -}}
{{- $registry = .systemDefaultRegistry | default "" -}}
{{- with .cattle -}}{{- $registry = .systemDefaultRegistry | default $registry -}}{{- end -}}
{{- end -}}
{{- $repo := .Values.image.repository -}}
{{- if $registry -}}{{- $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo -}}{{- end -}}
{{- if .Values.image.digest -}}
{{ $repo }}@{{ .Values.image.digest }}
{{- else -}}
{{ $repo }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/*
Pod metadata every workload shares: its own labels, then podLabels and
podAnnotations.
*/}}
{{- define "netconf-migrator.podMetadata" -}}
labels:
  app.kubernetes.io/name: {{ include "netconf-migrator.name" .root }}
  app.kubernetes.io/component: {{ .component }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Where a Pod may run and how its image is pulled: priorityClassName,
nodeSelector, tolerations, imagePullSecrets and affinity (the given
default when the values set none). Pull secrets come from
global.imagePullSecrets (as Rancher's charts take them) and
imagePullSecrets, each a name or {name: ...}, once each.
*/}}
{{- define "netconf-migrator.podPlacement" -}}
{{- with .root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $pull := list }}
{{- range concat (((.root.Values.global | default dict).imagePullSecrets) | default list) (.root.Values.imagePullSecrets | default list) }}
{{- $name := . }}{{ if kindIs "map" . }}{{ $name = .name }}{{ end }}
{{- if not (has (dict "name" $name) $pull) }}{{ $pull = append $pull (dict "name" $name) }}{{ end }}
{{- end }}
{{- with $pull }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.root.Values.affinity | default .affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
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

{{/*
Values reused from a release of 0.2 (helm upgrade --reuse-values) lack the
backups values and name netconf-migrator-system as the backup namespace,
which this version moves away from: stop with what to do, not with a nil
pointer or a silent move back.
*/}}
{{- define "netconf-migrator.checkValues" -}}
{{- if not (hasKey .Values "backups") -}}
{{- fail "these values are a 0.2 release's, reused (helm upgrade --reuse-values): they lack the backups values and keep netconf-migrator-system as the backup namespace, which this version moves away from. Upgrade with --reset-then-reuse-values (Helm 3.14 or later), or give your own values again without --reuse-values" -}}
{{- end -}}
{{- end -}}
