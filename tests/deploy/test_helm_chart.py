"""The Helm chart: lint, render with the default and a production-like values file, validate every rendered
manifest against the Kubernetes schemas offline (unknown fields rejected), and check what matters: per-process
Spark settings, client-mode drivers on Kubernetes (RBAC, headless Service, pod name, executor pod template under
Pod Security "restricted"), and memory limits that hold the JVM and Python."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "jobrec"
HELM = REPO / ".cache" / "bin" / "helm"
PRODUCTION = REPO / "deploy" / "helm" / "values-production.yaml"
K8S_VERSION = "1.33.0"
JVM_COMPONENTS = ("ingest", "retrain")  # the speed layer and the API start no JVM
# one speed instance's peak resident memory at 10M interactions (`jobrec bench speed-start --interactions
# 1e6,10e6`, 2026-11-28: 1,104 MB before a model, 1,120 MB with one)
SPEED_10M_PEAK_MB = 1120


def helm(*args: str) -> str:
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def render(*values: str, sets: tuple[str, ...] = ()) -> list[dict]:
    args = ["template", "rel", str(CHART), "--namespace", "jobrec"]
    for v in values:
        args += ["-f", v]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


WORKLOADS = ("Deployment", "StatefulSet")


def pod_specs(docs: list[dict]) -> list[dict]:
    specs = [d["spec"]["template"]["spec"] for kind in WORKLOADS for d in by_kind(docs, kind)]
    specs += [d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in by_kind(docs, "CronJob")]
    return specs


def pods_by_component(docs: list[dict]) -> dict[str, dict]:
    """component -> its pod template (Deployments, the ingest's StatefulSet and the CronJob's Job)."""
    out = {}
    for d in [d for kind in WORKLOADS for d in by_kind(docs, kind)]:
        out[d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]] = d["spec"]["template"]
    for d in by_kind(docs, "CronJob"):
        template = d["spec"]["jobTemplate"]["spec"]["template"]
        out[template["metadata"]["labels"]["app.kubernetes.io/component"]] = template
    return out


def container_args(docs: list[dict]) -> dict[str, list[str]]:
    return {name: pod["spec"]["containers"][0]["args"] for name, pod in pods_by_component(docs).items()}


def configs(docs: list[dict]) -> dict[str, dict]:
    """File name in the ConfigMap (without .yaml for a process's config) -> its parsed content."""
    [cm] = by_kind(docs, "ConfigMap")
    return {
        name.removesuffix(".yaml") if name != "executor-pod-template.yaml" else name: yaml.safe_load(text)
        for name, text in cm["data"].items()
    }


def executor_templates(docs: list[dict]) -> list[dict]:
    return [c["executor-pod-template.yaml"] for c in [configs(docs)] if "executor-pod-template.yaml" in c]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def mib(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB (only the forms this chart's values use)."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for unit, scale in units.items():
        if quantity.endswith(unit):
            return float(quantity.removesuffix(unit)) * scale
    return float(quantity) / 2**20


def jvm_mib(size: str) -> float:
    """A JVM size (512m, 4g) in MiB."""
    scale = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024**2}
    size = size.lower()
    return float(size[:-1]) * scale[size[-1]] if size[-1] in scale else float(size)


# Pod Security Standards, "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards), as the
# admission controller checks a pod spec
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(spec: dict) -> list[str]:
    """What keeps a pod spec out of the "restricted" Pod Security level (empty: admitted)."""
    bad = []
    pod_sc = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            bad.append(flag)
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            bad.append(f"volume {v['name']}: {kinds}")
    if pod_sc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation not false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            bad.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities not dropped")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: capabilities added")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            bad.append(f"{name}: hostPort")
    return bad


def test_lint_strict() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "-f", str(PRODUCTION))


@pytest.mark.parametrize(
    "values,sets",
    [((), ()), ((str(PRODUCTION),), ()), ((str(PRODUCTION),), ("api.enabled=true",))],
    ids=["default", "production", "production-with-api"],
)
def test_every_manifest_is_valid_kubernetes(values: tuple[str, ...], sets: tuple[str, ...]) -> None:
    docs = render(*values, sets=sets)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # the executor pod template is a Pod manifest too, read by the drivers
    for template in executor_templates(docs):
        kubernetes_validate.validate(template, K8S_VERSION, strict=True)


