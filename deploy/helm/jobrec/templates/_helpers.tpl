{{- define "jobrec.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The name of one of the release's objects: <fullname>-<suffix>, within `max` characters (63 by default: a DNS
label; 52 for a CronJob, whose Jobs add 11, and for a StatefulSet, whose controller-revision-hash label adds 11).
A name that would be longer keeps the start of the fullname and a hash of all of it, so it is cut the same way on
every render and two long release names still differ. Arguments: root, suffix, max (optional).
*/}}
{{- define "jobrec.resourceName" -}}
{{- $full := include "jobrec.fullname" .root -}}
{{- $max := .max | default 63 | int -}}
{{- $name := printf "%s-%s" $full .suffix -}}
{{- if gt (len $name) $max -}}
{{- $keep := sub $max (add (len .suffix) 7) | int -}}
{{- if lt $keep 1 }}{{ fail (printf "the suffix %q leaves no room for the release's name within %d characters" .suffix $max) }}{{ end -}}
{{- $name = printf "%s-%s-%s" ($full | trunc $keep | trimSuffix "-") (sha256sum $full | trunc 5) .suffix -}}
{{- end -}}
{{- $name -}}
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

{{/*
Environment from the Secret: only the entries this pod uses, and only those whose key is named. Arguments: root,
uses (a list of "kafka", "s3", "apiToken"). S3 credentials only when a storage path is s3a://.
*/}}
{{- define "jobrec.secretEnv" -}}
{{- $s := .root.Values.secrets -}}
{{- $pairs := list -}}
{{- if has "kafka" .uses }}{{ $pairs = concat $pairs (list (list "JOBREC_KAFKA_USERNAME" $s.kafkaUsernameKey) (list "JOBREC_KAFKA_PASSWORD" $s.kafkaPasswordKey)) }}{{ end -}}
{{- if and (has "s3" .uses) (include "jobrec.usesS3" .root) }}{{ $pairs = concat $pairs (list (list "AWS_ACCESS_KEY_ID" $s.s3AccessKeyKey) (list "AWS_SECRET_ACCESS_KEY" $s.s3SecretKeyKey)) }}{{ end -}}
{{- if has "apiToken" .uses }}{{ $pairs = append $pairs (list "JOBREC_API_TOKEN" $s.apiTokenKey) }}{{ end -}}
{{- if $s.existingSecret }}
{{- range $pair := $pairs }}
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

{{/* Whether a component (its values: .Values.ingest, ...) runs its Spark executors on Kubernetes: "true" or "". */}}
{{- define "jobrec.k8sExecutors" -}}
{{- if and .enabled (dig "kubernetesExecutors" "enabled" false .) }}true{{ end -}}
{{- end -}}

{{/* Whether any component is a Spark driver on Kubernetes (then the Role, the pod template and the token exist). */}}
{{- define "jobrec.anyK8sExecutors" -}}
{{- if or (include "jobrec.k8sExecutors" .Values.ingest) (include "jobrec.k8sExecutors" .Values.retrain) }}true{{ end -}}
{{- end -}}

{{- define "jobrec.driverServiceName" -}}
{{- include "jobrec.resourceName" (dict "root" .root "suffix" (printf "%s-driver" .component)) -}}
{{- end -}}

{{/* Whether a path is an object storage URI (s3a://, gs://, abfss://, hdfs://) rather than a local path: "true" or "". */}}
{{- define "jobrec.isURI" -}}
{{- if regexMatch "^(s3a|gs|abfss|hdfs)://" (toString .) }}true{{ end -}}
{{- end -}}

{{/* Whether any storage path is on s3a:// (then the S3 credentials are mounted where storage is used): "true" or "". */}}
{{- define "jobrec.usesS3" -}}
{{- $c := .Values.config -}}
{{- $paths := list (dig "storage" "tables_root" "" $c) (dig "storage" "checkpoints_root" "" $c) (dig "spark" "checkpoint_dir" "" $c) -}}
{{- range $paths }}{{ if hasPrefix "s3a://" (toString .) }}true{{ end }}{{ end -}}
{{- end -}}

{{/* The components whose pods mount the shared data volume: those that read or write the tables. */}}
{{- define "jobrec.usesData" -}}
{{- if and .root.Values.persistence.enabled (has .component (list "ingest" "speed" "retrain" "evaluate" "api")) }}true{{ end -}}
{{- end -}}

