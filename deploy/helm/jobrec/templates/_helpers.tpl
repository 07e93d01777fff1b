{{- define "jobrec.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "jobrec.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "jobrec.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "jobrec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "jobrec.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Environment from the Secret: only keys that are named. */}}
{{- define "jobrec.secretEnv" -}}
{{- $s := .Values.secrets -}}
{{- if $s.existingSecret }}
{{- range $pair := list (list "JOBREC_KAFKA_USERNAME" $s.kafkaUsernameKey) (list "JOBREC_KAFKA_PASSWORD" $s.kafkaPasswordKey) (list "AWS_ACCESS_KEY_ID" $s.s3AccessKeyKey) (list "AWS_SECRET_ACCESS_KEY" $s.s3SecretKeyKey) (list "JOBREC_API_TOKEN" $s.apiTokenKey) }}
{{- if index $pair 1 }}
- name: {{ index $pair 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.existingSecret }}
      key: {{ index $pair 1 }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The pod parts every jobrec process shares: config, data, writable scratch, security. */}}
{{- define "jobrec.podCommon" -}}
serviceAccountName: {{ include "jobrec.serviceAccountName" . }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "jobrec.fullname" . }}-config
  # the root filesystem is read-only: Spark's scratch space and Python's temp files go here
  - name: tmp
    emptyDir: {}
  {{- if .Values.persistence.enabled }}
  - name: data
    persistentVolumeClaim:
      claimName: {{ include "jobrec.fullname" . }}-data
  {{- end }}
{{- end -}}

{{- define "jobrec.volumeMounts" -}}
- name: config
  mountPath: /etc/jobrec
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.persistence.enabled }}
- name: data
  mountPath: /data
{{- end }}
{{- end -}}

{{/* Liveness of a long-running process: its loop touches a heartbeat file; a stale file means it is stuck. */}}
{{- define "jobrec.heartbeatProbe" -}}
exec:
  command: ["sh", "-c", "test $(( $(date +%s) - $(stat -c %Y /tmp/heartbeat) )) -lt 300"]
initialDelaySeconds: 120
periodSeconds: 30
failureThreshold: 3
{{- end -}}