def test_validation_would_catch_an_unknown_field() -> None:
    # the check above can fail: a misspelt field is rejected
    doc = render()[0]
    doc["metadata"]["lables"] = {"a": "b"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("values", [(), (str(PRODUCTION),)], ids=["default", "production"])
def test_what_matters(values: tuple[str, ...]) -> None:
    docs = render(*values)
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    # one ingest writer per checkpoint, never two pods at once (a StatefulSet of one; see test_chart_operations);
    # speed replicas share partitions in a group
    [statefulset] = by_kind(docs, "StatefulSet")
    ingest = statefulset["spec"]
    assert statefulset["metadata"]["name"] == "rel-jobrec-ingest" and ingest["replicas"] == 1
    speed = deployments["rel-jobrec-speed"]["spec"]
    assert speed["replicas"] >= 1 and speed["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    crons = {c["metadata"]["labels"]["app.kubernetes.io/component"]: c for c in by_kind(docs, "CronJob")}
    assert set(crons) <= {"retrain", "evaluate"} and "retrain" in crons
    for cron in crons.values():
        # each is its table's one writer: never two runs at once
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        assert cron["spec"]["startingDeadlineSeconds"] > 0
        job = cron["spec"]["jobTemplate"]["spec"]
        assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] >= 0
    if "evaluate" in crons:
        [evaluate] = crons["evaluate"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert evaluate["args"][:4] == ["--config", "/etc/jobrec/evaluate.yaml", "evaluate", "--online"]
    for spec in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    for d in [d for kind in WORKLOADS for d in by_kind(docs, kind)]:
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in c, d["metadata"]["name"]  # the retrain Job has its deadline instead
    # every process reads its own file of the ConfigMap, and each file is valid for jobrec itself
    from jobrec.schemas.config import DEFAULT_CONFIG_PATH, expand_env, merge, parse_config, read_yaml

    files = configs(docs)
    for name, args in container_args(docs).items():
        assert args[:2] == ["--config", f"/etc/jobrec/{name}.yaml"], name
        assert name in files
    env = {"JOBREC_KAFKA_USERNAME": "u", "JOBREC_KAFKA_PASSWORD": "p", "JOBREC_POD_NAME": "rel-jobrec-ingest-0"}
    for name, override in files.items():
        if name != "executor-pod-template.yaml":
            parse_config(expand_env(merge(read_yaml(DEFAULT_CONFIG_PATH), override), env))


def test_production_values_use_secrets_and_no_secret_lands_in_a_configmap() -> None:
    docs = render(str(PRODUCTION))
    secret_values = ["kafka-password", "s3-secret-key", "api-token"]
    files = configs(docs)
    # the executor pod template names the Secret's keys only in secretKeyRefs, which the kubelet resolves
    [executor] = files.pop("executor-pod-template.yaml")["spec"]["containers"]
    assert all(set(e) == {"name", "valueFrom"} for e in executor["env"])
    for name, content in files.items():
        text = yaml.safe_dump(content)
        assert "${JOBREC_KAFKA_PASSWORD}" in text, name  # a reference, filled from the environment
        for v in secret_values:
            assert v not in text, name
    env = {e["name"]: e for spec in pod_specs(docs) for c in spec["containers"] for e in c.get("env", [])}
    for name in ("JOBREC_KAFKA_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "jobrec-credentials"
        assert "value" not in env[name]
    assert not by_kind(docs, "PersistentVolumeClaim")  # object storage instead
    with_api = render(str(PRODUCTION), sets=("api.enabled=true",))
    [service] = [s for s in by_kind(with_api, "Service") if s["metadata"]["name"] == "rel-jobrec-api"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_a_literal_password_in_values_is_refused() -> None:
    done = subprocess.run(
        [str(HELM), "template", "rel", str(CHART), "--set", "config.kafka.security.password=hunter2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "/config/kafka/security/password" in done.stderr


def test_speed_replicas_come_from_values_and_a_bad_count_is_refused() -> None:
    [speed] = [
        d
        for d in by_kind(render(sets=("speed.replicas=3",)), "Deployment")
        if d["metadata"]["name"] == "rel-jobrec-speed"
    ]
    assert speed["spec"]["replicas"] == 3
    with pytest.raises(AssertionError, match="replicas"):
        render(sets=("speed.replicas=0",))


def allows(rules: list[dict], verb: str, resource: str) -> bool:
    """Whether a Role's rules grant `verb` on core-group `resource` (RBAC's union of rules)."""
    return any(
        "" in r.get("apiGroups", [])
        and (resource in r.get("resources", []) or "*" in r.get("resources", []))
        and (verb in r.get("verbs", []) or "*" in r.get("verbs", []))
        for r in rules
    )


def test_production_drivers_may_start_and_delete_their_executors_in_the_release_namespace_only() -> None:
    docs = render(str(PRODUCTION))
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    [role] = by_kind(docs, "Role")
    [binding] = by_kind(docs, "RoleBinding")
    for verb in ("create", "get", "list", "watch", "delete"):
        for resource in ("pods", "services", "configmaps"):
            assert allows(role["rules"], verb, resource), (verb, resource)
    assert not allows(role["rules"], "get", "secrets")  # a driver reads no Secret through the API
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    [account] = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "jobrec"}
    ]
    pods = pods_by_component(docs)
    for name in ("ingest", "retrain"):
        spec = pods[name]["spec"]
        # the driver runs as the bound account and has its token to call the API with
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is True, name
    # processes that start no executors get no token, nor does the account by default
    assert pods["speed"]["spec"]["automountServiceAccountToken"] is False
    assert account["automountServiceAccountToken"] is False


def test_ingest_and_retrain_are_client_mode_drivers_on_kubernetes_and_speed_and_api_run_locally() -> None:
    docs = render(str(PRODUCTION), sets=("api.enabled=true",))
    files = configs(docs)
    image = "registry.example.com/data/jobrec:0.1.0"
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    pods = pods_by_component(docs)
    for name in ("speed", "api"):
        assert files[name]["spark"]["master"].startswith("local"), name
        assert not any(k.startswith("spark.kubernetes.") for k in files[name]["spark"].get("extra", {}))
    assert files["config"]["spark"]["master"].startswith("local")  # the file for kubectl exec one-offs
    for name in ("ingest", "retrain"):
        spark = files[name]["spark"]
        extra = spark["extra"]
        assert spark["master"] == "k8s://https://kubernetes.default.svc"
        assert extra["spark.kubernetes.namespace"] == "jobrec"
        assert extra["spark.kubernetes.container.image"] == image
        assert extra["spark.kubernetes.container.image.pullSecrets"] == "registry-example-com"
        assert extra["spark.kubernetes.executor.podTemplateFile"] == "/etc/jobrec/executor-pod-template.yaml"
        assert int(extra["spark.executor.instances"]) >= 1 and extra["spark.executor.memoryOverhead"]
        # executors are owned by the driver's pod (garbage-collected with it): its name from the downward API
        assert extra["spark.kubernetes.driver.pod.name"] == "${JOBREC_POD_NAME}"
        [container] = pods[name]["spec"]["containers"]
        assert container["image"] == image
        assert env_of(container)["JOBREC_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        # executors connect back to the driver at a headless Service that selects this pod, on fixed ports
        host = extra["spark.driver.host"]
        service_name, namespace, suffix = host.split(".")
        assert (namespace, suffix) == ("jobrec", "svc")
        service = services[service_name]["spec"]
        assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
        labels = pods[name]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in service["selector"].items())
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for key in ("spark.driver.port", "spark.blockManager.port"):
            port = int(extra[key])
            [entry] = [p for p in service["ports"] if p["port"] == port]
            assert container_ports[entry["targetPort"]] == port, key
        # the template file is where the config says
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pods[name]["spec"]["volumes"]}
        assert volumes[mounts["/etc/jobrec"]]["configMap"]["name"] == "rel-jobrec-config"
    # the image's jars as local:// URIs: nothing served by the driver
    for name, content in files.items():
        if name != "executor-pod-template.yaml":
            assert content["spark"]["jars_dir"].startswith("local:///"), name


def test_the_default_chart_starts_no_executors_and_grants_nothing() -> None:
    docs = render()
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding") and not by_kind(docs, "Service")
    assert not executor_templates(docs)
    for name, content in configs(docs).items():
        assert content["spark"]["master"].startswith("local"), name
    for pod in pods_by_component(docs).values():
        assert pod["spec"]["automountServiceAccountToken"] is False


def test_executor_pods_are_admitted_under_pod_security_restricted_with_secrets_and_pull_secrets() -> None:
    docs = render(str(PRODUCTION), sets=("api.enabled=true",))
    [template] = executor_templates(docs)
    spec = template["spec"]
    assert restricted_violations(spec) == []
    [container] = spec["containers"]
    assert (
        container["name"]
        == configs(docs)["ingest"]["spark"]["extra"]["spark.kubernetes.executor.podTemplateContainerName"]
    )
    sc, pod_sc = container["securityContext"], spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    # /tmp is an emptyDir, bounded (see test_chart_operations)
    assert set([v for v in spec["volumes"] if v["name"] == tmp[0]["name"]][0]["emptyDir"]) == {"sizeLimit"}
    assert spec["imagePullSecrets"] == [{"name": "registry-example-com"}]
    assert spec["automountServiceAccountToken"] is False
    env = env_of(container)
    for name, key in (("AWS_ACCESS_KEY_ID", "s3-access-key"), ("AWS_SECRET_ACCESS_KEY", "s3-secret-key")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "jobrec-credentials", "key": key}
    assert "JOBREC_KAFKA_PASSWORD" not in env  # executors get what they use, no more
    # every other pod of the chart is admitted too
    for name, pod in pods_by_component(docs).items():
        assert restricted_violations(pod["spec"]) == [], name


def test_the_restricted_check_can_fail() -> None:
    [template] = executor_templates(render(str(PRODUCTION)))
    spec = template["spec"]
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    spec["securityContext"].pop("seccompProfile")
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert len(restricted_violations(spec)) == 3


@pytest.mark.parametrize("values", [(), (str(PRODUCTION),)], ids=["default", "production"])
def test_memory_limits_hold_the_driver_heap_its_overhead_and_python(values: tuple[str, ...]) -> None:
    docs = render(*values)
    files = configs(docs)
    values_of = yaml.safe_load(helm("show", "values", str(CHART)))
    for v in values:
        override = yaml.safe_load(Path(v).read_text())
        for name in JVM_COMPONENTS:
            values_of[name].update({k: x for k, x in override.get(name, {}).items() if k == "pythonMemory"})
    pods = pods_by_component(docs)
    for name in JVM_COMPONENTS:
        heap = jvm_mib(files[name]["spark"]["driver_memory"])
        overhead = max(384.0, 0.1 * heap)  # what Spark reserves beside the heap (spark.driver.memoryOverhead)
        python = mib(values_of[name]["pythonMemory"])
        [container] = pods[name]["spec"]["containers"]
        limit = mib(container["resources"]["limits"]["memory"])
        assert limit >= heap + overhead + python, (name, limit, heap, overhead, python)
    # the speed layer starts no JVM: its limit holds its Python process, which measured SPEED_10M_PEAK_MB at 10M
    # interactions (`jobrec bench speed-start`, peak resident)
    values_of["speed"].update(yaml.safe_load(PRODUCTION.read_text())["speed"])
    speed_limit = mib(pods["speed"]["spec"]["containers"][0]["resources"]["limits"]["memory"])
    assert speed_limit >= mib(values_of["speed"]["pythonMemory"]) >= SPEED_10M_PEAK_MB * 1e6 / 2**20


@pytest.mark.parametrize(
    "sets,component",
    [
        # the review's finding: a 4g heap under a 4Gi limit is OOM-killed before Python starts
        (("ingest.spark.driver_memory=4g", "ingest.resources.limits.memory=4Gi"), "ingest"),
        (("speed.resources.limits.memory=1Gi",), "speed"),
        (("retrain.pythonMemory=4Gi",), "retrain"),
    ],
    ids=["ingest-4g-heap-in-4Gi", "speed-in-1Gi", "retrain-python-grows"],
)
def test_a_limit_below_heap_overhead_and_python_is_refused_at_render_time(
    sets: tuple[str, ...], component: str
) -> None:
    with pytest.raises(AssertionError, match=rf"{component}\.resources\.limits\.memory .* cannot hold the process"):
        render(*(str(PRODUCTION),), sets=sets)


def test_a_kubernetes_master_only_comes_with_the_drivers_settings() -> None:
    # a k8s:// master set by hand would be a driver without RBAC, Service, pod name or executor template
    for key in ("config.spark.master", "ingest.spark.master", "speed.spark.master"):
        with pytest.raises(AssertionError, match="master"):
            render(sets=(f"{key}=k8s://https://kubernetes.default.svc",))
    with pytest.raises(AssertionError, match="/speed/spark/master"):
        render(sets=("speed.spark.master=spark://host:7077",))  # the speed layer needs no executors at all
