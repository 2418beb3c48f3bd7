{{/* The labels of every object, and the pods' selector. */}}
{{- define "jupyterhub-istio-proxy.labels" -}}
app.kubernetes.io/name: {{ .Values.name }}
{{- end }}

{{/*
The chart's mode: `standalone` (the proxy's own Deployment, Service and ServiceAccount) or
`z2jh` (only the Role and a RoleBinding, for Zero to JupyterHub's proxy pod running our image).
*/}}
{{- define "jupyterhub-istio-proxy.mode" -}}
{{- if not (has .Values.mode (list "standalone" "z2jh")) }}
{{- fail (printf "mode must be standalone or z2jh, not %q" (toString .Values.mode)) }}
{{- end }}
{{- .Values.mode }}
{{- end }}

{{/* The ServiceAccount the Role is bound to: ours, or Zero to JupyterHub's proxy pod's. */}}
{{- define "jupyterhub-istio-proxy.serviceAccountName" -}}
{{- if eq (include "jupyterhub-istio-proxy.mode" .) "z2jh" }}
{{- required "z2jh.serviceAccountName is required in mode z2jh" .Values.z2jh.serviceAccountName }}
{{- else }}
{{- .Values.name }}
{{- end }}
{{- end }}
