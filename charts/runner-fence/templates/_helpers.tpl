{{/*
Name of the release's objects. Cluster-scoped objects runner-fence applies itself
derive from it too (0100-<name>, <name>, <name>-backstop), so two releases coexist
as long as their names differ.
*/}}
{{- define "runner-fence.name" -}}
{{- if gt (len .Release.Name) 40 -}}
{{- fail "the release name must be at most 40 characters: cluster-scoped objects are named after it (0100-<release>, <release>-backstop-audit)" -}}
{{- end -}}
{{- .Release.Name -}}
{{- end -}}

{{- define "runner-fence.selectorLabels" -}}
app.kubernetes.io/name: runner-fence
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runner-fence.labels" -}}
{{ include "runner-fence.selectorLabels" . }}
app.kubernetes.io/part-of: runner-fence
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "runner-fence.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The Secret with tls.crt, tls.key and ca.crt the server mounts (not in managed mode). */}}
{{- define "runner-fence.tlsSecret" -}}
{{- if eq .Values.certificates.mode "existingSecret" -}}
{{- required "certificates.existingSecret.name is required with certificates.mode=existingSecret" .Values.certificates.existingSecret.name -}}
{{- else -}}
{{ include "runner-fence.name" . }}-tls
{{- end -}}
{{- end -}}

{{/*
What the policy controller may touch, as RBAC rules (the release's ServiceAccount and
the uninstall hook's): the policies, and the generated objects by name only.
*/}}
{{- define "runner-fence.controllerRules" -}}
{{- $name := include "runner-fence.name" . -}}
- apiGroups: [runner-fence.dev]
  resources: [runnerfencepolicies]
  verbs: [get, list, watch, patch]
- apiGroups: [runner-fence.dev]
  resources: [runnerfencepolicies/status]
  verbs: [update]
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations]
  resourceNames: [0100-{{ $name }}]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingwebhookconfigurations]
  resourceNames: [{{ $name }}]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingadmissionpolicies, validatingadmissionpolicybindings]
  resourceNames: [{{ $name }}-backstop, {{ $name }}-backstop-audit]
  verbs: [get, list, watch, create, patch, update, delete]
{{- end -}}

{{/* The same in the release namespace: the Lease and the managed certificate Secret. */}}
{{- define "runner-fence.namespaceRules" -}}
{{- $name := include "runner-fence.name" . -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{{ $name }}-controller]
  verbs: [get, update, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [{{ $name }}-tls]
  verbs: [get, list, watch, update, delete]
{{- end -}}

{{/*
What the continuous audit reads cluster-wide (as `runner-fence audit`, read-only:
manifests/extras/audit-rbac.yaml) and the PolicyReports it writes: one per pod, in
the pods' namespaces (runner namespaces may be prefixes, so cluster-wide).
*/}}
{{- define "runner-fence.auditRules" -}}
- apiGroups: [""]
  resources: [nodes, pods, serviceaccounts]
  verbs: [get, list]
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations, validatingwebhookconfigurations]
  verbs: [list]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, clusterroles, rolebindings, clusterrolebindings]
  verbs: [list]
{{- if .Values.audit.policyReports }}
- apiGroups: [wgpolicyk8s.io]
  resources: [policyreports]
  verbs: [get, list, create, patch, delete]
{{- end }}
{{- end -}}

{{/* The same in the release namespace: whether the webhook serves (its Service, Deployment, endpoints). */}}
{{- define "runner-fence.auditNamespaceRules" -}}
{{- $name := include "runner-fence.name" . -}}
- apiGroups: [""]
  resources: [services]
  resourceNames: [{{ $name }}]
  verbs: [get]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list]
{{- end -}}
