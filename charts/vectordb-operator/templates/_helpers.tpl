{{/* Name of the chart, overridable. */}}
{{- define "vectordb-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name of the release's objects. */}}
{{- define "vectordb-operator.fullname" -}}
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

{{- define "vectordb-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "vectordb-operator.labels" -}}
helm.sh/chart: {{ include "vectordb-operator.chart" . }}
{{ include "vectordb-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vectordb-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the manager's pods. */}}
{{- define "vectordb-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vectordb-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vectordb-operator.managerSelectorLabels" -}}
{{ include "vectordb-operator.selectorLabels" . }}
app.kubernetes.io/component: manager
{{- end }}

{{/* The manager's service account. */}}
{{- define "vectordb-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vectordb-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image renders repository:tag or repository@digest; tag defaults to the chart's appVersion. */}}
{{- define "vectordb-operator.image" -}}
{{- $img := index . 0 }}{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* The namespace where the legacy API creates CsvIngestions. */}}
{{- define "vectordb-operator.apiNamespace" -}}
{{- default .Release.Namespace .Values.api.namespace }}
{{- end }}

{{/*
Namespaces where ingestions run and so where the worker service account and its Role must exist:
workers.namespaces, else watchNamespaces, else the release namespace; plus the API's namespace when
the API is on. Rendered as a JSON list; use with fromJsonArray.
*/}}
{{- define "vectordb-operator.workerNamespaces" -}}
{{- $ns := list }}
{{- if .Values.workers.namespaces }}
{{- $ns = .Values.workers.namespaces }}
{{- else if .Values.watchNamespaces }}
{{- $ns = .Values.watchNamespaces }}
{{- else }}
{{- $ns = list .Release.Namespace }}
{{- end }}
{{- if .Values.api.enabled }}
{{- $ns = append $ns (include "vectordb-operator.apiNamespace" .) }}
{{- end }}
{{- $ns | uniq | toJson }}
{{- end }}

{{/* Fails the render on combinations the schema cannot express. */}}
{{- define "vectordb-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount %d needs leaderElection.enabled: without it every replica reconciles and creates each chunk Job again; set replicaCount=1 or leaderElection.enabled=true" (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.api.enabled .Values.watchNamespaces }}
{{- if not (has (include "vectordb-operator.apiNamespace" .) .Values.watchNamespaces) }}
{{- fail (printf "api.namespace %q must be one of watchNamespaces %v: the operator only sees ingestions there" (include "vectordb-operator.apiNamespace" .) .Values.watchNamespaces) }}
{{- end }}
{{- end }}
{{- if and .Values.watchNamespaces .Values.workers.namespaces }}
{{- range .Values.workers.namespaces }}
{{- if not (has . $.Values.watchNamespaces) }}
{{- fail (printf "workers.namespaces entry %q is not in watchNamespaces %v" . $.Values.watchNamespaces) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.api.defaults.metabase.url (not .Values.api.defaults.metabase.secret.name) }}
{{- fail "api.defaults.metabase.secret.name is required with api.defaults.metabase.url" }}
{{- end }}
{{- end }}

{{/* PromQL label matchers selecting the manager's metrics (the ServiceMonitor's job label). */}}
{{- define "vectordb-operator.metricsSelector" -}}
{{- default (printf "job=%q" (printf "%s-metrics" (include "vectordb-operator.fullname" .))) .Values.prometheusRule.selector }}
{{- end }}

{{/*
The manager's rules: the same as config/rbac/role.yaml (generated from the controller's
+kubebuilder:rbac markers) less the Leases, which only the leader-election Role grants, in one
namespace. No Secrets: API keys come from a mounted volume, and the workers read their own keys.
*/}}
{{- /* The controller's rules: the +kubebuilder:rbac markers without a namespace (test/chart checks
they match). */}}
{{- define "vectordb-operator.managerRules" -}}
- apiGroups: ["ingestion.vectordb.io"]
  resources: ["csvingestions"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["ingestion.vectordb.io"]
  resources: ["csvingestions/status"]
  verbs: ["update"]
- apiGroups: ["ingestion.vectordb.io"]
  resources: ["csvingestions/finalizers"]
  verbs: ["update"]
- apiGroups: ["ingestion.vectordb.io"]
  resources: ["csvingestionschedules"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ingestion.vectordb.io"]
  resources: ["csvingestionschedules/status"]
  verbs: ["update"]
- apiGroups: ["ingestion.vectordb.io"]
  resources: ["csvingestionschedules/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
# patch: the outcome finalizer on worker pods is removed once their outcome is recorded.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rateLeases.enabled }}
# create, patch (never get, list or watch): each ingestion's rate lease Secret, which holds its
# lease credential (docs/security.md).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "patch"]
{{- end }}
{{- if .Values.ui.enabled }}
# list, watch: the web UI's cache of events about CsvIngestions (its detail page).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}

{{/* The Secret holding the rate lease credential key. */}}
{{- define "vectordb-operator.rateLeaseKeySecret" -}}
{{- default (printf "%s-rate-lease-key" (include "vectordb-operator.fullname" .)) .Values.rateLeases.keySecret }}
{{- end }}