{{/* Whether the data volume is ReadWriteOnce, so every pod that mounts it must run on one node: "true" or "". */}}
{{- define "jobrec.colocateData" -}}
{{- if and .Values.persistence.enabled (eq .Values.persistence.accessMode "ReadWriteOnce") }}true{{ end -}}
{{- end -}}

{{/* Whether the ingest has a checkpoints volume of its own: persistence and a local checkpoints_root. */}}
{{- define "jobrec.ingestCheckpointVolume" -}}
{{- if and .Values.persistence.enabled (not (include "jobrec.isURI" .Values.config.storage.checkpoints_root)) }}true{{ end -}}
{{- end -}}

{{/* A pod's labels: the chart's, its component, and the data volume's co-location label. Arguments: root, component. */}}
{{- define "jobrec.podLabels" -}}
{{ include "jobrec.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- if and (include "jobrec.usesData" .) (include "jobrec.colocateData" .root) }}
jobrec/data-volume: {{ include "jobrec.resourceName" (dict "root" .root "suffix" "data") | quote }}
{{- end }}
{{- end -}}

{{- define "jobrec.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/*
The config file of one component: .Values.config, the Secret-backed Kafka credentials as ${VAR} references, the
component's `spark` merged over config.spark, and for a Spark driver on Kubernetes the k8s:// master and every
setting a client-mode driver in a pod needs. Arguments: root, component (ingest, speed, retrain, api or "" for the
shared config.yaml).
*/}}
{{- define "jobrec.componentConfig" -}}
{{- $root := .root -}}
{{- $config := deepCopy $root.Values.config -}}
{{- if $root.Values.secrets.kafkaUsernameKey }}
{{- $_ := set $config "kafka" (merge (default dict $config.kafka) (dict "security" (merge (default dict (default dict $config.kafka).security) (dict "username" "${JOBREC_KAFKA_USERNAME}" "password" "${JOBREC_KAFKA_PASSWORD}")))) }}
{{- end }}
{{- if .component }}
{{- $values := index $root.Values .component -}}
{{- $spark := mergeOverwrite (deepCopy (default dict $config.spark)) (deepCopy (default dict $values.spark)) -}}
{{- if include "jobrec.k8sExecutors" $values }}
{{- $k8s := $root.Values.sparkKubernetes -}}
{{- $exec := $values.kubernetesExecutors -}}
{{- $extra := default dict $spark.extra -}}
{{- $_ := set $spark "master" (printf "k8s://%s" $k8s.apiServer) -}}
{{- $driver := dict
  "spark.submit.deployMode" "client"
  "spark.kubernetes.namespace" $root.Release.Namespace
  "spark.kubernetes.container.image" (include "jobrec.image" $root)
  "spark.kubernetes.container.image.pullPolicy" $root.Values.image.pullPolicy
  "spark.kubernetes.driver.pod.name" "${JOBREC_POD_NAME}"
  "spark.kubernetes.executor.podTemplateFile" "/etc/jobrec/executor-pod-template.yaml"
  "spark.kubernetes.executor.podTemplateContainerName" "spark-executor"
  "spark.kubernetes.authenticate.caCertFile" "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
  "spark.kubernetes.authenticate.oauthTokenFile" "/var/run/secrets/kubernetes.io/serviceaccount/token"
  "spark.driver.host" (printf "%s.%s.svc" (include "jobrec.driverServiceName" (dict "root" $root "component" .component)) $root.Release.Namespace)
  "spark.driver.bindAddress" "0.0.0.0"
  "spark.driver.port" (toString $k8s.driverPort)
  "spark.blockManager.port" (toString $k8s.blockManagerPort)
  "spark.executor.instances" (toString $exec.instances)
  "spark.executor.cores" (toString $exec.cores)
  "spark.executor.memory" $exec.memory
  "spark.executor.memoryOverhead" $exec.memoryOverhead
-}}
{{- with $root.Values.imagePullSecrets }}
{{- $names := list -}}
{{- range . }}{{ $names = append $names .name }}{{ end -}}
{{- $_ := set $driver "spark.kubernetes.container.image.pullSecrets" (join "," $names) -}}
{{- end }}
{{- /* the chart's settings win: a driver in a pod only works with these */ -}}
{{- $_ := set $spark "extra" (mergeOverwrite $extra $driver) -}}
{{- end }}
{{- $_ := set $config "spark" $spark -}}
{{- /* the ingest and the speed layer serve /metrics on the pod's `metrics` port, on every interface */ -}}
{{- $port := get (dict "ingest" "ingest_port" "speed" "speed_port") .component -}}
{{- if $port }}
{{- $metrics := mergeOverwrite (deepCopy (default dict $config.metrics)) (dict "host" "0.0.0.0" $port (include "jobrec.metricsPort" (dict "root" $root "component" .component) | int)) -}}
{{- $_ := set $config "metrics" $metrics -}}
{{- end }}
{{- end }}
{{- toYaml $config -}}
{{- end -}}

{{/* A JVM size (512m, 4g, 1t, 2048k; no unit = MiB, as spark.driver.memory reads it) in MiB. */}}
{{- define "jobrec.jvmMiB" -}}
{{- $s := lower (toString .) | trim -}}
{{- if not (regexMatch "^[0-9]+[kmgt]?b?$" $s) }}
{{- fail (printf "%q is not a JVM memory size such as 512m or 4g" (toString .)) }}
{{- end }}
{{- $n := regexReplaceAll "^([0-9]+).*$" $s "${1}" | float64 -}}
{{- $unit := regexReplaceAll "^[0-9]+([kmgt]?).*$" $s "${1}" -}}
{{- $scale := get (dict "" 1.0 "k" (divf 1.0 1024) "m" 1.0 "g" 1024.0 "t" 1048576.0) $unit -}}
{{- mulf $n $scale -}}
{{- end -}}

{{/* A Kubernetes memory quantity (4Gi, 512Mi, 4G, 1.5Gi, 1000000000) in MiB. */}}
{{- define "jobrec.quantityMiB" -}}
{{- $s := toString . | trim -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$" $s) }}
{{- fail (printf "%q is not a memory quantity such as 512Mi or 4Gi" $s) }}
{{- end }}
{{- $n := regexReplaceAll "^([0-9.]+).*$" $s "${1}" | float64 -}}
{{- $unit := regexReplaceAll "^[0-9.]+(.*)$" $s "${1}" -}}
{{- $mib := 1048576.0 -}}
{{- $scale := get (dict "" (divf 1.0 $mib) "Ki" (divf 1.0 1024) "Mi" 1.0 "Gi" 1024.0 "Ti" 1048576.0 "k" (divf 1000.0 $mib) "M" (divf 1000000.0 $mib) "G" (divf 1000000000.0 $mib) "T" (divf 1000000000000.0 $mib)) $unit -}}
{{- mulf $n $scale -}}
{{- end -}}

{{/*
Refuse a memory limit that cannot hold a process without a JVM (the speed layer): its pythonMemory. Arguments: root,
component.
*/}}
{{- define "jobrec.checkPythonMemory" -}}
{{- $values := index .root.Values .component -}}
{{- $python := include "jobrec.quantityMiB" $values.pythonMemory | float64 -}}
{{- $limitText := dig "resources" "limits" "memory" "" $values -}}
{{- if not $limitText }}
{{- fail (printf "%s.resources.limits.memory is not set: the process needs at least %s (%s.pythonMemory)" .component $values.pythonMemory .component) }}
{{- end }}
{{- if lt (include "jobrec.quantityMiB" $limitText | float64) $python }}
{{- fail (printf "%s.resources.limits.memory %s cannot hold the process: Python %s (%s.pythonMemory; it starts no JVM); raise the limit" .component $limitText $values.pythonMemory .component) }}
{{- end }}
{{- end -}}

{{/*
Refuse a memory limit that cannot hold the process: the driver heap (the component's spark.driver_memory, else
config.spark.driver_memory, else jobrec's default 4g), the JVM's overhead beside its heap (max(384Mi, 10% of the
heap), as Spark sizes spark.driver.memoryOverhead) and the Python process (pythonMemory). Arguments: root, component.
*/}}
{{- define "jobrec.checkMemory" -}}
{{- $values := index .root.Values .component -}}
{{- $heapText := coalesce (dig "spark" "driver_memory" "" $values) (dig "spark" "driver_memory" "" .root.Values.config) "4g" -}}
{{- $heap := include "jobrec.jvmMiB" $heapText | float64 -}}
{{- $overhead := maxf 384.0 (mulf $heap 0.1) -}}
{{- $python := include "jobrec.quantityMiB" $values.pythonMemory | float64 -}}
{{- $limitText := dig "resources" "limits" "memory" "" $values -}}
{{- if not $limitText }}
{{- fail (printf "%s.resources.limits.memory is not set: the process needs at least %.0fMi" .component (addf $heap $overhead $python)) }}
{{- end }}
{{- $limit := include "jobrec.quantityMiB" $limitText | float64 -}}
{{- $need := addf $heap $overhead $python -}}
{{- if lt $limit $need }}
{{- fail (printf "%s.resources.limits.memory %s (%.0fMi) cannot hold the process: driver heap %s (spark.driver_memory) + JVM overhead %.0fMi (max(384Mi, 10%% of the heap)) + Python %s (%s.pythonMemory) = %.0fMi; raise the limit or lower the heap" .component $limitText $limit $heapText $overhead $values.pythonMemory .component $need) }}
{{- end }}
{{- end -}}

{{/*
The pod parts every jobrec process shares: config, data, writable scratch, security, and with a ReadWriteOnce data
volume the affinity that keeps every pod mounting it on one node. Arguments: root, component.
*/}}
{{- define "jobrec.podCommon" -}}
{{- $root := .root -}}
{{- $values := index $root.Values .component -}}
{{- $driver := include "jobrec.k8sExecutors" $values -}}
{{- include "jobrec.checkTmp" (dict "what" .component "sizeLimit" $values.tmpSizeLimit "limit" (dig "resources" "limits" "ephemeral-storage" "" $values)) }}
serviceAccountName: {{ include "jobrec.serviceAccountName" $root }}
# only a Spark driver that starts executor pods talks to the Kubernetes API
automountServiceAccountToken: {{ $driver | eq "true" }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and (include "jobrec.usesData" .) (include "jobrec.colocateData" $root) }}
# the data volume is ReadWriteOnce: it attaches to one node, so every pod that mounts it runs there (the first
# one scheduled, matching its own term, chooses the node)
affinity:
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            app.kubernetes.io/instance: {{ $root.Release.Name }}
            jobrec/data-volume: {{ include "jobrec.resourceName" (dict "root" $root "suffix" "data") | quote }}
{{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "jobrec.resourceName" (dict "root" $root "suffix" "config") }}
  # the root filesystem is read-only: Spark's scratch space and Python's temp files go here
  - name: tmp
    emptyDir:
      sizeLimit: {{ $values.tmpSizeLimit }}
  {{- if include "jobrec.usesData" . }}
  - name: data
    persistentVolumeClaim:
      claimName: {{ include "jobrec.resourceName" (dict "root" $root "suffix" "data") }}
  {{- end }}
{{- end -}}

{{/* Arguments: root, component. */}}
{{- define "jobrec.volumeMounts" -}}
- name: config
  mountPath: /etc/jobrec
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if include "jobrec.usesData" . }}
- name: data
  mountPath: /data
  {{- if eq .component "api" }}
  # the API reads the serving model and the catalog (similar jobs, anonymous lists) and writes nothing
  readOnly: true
  {{- end }}
{{- end }}
{{- if and (eq .component "ingest") (include "jobrec.ingestCheckpointVolume" .root) }}
# the ingest's own ReadWriteOncePod claim (volumeClaimTemplates), over the data volume if it is beneath /data
- name: checkpoints
  mountPath: {{ .root.Values.config.storage.checkpoints_root }}
{{- end }}
{{- end -}}

{{/* Refuse a /tmp sizeLimit above the ephemeral-storage limit. Arguments: what, sizeLimit, limit. */}}
{{- define "jobrec.checkTmp" -}}
{{- if not .limit }}
{{- fail (printf "%s: resources.limits.ephemeral-storage is not set (the /tmp emptyDir holds up to %s)" .what .sizeLimit) }}
{{- end }}
{{- if gt (include "jobrec.quantityMiB" .sizeLimit | float64) (include "jobrec.quantityMiB" .limit | float64) }}
{{- fail (printf "%s: tmpSizeLimit %s is above its ephemeral-storage limit %s: the pod would be evicted before /tmp is full" .what .sizeLimit .limit) }}
{{- end }}
{{- end -}}

{{/* What a client-mode Spark driver in a pod adds to its container: its pod name, and the ports executors reach. */}}
{{- define "jobrec.driverEnv" -}}
{{- if include "jobrec.k8sExecutors" (index .root.Values .component) }}
# spark.kubernetes.driver.pod.name: executors are owned by this pod and deleted with it
- name: JOBREC_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- end -}}

