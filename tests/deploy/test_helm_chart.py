"""The Helm chart: lint, render with the default and a production-like values file, validate every rendered
manifest against the Kubernetes schemas offline (unknown fields rejected), and check what matters."""

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
# kinds of custom resources, whose schemas ship with their operators, not with Kubernetes
CUSTOM_KINDS = {"ScheduledSparkApplication"}


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


def pod_specs(docs: list[dict]) -> list[dict]:
    specs = [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")]
    specs += [d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in by_kind(docs, "CronJob")]
    return specs


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
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


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
    # one ingest writer per checkpoint, never two pods at once; speed replicas share partitions in a group
    ingest = deployments["rel-jobrec-ingest"]["spec"]
    assert ingest["replicas"] == 1 and ingest["strategy"]["type"] == "Recreate"
    speed = deployments["rel-jobrec-speed"]["spec"]
    assert speed["replicas"] >= 1 and speed["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    [cron] = by_kind(docs, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] > 0
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] >= 0
    for spec in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    for d in by_kind(docs, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in c, d["metadata"]["name"]  # the retrain Job has its deadline instead
    # the pipeline config in the ConfigMap is valid for jobrec itself
    from jobrec.schemas.config import DEFAULT_CONFIG_PATH, expand_env, merge, parse_config, read_yaml

    [cm] = by_kind(docs, "ConfigMap")
    override = yaml.safe_load(cm["data"]["config.yaml"])
    parse_config(
        expand_env(
            merge(read_yaml(DEFAULT_CONFIG_PATH), override),
            {"JOBREC_KAFKA_USERNAME": "u", "JOBREC_KAFKA_PASSWORD": "p"},
        )
    )


def test_production_values_use_secrets_and_no_secret_lands_in_a_configmap() -> None:
    docs = render(str(PRODUCTION))
    secret_values = ["kafka-password", "s3-secret-key", "api-token"]
    for cm in by_kind(docs, "ConfigMap"):
        text = yaml.safe_dump(cm)
        assert "${JOBREC_KAFKA_PASSWORD}" in text  # a reference, filled from the environment
        for v in secret_values:
            assert v not in text
    env = {e["name"]: e for spec in pod_specs(docs) for c in spec["containers"] for e in c.get("env", [])}
    for name in ("JOBREC_KAFKA_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "jobrec-credentials"
        assert "value" not in env[name]
    assert not by_kind(docs, "PersistentVolumeClaim")  # object storage instead
    with_api = render(str(PRODUCTION), sets=("api.enabled=true",))
    [service] = by_kind(with_api, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_a_literal_password_in_values_is_refused() -> None:
    done = subprocess.run(
        [str(HELM), "template", "rel", str(CHART), "--set", "config.kafka.security.password=hunter2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "/config/kafka/security/password" in done.stderr


def test_spark_operator_flag_swaps_the_cronjob_for_a_scheduled_spark_application() -> None:
    docs = render(str(PRODUCTION), sets=("sparkOperator.enabled=true",))
    assert not by_kind(docs, "CronJob")
    [app] = by_kind(docs, "ScheduledSparkApplication")
    assert app["spec"]["concurrencyPolicy"] == "Forbid"


def test_speed_replicas_come_from_values_and_a_bad_count_is_refused() -> None:
    [speed] = [
        d
        for d in by_kind(render(sets=("speed.replicas=3",)), "Deployment")
        if d["metadata"]["name"] == "rel-jobrec-speed"
    ]
    assert speed["spec"]["replicas"] == 3
    with pytest.raises(AssertionError, match="replicas"):
        render(sets=("speed.replicas=0",))
