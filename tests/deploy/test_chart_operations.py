"""The chart as an on-call engineer needs it (issue 15): one ingest writer (a StatefulSet of one, its checkpoint
claim ReadWriteOncePod), state kept on uninstall, volumes that cannot Multi-Attach, the API's disruption budget,
autoscaler, spread and graceful stop, NetworkPolicies, each pod's own Secret entries, every literal secret refused,
bounded scratch space, names within Kubernetes' limits, the config's keys mirrored by the schema, NOTES that keep
Forbid, and a `helm test` pod whose script is run here against a stand-in API."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.test_helm_chart import (
    CHART,
    HELM,
    K8S_VERSION,
    PRODUCTION,
    by_kind,
    env_of,
    executor_templates,
    pods_by_component,
    render,
    restricted_violations,
)

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULT_CONFIG = CHART.parents[2] / "schemas" / "config.default.yaml"
API_ON = ("api.enabled=true",)
# the production values with volumes instead of object storage, shared over ReadWriteMany
PRODUCTION_ON_RWX = (
    "persistence.enabled=true",
    "persistence.accessMode=ReadWriteMany",
    "config.storage.tables_root=/data/tables",
    "config.storage.checkpoints_root=/data/checkpoints",
    "config.spark.checkpoint_dir=/data/spark-checkpoints",
)


def refused(*values: str, sets: tuple[str, ...] = ()) -> str:
    """helm template's error text for values that must not render."""
    with pytest.raises(AssertionError) as failure:
        render(*values, sets=sets)
    return str(failure.value)