{{/* The port of a component's own /metrics endpoint (ingest, speed), "" for the others. Arguments: root, component. */}}
{{- define "jobrec.metricsPort" -}}
{{- $port := get (dict "ingest" .root.Values.metrics.ingestPort "speed" .root.Values.metrics.speedPort) .component -}}
{{- if $port }}{{ $port | int }}{{ end -}}
{{- end -}}

{{/* A container's ports: its /metrics endpoint (ingest, speed) and, for a Spark driver on Kubernetes, the ports
executors reach. Arguments: root, component. */}}
{{- define "jobrec.containerPorts" -}}
{{- $metrics := include "jobrec.metricsPort" . -}}
{{- $driver := include "jobrec.k8sExecutors" (index .root.Values .component) -}}
{{- if or $metrics $driver }}
ports:
  {{- if $metrics }}
  - name: metrics
    containerPort: {{ $metrics }}
  {{- end }}
  {{- if $driver }}
  {{- $k8s := .root.Values.sparkKubernetes }}
  {{- if and $metrics (has ($metrics | int) (list ($k8s.driverPort | int) ($k8s.blockManagerPort | int))) }}
  {{- fail (printf "metrics port %s of %s is also sparkKubernetes' driverPort or blockManagerPort" $metrics .component) }}
  {{- end }}
  - name: spark-driver
    containerPort: {{ $k8s.driverPort }}
  - name: spark-blockmgr
    containerPort: {{ $k8s.blockManagerPort }}
  {{- end }}
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

