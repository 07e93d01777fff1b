"""The chart's metrics: the ingest and speed containers' `metrics` port and the matching config, the PodMonitors
(validated offline against the prometheus-operator's published CRD schema, unknown fields rejected), the Grafana
dashboard's ConfigMap, and every dashboard query checked against the metric names the code defines."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
from types import SimpleNamespace
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobrec.batch.core.online_eval import OutcomeCounts
from jobrec.batch.online_report import OnlineReport
from jobrec.schemas.click_event import EventLimits
from jobrec.streaming.http_api import ApiSettings, create_app
from jobrec.streaming.process_metrics import IngestMetrics, SpeedMetrics, online_evaluation_registry, retrain_registry
from jobrec.streaming.recommendations_reader import LatestLists
from jobrec.streaming.speed import SpeedStats
from tests.deploy.dashboard import DASHBOARD, dashboard_queries, exposed_names, metric_names
from tests.deploy.test_helm_chart import K8S_VERSION, PRODUCTION, REPO, by_kind, configs, pods_by_component, render

CRD_DIR = REPO / ".cache" / "crds"
CRD_FILE = "monitoring.coreos.com_podmonitors.yaml"
ON = ("metrics.podMonitor.enabled=true", "metrics.dashboard.enabled=true", "api.enabled=true")


@pytest.fixture(scope="module")
def podmonitor_schema() -> dict:
    """The v1 openAPIV3Schema of the operator's PodMonitor CRD, made strict as an API server with strict field
    validation is: an object with properties refuses any other field (unless it preserves unknown fields)."""
    subprocess.run([str(REPO / "deploy" / "local" / "fetch_podmonitor_crd.sh"), str(CRD_DIR)], check=True)
    crd = yaml.safe_load((CRD_DIR / CRD_FILE).read_text())
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = copy.deepcopy(v1["schema"]["openAPIV3Schema"])

    def strict(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    strict(schema)
    # apiVersion, kind and metadata as the API server checks them for every object
    schema["properties"]["apiVersion"] = {"const": "monitoring.coreos.com/v1"}
    schema["properties"]["kind"] = {"const": "PodMonitor"}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return schema


def validate_podmonitor(doc: dict, schema: dict) -> None:
    jsonschema.Draft7Validator(schema).validate(doc)
    # metadata is an ObjectMeta: checked by the Kubernetes schema of an object that has one
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}, K8S_VERSION, strict=True
    )


@pytest.mark.parametrize("values", [(), (str(PRODUCTION),)], ids=["default", "production"])
def test_podmonitors_and_the_dashboard_are_valid_and_select_the_metrics_ports(
    values: tuple[str, ...], podmonitor_schema: dict
) -> None:
    docs = render(*values, sets=ON)
    monitors = by_kind(docs, "PodMonitor")
    for doc in docs:
        if doc["kind"] == "PodMonitor":
            validate_podmonitor(doc, podmonitor_schema)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    pods = pods_by_component(docs)
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {"ingest", "speed", "api"}
    for monitor in monitors:
        component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = pods[component]
        # the selector picks this component's pods only, and the endpoint names a port its container has
        labels = pod["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
        assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        [container] = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics", component
    # the ingest and the speed layer serve their endpoint on every interface, on the port the PodMonitor scrapes
    files = configs([d for d in docs if d["metadata"]["name"] != "rel-jobrec-dashboard"])
    for component, key in (("ingest", "ingest_port"), ("speed", "speed_port")):
        [container] = pods[component]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert files[component]["metrics"] == {"host": "0.0.0.0", key: ports["metrics"]}, component
    [api] = pods["api"]["spec"]["containers"]
    assert api["ports"][0]["name"] == "http"  # the API's /metrics is on its HTTP port
    # the dashboard ConfigMap carries the chart's file, labelled for Grafana's sidecar
    [dashboard] = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "rel-jobrec-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["jobrec.json"]) == json.loads(DASHBOARD.read_text())


def test_the_podmonitor_validation_can_fail(podmonitor_schema: dict) -> None:
    [monitor, *_] = by_kind(render(sets=ON), "PodMonitor")
    for break_it in (
        lambda m: m["spec"]["podMetricsEndpoints"][0].update(prot="metrics"),  # misspelt field
        lambda m: m["spec"].pop("selector"),  # required
        lambda m: m["spec"]["podMetricsEndpoints"][0].update(scheme="ftp"),  # not an allowed value
    ):
        bad = copy.deepcopy(monitor)
        break_it(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate_podmonitor(bad, podmonitor_schema)


def test_off_by_default_and_labels_come_from_values() -> None:
    docs = render()
    assert not by_kind(docs, "PodMonitor") and len(by_kind(docs, "ConfigMap")) == 1
    docs = render(
        sets=(*ON, "metrics.podMonitor.labels.release=prom", "metrics.dashboard.annotations.grafana_folder=jobrec")
    )
    assert all(m["metadata"]["labels"]["release"] == "prom" for m in by_kind(docs, "PodMonitor"))
    [dashboard] = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "rel-jobrec-dashboard"]
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "jobrec"}


@pytest.mark.parametrize(
    "sets,message",
    [
        (("metrics.ingestPort=80",), "/metrics/ingestPort"),
        (("metrics.podMonitor.interval=30",), "/metrics/podMonitor/interval"),
        (("metrics.podMonitor.lables.release=prom",), "lables"),
    ],
)
def test_bad_metrics_values_are_refused(sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        render(sets=sets)


def test_a_metrics_port_on_a_driver_port_is_refused() -> None:
    with pytest.raises(AssertionError, match="metrics port 7078 of ingest"):
        render(str(PRODUCTION), sets=("metrics.ingestPort=7078",))


class _NotReady:
    def status(self) -> tuple[bool, str]:
        return False, "not started"


def api_families() -> list[tuple[str, str]]:
    """(name, type) of every family the API's /metrics serves, from the app's own endpoint."""
    settings = ApiSettings("clicks", "recommendations", "jobs", 1000, 10, "", 1.0, 1.0, EventLimits())
    lists = LatestLists(lambda: None)  # type: ignore[arg-type, return-value]  # never started: nothing is read
    app = create_app(settings, None, lists, _NotReady())
    [route] = [r for r in app.routes if getattr(r, "path", None) == "/metrics"]
    body = asyncio.run(route.endpoint()).body.decode()  # type: ignore[attr-defined]
    return [(f.name, f.type) for f in text_string_to_metric_families(body)]


def code_metric_names() -> set[str]:
    """Every sample name the code's registries can expose: the ingest's, the speed layer's, the API's and what a
    retrain pushes (a published run with a model: every family it can push)."""
    registries = [m.registry for m in (IngestMetrics(), SpeedMetrics(SpeedStats()))]
    model = SimpleNamespace(
        metrics={"validation": {"ndcg": 0.5}, "popularity": {"ndcg": 0.25}}, n_users=1, n_jobs=1, n_interactions=1
    )
    registries.append(retrain_registry("published", 1.0, model))
    counts = OutcomeCounts("batch", "v1", None, hits=1, misses=1, pending=1, reciprocal_rank_sum=0.5)
    registries.append(online_evaluation_registry(OnlineReport([counts], [counts], [counts])))
    families = [(f.name, f.type) for registry in registries for f in registry.collect()]
    return exposed_names(families + api_families())


def test_every_dashboard_query_selects_metrics_the_code_defines() -> None:
    defined = code_metric_names()
    queries = dashboard_queries()
    assert len(queries) >= 15
    selected = set()
    for title, expr in queries:
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= defined, (title, names - defined)
        selected |= names
    # what the issue asks the screen to show is on it
    for name in (
        "jobrec_ingest_rows_total",
        "jobrec_ingest_dead_letters_total",
        "jobrec_ingest_offsets_behind",
        "jobrec_ingest_last_batch_completed_timestamp_seconds",
        "jobrec_ingest_last_fold_completed_timestamp_seconds",
        "jobrec_speed_click_to_list_seconds_bucket",
        "jobrec_speed_lists_total",
        "jobrec_speed_partition_lag",
        "jobrec_speed_internal_errors_total",
        "jobrec_events_accepted_total",
        "jobrec_kafka_ack_seconds_bucket",
        "jobrec_http_requests_total",
        "jobrec_retrain_last_published_timestamp_seconds",
        "jobrec_retrain_outcome",
        "jobrec_retrain_validation_ndcg",
        "jobrec_retrain_duration_seconds",
        "jobrec_online_hit_rate",
        "jobrec_online_mrr",
    ):
        assert name in selected, name


def test_the_name_check_can_fail() -> None:
    # a misspelt or suffix-less name is found and is not among the defined ones
    expr = 'sum by (le) (rate(jobrec_speed_click_to_list_second_bucket{a="b(c)"}[5m])) / on (x) jobrec_speed_lists'
    assert metric_names(expr) == {"jobrec_speed_click_to_list_second_bucket", "jobrec_speed_lists"}
    assert not metric_names(expr) & code_metric_names()
    assert metric_names("time() - max(jobrec_ingest_last_progress_timestamp_seconds offset 5m)") == {
        "jobrec_ingest_last_progress_timestamp_seconds"
    }