def validate_all(docs: list[dict]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def container(pod: dict) -> dict:
    [c] = pod["spec"]["containers"]
    return c


# --- one ingest writer, state kept, no Multi-Attach --------------------------------------------------------------


def test_the_ingest_is_one_statefulset_pod_whose_checkpoints_claim_is_read_write_once_pod_and_kept() -> None:
    docs = render()
    assert "ingest" not in {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in by_kind(docs, "Deployment")}
    [sts] = by_kind(docs, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 1 and spec["podManagementPolicy"] == "OrderedReady"
    [claim] = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOncePod"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    ingest = container(spec["template"])
    mounts = {m["name"]: m["mountPath"] for m in ingest["volumeMounts"]}
    # mounted where the ingest's config puts its checkpoints, and in no other pod
    [cm] = [d for d in by_kind(docs, "ConfigMap")]
    assert mounts["checkpoints"] == yaml.safe_load(cm["data"]["ingest.yaml"])["storage"]["checkpoints_root"]
    for name, pod in pods_by_component(docs).items():
        if name != "ingest":
            assert "checkpoints" not in {m["name"] for m in container(pod)["volumeMounts"]}, name
    # the heartbeat probes are kept
    assert "test -f /tmp/heartbeat" in " ".join(ingest["startupProbe"]["exec"]["command"])
    assert "/tmp/heartbeat" in " ".join(ingest["livenessProbe"]["exec"]["command"])
    # on object storage there is no claim: the StatefulSet alone keeps one pod
    [prod] = by_kind(render(str(PRODUCTION)), "StatefulSet")
    assert prod["spec"]["replicas"] == 1 and "volumeClaimTemplates" not in prod["spec"]


def test_the_shared_data_claim_is_kept_and_read_write_once_keeps_its_pods_on_one_node() -> None:
    docs = render()
    [pvc] = by_kind(docs, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    pods = pods_by_component(render(sets=API_ON))
    users = {n for n, p in pods.items() if any(v.get("persistentVolumeClaim") for v in p["spec"]["volumes"])}
    # the API reads the serving model and the catalog (similar jobs, anonymous lists), read-only
    assert users == {"ingest", "speed", "retrain", "api"}
    [api_mount] = [m for m in pods["api"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "data"]
    assert api_mount["readOnly"] is True
    for name in users:
        [term] = pods[name]["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        # every pod that mounts the claim matches the term of every other: one node for all of them
        for other in users:
            labels = pods[other]["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in term["labelSelector"]["matchLabels"].items()), (name, other)
    rwx = pods_by_component(render(sets=("persistence.accessMode=ReadWriteMany",)))
    assert all("affinity" not in p["spec"] for p in rwx.values())


@pytest.mark.parametrize(
    "values,sets,message",
    [
        # executors run on other nodes: a ReadWriteOnce claim cannot attach to them all
        ((), ("ingest.kubernetesExecutors.enabled=true",), "/persistence/accessMode"),
        ((), ("retrain.kubernetesExecutors.enabled=true",), "/persistence/accessMode"),
        ((str(PRODUCTION),), (*PRODUCTION_ON_RWX[:1], *PRODUCTION_ON_RWX[2:]), "/persistence/accessMode"),
        # one claim for several pods: never ReadWriteOncePod
        ((), ("persistence.accessMode=ReadWriteOncePod",), "/persistence/accessMode"),
        # without persistence a local path would be lost with the pod
        ((), ("persistence.enabled=false",), "/config/storage/tables_root"),
        ((str(PRODUCTION),), ("config.spark.checkpoint_dir=/data/x",), "/config/spark/checkpoint_dir"),
        ((str(PRODUCTION),), ("config.storage.checkpoints_root=/data/ckpt",), "/config/storage/checkpoints_root"),
        # with persistence the tables are on the data volume, and no path is relative to the read-only image
        ((), ("config.storage.tables_root=/var/tables",), "/config/storage/tables_root"),
        ((), ("config.storage.checkpoints_root=.local/checkpoints",), "/config/storage/checkpoints_root"),
    ],
)
def test_storage_that_cannot_work_is_refused(values: tuple[str, ...], sets: tuple[str, ...], message: str) -> None:
    assert message in refused(*values, sets=sets)


def test_executors_with_a_read_write_many_claim_render_and_validate() -> None:
    docs = render(str(PRODUCTION), sets=PRODUCTION_ON_RWX)
    validate_all(docs)
    [template] = executor_templates(docs)
    assert {v["name"] for v in template["spec"]["volumes"]} == {"tmp", "data"}


# --- the API and the speed layer: disruptions, scaling, spread, graceful stop ------------------------------------


def test_the_api_has_a_budget_spread_startup_probe_and_a_pre_stop_sleep_within_its_grace_period() -> None:
    docs = render(str(PRODUCTION), sets=API_ON)
    validate_all(docs)
    [deployment] = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-jobrec-api"]
    pod = deployment["spec"]["template"]
    api = container(pod)
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    sleep = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < pod["spec"]["terminationGracePeriodSeconds"]
    spread = pod["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for c in spread:
        assert all(pod["metadata"]["labels"][k] == v for k, v in c["labelSelector"]["matchLabels"].items())
    [pdb] = [p for p in by_kind(docs, "PodDisruptionBudget") if p["metadata"]["name"] == "rel-jobrec-api"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert all(pod["metadata"]["labels"][k] == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    assert "must exceed" in refused(sets=(*API_ON, "api.preStopSleepSeconds=40"))


def test_the_api_autoscaler_owns_the_replica_count() -> None:
    docs = render(sets=(*API_ON, "api.autoscaling.enabled=true", "api.replicas=1"))
    validate_all(docs)
    [hpa] = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    [deployment] = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "rel-jobrec-api"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rel-jobrec-api"}
    assert "replicas" not in deployment["spec"]  # or every upgrade would reset what the autoscaler chose
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert container(deployment["spec"]["template"])["resources"]["requests"]["cpu"]  # utilisation needs it
    assert len(by_kind(docs, "PodDisruptionBudget")) == 1  # api, even at one replica while it may scale out


def test_the_speed_layer_has_a_budget_only_with_more_than_one_replica() -> None:
    assert not by_kind(render(), "PodDisruptionBudget")
    [pdb] = by_kind(render(sets=("speed.replicas=3",)), "PodDisruptionBudget")
    assert pdb["metadata"]["name"] == "rel-jobrec-speed" and pdb["spec"]["maxUnavailable"] == 1


# --- NetworkPolicy -----------------------------------------------------------------------------------------------


def test_network_policies_are_off_by_default_and_cover_every_pod_when_on() -> None:
    assert not by_kind(render(), "NetworkPolicy")
    docs = render(str(PRODUCTION), sets=API_ON)  # on in the production values
    validate_all(docs)
    policies = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: p["spec"]
        for p in by_kind(docs, "NetworkPolicy")
    }
    assert set(policies) == {"ingest", "speed", "retrain", "evaluate", "api", "spark-executor"}
    pods = pods_by_component(docs)
    [template] = executor_templates(docs)
    pods["spark-executor"] = template
    for name, spec in policies.items():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        labels = pods[name]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in spec["podSelector"]["matchLabels"].items()), name
        # ingress only to ports the container has
        ports = {p["name"] for p in container(pods[name]).get("ports", [])} | {
            p["containerPort"] for p in container(pods[name]).get("ports", [])
        }
        if name == "spark-executor":
            ports = {7079}  # its block manager (spark.blockManager.port, from the driver's config)
        for rule in spec["ingress"]:
            for p in rule["ports"]:
                assert p["port"] in ports, (name, p)
        egress = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
        assert {53, 9093} <= egress, name  # DNS and the brokers of config.kafka.bootstrap_servers
        assert 443 in egress, name  # object storage (the API reads the serving model from it)
        assert (6443 in egress) == (name in ("ingest", "retrain")), name  # the API server: drivers only
    metrics = [r for r in policies["speed"]["ingress"] if r["ports"][0]["port"] == "metrics"]
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert metrics[0]["from"] == [monitoring]
    # the API's port: the ingress controller, the helm test pod, and the scrapers
    api_sources = [peer for rule in policies["api"]["ingress"] for peer in rule["from"]]
    assert monitoring in api_sources and len(api_sources) == 3
    assert policies["ingest"]["egress"][3]["to"] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}]  # the API server


# --- secrets -----------------------------------------------------------------------------------------------------


def test_each_pod_gets_only_the_secret_entries_it_uses() -> None:
    docs = render(str(PRODUCTION), sets=API_ON)
    pods = pods_by_component(docs)
    [test_pod] = [d for d in by_kind(docs, "Pod")]
    secret_env = {
        name: {k for k, e in env_of(container(pod)).items() if "secretKeyRef" in e.get("valueFrom", {})}
        for name, pod in [*pods.items(), ("api-test", test_pod), ("executor", executor_templates(docs)[0])]
    }
    kafka, s3 = {"JOBREC_KAFKA_USERNAME", "JOBREC_KAFKA_PASSWORD"}, {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert secret_env == {
        "ingest": kafka | s3,
        "speed": kafka | s3,
        "retrain": kafka | s3,
        "evaluate": kafka | s3,  # it reads the recommendations topic and the tables
        # it produces to Kafka, reads lists from it, and reads the serving model from the tables
        "api": kafka | s3 | {"JOBREC_API_TOKEN"},
        "api-test": {"JOBREC_API_TOKEN"},
        "executor": s3,  # Kafka options reach executors inside the query plan
    }
    # tables on a volume: no S3 keys anywhere
    local = render(str(PRODUCTION), sets=(*API_ON, *PRODUCTION_ON_RWX))
    for pod in [*pods_by_component(local).values(), *executor_templates(local)]:
        assert not s3 & set(env_of(container(pod))), pod["metadata"]["labels"]["app.kubernetes.io/component"]


def test_workload_identity_annotations_reach_the_service_account() -> None:
    docs = render(sets=("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/jobrec",))
    [account] = by_kind(docs, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/jobrec"}


SECRET_PATHS = [
    "config.kafka.security.password",
    "config.api.token",
    "config.spark.extra.spark\\.hadoop\\.fs\\.s3a\\.secret\\.key",
    "config.spark.extra.spark\\.hadoop\\.fs\\.s3a\\.access\\.key",
    "config.spark.extra.spark\\.hadoop\\.fs\\.s3a\\.session\\.token",
    "config.spark.extra.spark\\.hadoop\\.fs\\.s3a\\.bucket\\.b\\.secret\\.key",
    "config.spark.extra.spark\\.hadoop\\.fs\\.azure\\.account\\.key\\.a\\.dfs\\.core\\.windows\\.net",
    "config.spark.extra.spark\\.ssl\\.keyStorePassword",
    "config.spark.extra.spark\\.authenticate\\.secret",
    "config.spark.extra.spark\\.kubernetes\\.authenticate\\.oauthToken",
    "ingest.spark.extra.spark\\.hadoop\\.fs\\.s3a\\.secret\\.key",
    "retrain.spark.extra.spark\\.hadoop\\.fs\\.s3a\\.access\\.key",
    "speed.spark.extra.spark\\.hadoop\\.fs\\.s3a\\.secret\\.key",
    "api.spark.extra.spark\\.hadoop\\.fs\\.s3a\\.secret\\.key",
]


@pytest.mark.parametrize("path", SECRET_PATHS)
def test_a_literal_secret_anywhere_in_values_is_refused_and_a_reference_is_not(path: str) -> None:
    assert "schema" in refused(sets=(f"{path}=hunter2",))
    render(sets=(f"{path}=${{JOBREC_SOME_SECRET}}",))


def test_settings_that_only_look_like_secrets_are_accepted() -> None:
    # the credentials provider names a class, the token file a path: no secret in either
    render(str(PRODUCTION), sets=("config.spark.extra.spark\\.kubernetes\\.authenticate\\.oauthTokenFile=/t",))


# --- scratch space, schedule time zone ---------------------------------------------------------------------------


def test_every_pod_requests_and_limits_ephemeral_storage_and_bounds_tmp() -> None:
    docs = render(str(PRODUCTION), sets=API_ON)
    [test_pod] = by_kind(docs, "Pod")
    for pod in [*pods_by_component(docs).values(), *executor_templates(docs), test_pod]:
        c = container(pod)
        limit = c["resources"]["limits"]["ephemeral-storage"]
        assert c["resources"]["requests"]["ephemeral-storage"] and limit
        [tmp] = [v for v in pod["spec"]["volumes"] if v["name"] == "tmp"]
        assert tmp["emptyDir"]["sizeLimit"]
    assert "above its ephemeral-storage limit" in refused(sets=("ingest.tmpSizeLimit=6Gi",))
    assert "above its ephemeral-storage limit" in refused(str(PRODUCTION), sets=("sparkExecutors.tmpSizeLimit=7Gi",))


def test_the_retrain_schedule_has_a_time_zone() -> None:
    [cron] = by_kind(render(sets=("retrain.timeZone=Europe/Berlin",)), "CronJob")
    assert cron["spec"]["timeZone"] == "Europe/Berlin"
    assert "/retrain/schedule" in refused(sets=("retrain.schedule=CRON_TZ=UTC 0 * * * *",))


# --- names -------------------------------------------------------------------------------------------------------

LONG_RELEASE = "a-release-name-of-exactly-forty-five-chars-xy"


def test_a_45_character_release_name_gives_names_kubernetes_accepts_and_consistent_references() -> None:
    assert len(LONG_RELEASE) == 45
    args = ["template", LONG_RELEASE, str(CHART), "-n", "jobrec", "-f", str(PRODUCTION), "--set", "api.enabled=true"]
    args += ["--set", "networkPolicy.enabled=true"]
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    validate_all(docs)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind, name in names:
        # a CronJob's Jobs and a StatefulSet's revision label add 11 characters to a 63-character label
        assert len(name) <= (52 if kind in ("CronJob", "StatefulSet") else 63), (kind, name)
    by_name = {n for _, n in names}
    [cm] = [d for d in by_kind(docs, "ConfigMap")]
    for pod in pods_by_component(docs).values():
        assert [v for v in pod["spec"]["volumes"] if v["name"] == "config"][0]["configMap"]["name"] == cm["metadata"][
            "name"
        ]
    files = {k: yaml.safe_load(v) for k, v in cm["data"].items() if k in ("ingest.yaml", "retrain.yaml")}
    for f in files.values():
        host = f["spark"]["extra"]["spark.driver.host"].split(".")[0]
        assert host in by_name and len(host) <= 63
    [binding] = by_kind(docs, "RoleBinding")
    assert binding["roleRef"]["name"] in by_name
    [sts] = by_kind(docs, "StatefulSet")
    assert sts["spec"]["serviceName"] in by_name
    # cut the same way on every render, and two long release names stay apart
    other = subprocess.run([str(HELM), "template", LONG_RELEASE[:-1] + "z", str(CHART)], capture_output=True, text=True)
    assert not {d["metadata"]["name"] for d in yaml.safe_load_all(other.stdout) if d} & by_name


# --- the config's keys -------------------------------------------------------------------------------------------


def keys_of(default: dict, schema: dict, path: str = "") -> list[str]:
    """Paths where the default config and the schema's config part disagree on the keys of a section."""
    props = schema.get("properties")
    if props is None:
        return []  # a free map (spark.extra, catalog.aliases)
    out = [f"{path}.{k}: not in the schema" for k in set(default) - set(props)]
    out += [f"{path}.{k}: not in config.default.yaml" for k in set(props) - set(default)]
    for k in set(default) & set(props):
        if isinstance(default[k], dict):
            out += keys_of(default[k], props[k] if "$ref" not in props[k] else {}, f"{path}.{k}")
    return out


def test_the_schema_mirrors_every_section_and_key_of_the_default_config() -> None:
    default = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config_schema = SCHEMA["properties"]["config"]
    assert keys_of(default, config_schema) == []
    # and the default config itself (its ${VAR} references included) is valid under it
    resolver_schema = {**config_schema, "definitions": SCHEMA["definitions"]}
    jsonschema.Draft7Validator(resolver_schema).validate(default)
    # the check can fail
    assert keys_of({**default, "extra_section": {}}, config_schema) == [".extra_section: not in the schema"]


@pytest.mark.parametrize(
    "key", ["config.kafka.bootstrap_server", "config.storage.table_root", "config.nosuchsection.x", "config.api.tokn"]
)
def test_an_unknown_config_key_is_refused(key: str) -> None:
    assert "not allowed" in refused(sets=(f"{key}=x",))


# --- NOTES and helm test -----------------------------------------------------------------------------------------


def notes(*sets: str) -> str:
    args = ["install", "rel", str(CHART), "--dry-run=client", "-n", "jobrec", "-f", str(PRODUCTION)]
    for s in sets:
        args += ["--set", s]
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("NOTES:", 1)[1]


def test_notes_never_start_a_retrain_beside_a_running_one() -> None:
    text = notes("api.enabled=true")
    lines = text.splitlines()
    [create] = [i for i, line in enumerate(lines) if "create job --from=cronjob" in line]
    suspend = [i for i, line in enumerate(lines) if '"suspend":true' in line]
    resume = [i for i, line in enumerate(lines) if '"suspend":false' in line]
    assert suspend and suspend[0] < create < resume[0]
    assert "helm test rel" in text


class StandInApi(http.server.BaseHTTPRequestHandler):
    """What the API answers: 200 with accepted 1 for a valid posted click (bearer token required), then the list
    for new users addressed to the asking user; `lists` empty answers 404 as the API does before any publish."""

    lists: list[dict] = [{"job_id": "j1", "score": 1.0}]
    token = "s3cret"
    posted: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def answer(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            return self.answer(401, {"error": "unauthorized"})
        event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/events" and {"event_id", "user_id", "job_id", "event_type"} <= set(event)
        StandInApi.posted.append(event)
        self.answer(200, {"accepted": 1, "rejected": 0, "results": [{"status": "accepted"}]})

    def do_GET(self) -> None:  # noqa: N802
        user = self.path.rsplit("/", 1)[1]
        if not self.lists:
            return self.answer(404, {"error": "no list"})
        self.answer(200, {"user_id": user, "source": "fallback", "items": self.lists})


def run_test_pod_script(script: str, lists: list[dict]) -> subprocess.CompletedProcess:
    StandInApi.lists, StandInApi.posted = lists, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandInApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "JOBREC_API_URL": f"http://127.0.0.1:{server.server_port}",
        "JOBREC_API_TOKEN": StandInApi.token,
        "JOBREC_TEST_TIMEOUT_SECONDS": "3",
    }
    try:
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()


def test_the_helm_test_pod_posts_a_click_and_reads_a_list_back() -> None:
    docs = render(str(PRODUCTION), sets=API_ON)
    [pod] = by_kind(docs, "Pod")
    validate_all([pod])
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert restricted_violations(pod["spec"]) == []
    c = container(pod)
    assert c["image"] == "registry.example.com/data/jobrec:0.1.0"
    assert env_of(c)["JOBREC_API_URL"]["value"] == "http://rel-jobrec-api.jobrec.svc:80"
    [service] = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "rel-jobrec-api"]
    assert service["spec"]["ports"][0]["port"] == 80
    script = c["command"][2]
    done = run_test_pod_script(script, [{"job_id": "j1", "score": 1.0}])
    assert done.returncode == 0, done.stderr
    [event] = StandInApi.posted
    assert event["user_id"] in done.stdout and "read a list of 1 jobs" in done.stdout
    # and it can fail: no list published
    failed = run_test_pod_script(script, [])
    assert failed.returncode == 1 and "FAIL: GET /v1/recommendations/" in failed.stderr
    assert not by_kind(render(), "Pod")  # no API, no test


def test_the_test_script_in_the_chart_is_the_one_rendered() -> None:
    [pod] = by_kind(render(sets=API_ON), "Pod")
    assert container(pod)["command"][2] == (CHART / "files" / "api_test.py").read_text()
    assert Path(CHART / "files" / "api_test.py").exists()