{{/*
The executor pod template of a Spark driver on Kubernetes (spark.kubernetes.executor.podTemplateFile): Spark fills
in the image, command, CPU and memory and its own scratch volumes; the template brings what the chart's other pods
have (non-root, read-only root filesystem with /tmp writable and bounded, no capabilities, RuntimeDefault seccomp:
accepted under Pod Security "restricted"), ephemeral storage, the pull secrets, the S3 credentials (the only
Secret entries an executor uses: Kafka options reach it inside the query plan) and the data volume.
*/}}
{{- define "jobrec.executorPodTemplate" -}}
{{- $e := .Values.sparkExecutors -}}
{{- include "jobrec.checkTmp" (dict "what" "sparkExecutors" "sizeLimit" $e.tmpSizeLimit "limit" $e.ephemeralStorage.limit) -}}
apiVersion: v1
kind: Pod
metadata:
  labels:
    {{- include "jobrec.labels" . | nindent 4 }}
    app.kubernetes.io/component: spark-executor
spec:
  serviceAccountName: {{ include "jobrec.serviceAccountName" . }}
  # an executor never talks to the Kubernetes API
  automountServiceAccountToken: false
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: spark-executor
      image: {{ include "jobrec.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- with include "jobrec.secretEnv" (dict "root" . "uses" (list "s3")) }}
      env:
        {{- trim . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml .Values.containerSecurityContext | nindent 8 }}
      # Spark adds CPU and memory to these
      resources:
        requests:
          ephemeral-storage: {{ $e.ephemeralStorage.request }}
        limits:
          ephemeral-storage: {{ $e.ephemeralStorage.limit }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if .Values.persistence.enabled }}
        - name: data
          mountPath: /data
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $e.tmpSizeLimit }}
    {{- if .Values.persistence.enabled }}
    - name: data
      persistentVolumeClaim:
        claimName: {{ include "jobrec.resourceName" (dict "root" . "suffix" "data") }}
    {{- end }}
{{- end -}}


{{/* NetworkPolicy peers: the pods of the components that are Spark drivers on Kubernetes. */}}
{{- define "jobrec.driverPeers" -}}
{{- range $c := list "ingest" "retrain" }}
{{- if include "jobrec.k8sExecutors" (index $.Values $c) }}
- podSelector:
    matchLabels:
      app.kubernetes.io/instance: {{ $.Release.Name }}
      app.kubernetes.io/component: {{ $c }}
{{- end }}
{{- end }}
{{- end -}}
