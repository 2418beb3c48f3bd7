{{/* The labels of every object, and the pods' selector. */}}
{{- define "jupyterhub-istio-proxy.labels" -}}
app.kubernetes.io/name: {{ .Values.name }}
{{- end }}
