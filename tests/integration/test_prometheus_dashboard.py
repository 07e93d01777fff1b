"""A real Prometheus (Debian's package, installed by deploy/local/install_prometheus.sh) scrapes the ingest's and
the speed layer's metrics registries, served as the processes serve them, and the real API on the real broker;
the chart's dashboard queries are asked of Prometheus's HTTP API.

The registries are fed known values after Prometheus has scraped them at zero, so every rate over the dashboard's
window is exact when evaluated at the time of the last scrape: Prometheus extrapolates neither back past a
counter's zero nor forward past the evaluation time. The expected values are worked out by hand below.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from jobrec.batch.core.online_eval import OutcomeCounts
from jobrec.batch.online_report import OnlineReport
from jobrec.streaming.interactions_fold import FoldReport
from jobrec.streaming.local.embedded_kafka import free_port
from jobrec.streaming.process_metrics import (
    IngestMetrics,
    SpeedMetrics,
    online_evaluation_registry,
    push_online_evaluation_metrics,
    push_retrain_metrics,
    retrain_registry,
    serve_metrics,
)
from jobrec.streaming.processes import build_api
from jobrec.streaming.producer import encode_event, make_click_event
from jobrec.streaming.speed import SpeedStats
from tests.deploy.dashboard import dashboard_queries
from tests.integration.conftest import REPO, serving

WINDOW = "5m"  # $__rate_interval: longer than the test, so each window starts before the zero samples
RANGE_SECONDS = 300.0


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


@pytest.fixture(scope="module")
def installed() -> None:
    subprocess.run([str(REPO / "deploy" / "local" / "install_prometheus.sh")], check=True)


@contextlib.contextmanager
def prometheus(folder: Path, targets: dict[str, str]) -> Iterator[str]:
    """prometheus on 127.0.0.1 and a free port scraping each job's target every second; yields its base URL."""
    config = folder / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": job,
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [target]}],
                        # a Pushgateway is scraped keeping the pushed labels (job, namespace), as its docs say
                        **({"honor_labels": True} if job == "pushgateway" else {}),
                    }
                    for job, target in targets.items()
                ],
            }
        )
    )
    checked = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (folder / "prometheus.log").read_text()
            try:
                return get(base + "/-/ready").startswith(b"Prometheus")
            except OSError:
                return False

        wait_for(ready, 20, "prometheus is ready")
        yield base
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def query(base: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
    answer = json.loads(get(f"{base}/api/v1/query?{urllib.parse.urlencode(params)}"))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def values(base: str, expr: str, at: float | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    """label set -> value of an instant query."""
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in query(base, expr, at)}


def one(base: str, expr: str, at: float | None = None) -> float:
    [value] = values(base, expr, at).values()
    return value


def dashboard_expr(title: str, index: int = 0) -> str:
    """A panel's query as Grafana sends it, for every namespace and the test's window."""
    exprs = [e for t, e in dashboard_queries() if t == title]
    return exprs[index].replace("$namespace", ".*").replace("$__rate_interval", WINDOW)


def post(base: str, events: list[bytes]) -> int:
    request = urllib.request.Request(
        base + "/v1/events", data=b"[" + b",".join(events) + b"]", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_prometheus_scrapes_the_endpoints_and_answers_every_dashboard_query(
    installed: None, pipeline, pushgateway: str, tmp_path: Path
) -> None:
    cfg, _path = pipeline
    # a retrain run's metrics, pushed as `jobrec retrain` pushes them: published, 42 s, NDCG 0.4 against 0.3
    model = SimpleNamespace(
        metrics={"validation": {"ndcg": 0.4}, "popularity": {"ndcg": 0.3}}, n_users=9, n_jobs=4, n_interactions=30
    )
    assert push_retrain_metrics(pushgateway, retrain_registry("published", 42.0, model))
    # and an online evaluation's: batch lists of v1, 3 hits (ranks 1, 2, 4) and 1 miss, 2 pending
    counts = OutcomeCounts("batch", "v1", None, hits=3, misses=1, pending=2, reciprocal_rank_sum=1 + 1 / 2 + 1 / 4)
    report = OnlineReport([counts], [counts], [counts])
    assert push_online_evaluation_metrics(pushgateway, online_evaluation_registry(report))
    ingest = IngestMetrics()
    stats = SpeedStats()
    speed = SpeedMetrics(stats)
    # every labelled series exists at zero before the first scrape, so that each rate counts all that is fed later
    # (a series that appears with its first increment has no zero sample; the histograms are unlabelled and start
    # at zero anyway)
    for table in ("events", "dead_letters", "interactions"):
        ingest.rows.labels(table)
    for reason in ("invalid_json", "missing_field"):
        ingest.dead_letters.labels(reason)
    servers = [serve_metrics(m.registry, "127.0.0.1", 0, what) for m, what in ((ingest, "ingest"), (speed, "speed"))]
    app, stop_api = build_api(cfg, cfg.kafka.bootstrap_servers)
    try:
        with serving(app) as api:
            targets = {
                "ingest": f"127.0.0.1:{servers[0].server_port}",
                "speed": f"127.0.0.1:{servers[1].server_port}",
                "api": api.removeprefix("http://"),
                "pushgateway": pushgateway.removeprefix("http://"),
            }
            with prometheus(tmp_path, targets) as prom:
                wait_for(
                    lambda: (
                        len(values(prom, "up == 1")) == 4
                        and values(prom, "jobrec_ingest_dead_letters_total")
                        and values(prom, "jobrec_speed_lists_total")
                    ),
                    20,
                    "every target is up and scraped at zero",
                )
                feed_known_values(ingest, stats, speed)
                # the API: 3 valid clicks and 2 malformed ones (each refused alone, the rest acknowledged)
                good = [encode_event(make_click_event(f"u{i}", f"j{i}")) for i in range(3)]
                assert post(api, [*good, b'{"user_id": "u9"}', b"not json"]) == 200
                wait_for(
                    lambda: (
                        values(prom, 'sum(jobrec_ingest_rows_total{table="events"})') == {(): 600.0}
                        and values(prom, "sum(jobrec_speed_lists_total)") == {(): 80.0}
                        and values(prom, "sum(jobrec_events_accepted_total)") == {(): 3.0}
                    ),
                    20,
                    "Prometheus has scraped the fed values",
                )
                check_exact_answers(prom)
                # every query of the dashboard returns data (a rate once its series has two samples: the API's
                # labelled counters appeared with their first event, one scrape ago at the least)
                for title, expr in dashboard_queries():
                    expr = expr.replace("$namespace", ".*").replace("$__rate_interval", WINDOW)
                    wait_for(lambda expr=expr: bool(query(prom, expr)), 5, f"{title!r} returns data: {expr}")
                # each endpoint's scrape passes promtool's lint
                for job, target in targets.items():
                    scrape = get(f"http://{target}/metrics")
                    checked = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True)
                    assert checked.returncode == 0, (job, checked.stdout, checked.stderr)
    finally:
        stop_api()
        for server in servers:
            server.shutdown()


def feed_known_values(ingest: IngestMetrics, stats: SpeedStats, speed: SpeedMetrics) -> None:
    # ingest: three batches of 100, 200 and 300 events taking 0.7, 1.5 and 3 s; the first also dead-letters 12
    # records (5 invalid_json, 7 missing_field); partition 0 ends 20 records past what the last batch read
    ingest.observe_batch(
        {
            "events": 100,
            "dead_letters": 12,
            "dead_letters_by_reason": {"invalid_json": 5, "missing_field": 7},
            "seconds": 0.7,
        }
    )
    ingest.observe_batch({"events": 200, "dead_letters": 0, "seconds": 1.5})
    ingest.observe_batch({"events": 300, "dead_letters": 0, "seconds": 3.0})
    # one fold of those events into interactions: 40 new pairs and 10 updated
    ingest.observe_fold(FoldReport(first_version=1, last_version=3, pairs_inserted=40, pairs_updated=10, seconds=2.0))
    ingest.observe_progress(
        {
            "name": "ingest-events",
            "processedRowsPerSecond": 250.0,
            "sources": [
                {"latestOffset": {"clicks": {"0": 120, "1": 50}}, "endOffset": {"clicks": {"0": 100, "1": 50}}}
            ],
        }
    )
    # speed: 80 lists (30 of them fallback), 90 clicks applied, 4 rejected, 6 repeated, 2 internal errors; one poll
    # whose 100 clicks were received 0.2 s (50), 0.7 s (40) and 3 s (10) before their lists were acknowledged
    stats.lists, stats.fallback_lists = 80, 30
    stats.events, stats.rejected, stats.repeats, stats.internal_errors = 90, 4, 6, 2
    ack = time.time()
    ack_ms = ack * 1000.0
    speed.observe_poll([ack_ms - 200] * 50 + [ack_ms - 700] * 40 + [ack_ms - 3000] * 10, ack, 0.01, 0.02)
    speed.identify("speed-0")
    speed.lag.labels("clicks", "3").set(7)


def check_exact_answers(prom: str) -> None:
    at = {job: one(prom, f'timestamp(up{{job="{job}"}})') for job in ("ingest", "speed", "pushgateway")}

    def panel(title: str, job: str, index: int = 0) -> dict[str, float]:
        """A panel's query at the time of its job's last scrape: legend label (or "") -> value."""
        answer = values(prom, dashboard_expr(title, index), at[job])
        return {"/".join(v for _, v in labels): value for labels, value in answer.items()}

    # rates over the 300 s window: what was added since the zero samples, divided by 300
    assert panel("Ingest rows/s by table", "ingest") == pytest.approx(
        {"events": 600 / RANGE_SECONDS, "dead_letters": 12 / RANGE_SECONDS, "interactions": 50 / RANGE_SECONDS}
    )
    assert panel("Dead letters/s by reason", "ingest") == pytest.approx(
        {"invalid_json": 5 / RANGE_SECONDS, "missing_field": 7 / RANGE_SECONDS}
    )
    assert panel("Ingest offsets behind the topic's end", "ingest") == {"clicks": 20.0}
    since = "Time since the last ingest batch and fold"
    assert 0 <= panel(since, "ingest", 0)[""] < 60  # the last batch with rows
    assert 0 <= panel(since, "ingest", 2)[""] < 60  # the last fold into interactions
    # batch seconds 0.7, 1.5, 3 in buckets (0.5, 1], (1, 2], (2, 5]: rank 0.95 * 3 = 2.85 lies in (2, 5], which
    # holds one of the three, so p95 = 2 + 3 * (2.85 - 2) / 1 = 4.55
    assert panel("Ingest batch duration p95", "ingest")[""] == pytest.approx(4.55)
    # clicks: 50 in (0.1, 0.25], 40 in (0.5, 1], 10 in (2, 5]. p50: rank 50 is the end of (0.1, 0.25] -> 0.25;
    # p95: rank 95 is 5 of the 10 in (2, 5] -> 2 + 3 * 5/10 = 3.5; p99: 9 of 10 -> 2 + 3 * 9/10 = 4.7
    freshness = "Click to list (freshness) p50 / p95 / p99"
    quantiles = [panel(freshness, "speed", i)[""] for i in range(3)]
    assert quantiles == pytest.approx([0.25, 3.5, 4.7])
    assert panel("Lists/s by source", "speed") == pytest.approx(
        {"fold-in": 50 / RANGE_SECONDS, "fallback": 30 / RANGE_SECONDS}
    )
    assert panel("Clicks partition lag", "speed") == {"3/clicks": 7.0}  # labels partition, topic
    assert panel("Speed: errors and skipped clicks/s", "speed", 0) == pytest.approx({"": 2 / RANGE_SECONDS})
    assert panel("Speed: errors and skipped clicks/s", "speed", 1) == pytest.approx(
        {"rejected": 4 / RANGE_SECONDS, "repeated": 6 / RANGE_SECONDS}
    )
    assert panel("Speed instances", "speed") == {"": 1.0}
    # the retrain, through the Pushgateway
    assert panel("Last retrain outcome", "pushgateway") == {"published": 1.0}
    assert panel("Validation NDCG@k: candidate and popularity", "pushgateway") == {"candidate": 0.4, "popularity": 0.3}
    assert panel("Last retrain duration", "pushgateway") == {"": 42.0}
    assert 0 <= panel("Time since the last published model", "pushgateway")[""] < 60
    # hit rate 3 / 4 decided; MRR (1 + 1/2 + 1/4) / 4 decided
    assert panel("Online hit rate by source and model version", "pushgateway") == {
        "v1/batch": 0.75
    }  # labels by name: model_version, source
    assert panel("Online MRR by source and model version", "pushgateway") == pytest.approx({"v1/batch": 1.75 / 4})
    assert panel("Lists evaluated by outcome", "pushgateway") == {"hit": 3.0, "miss": 1.0, "pending": 2.0}
    # the API: totals (its labelled counters appear at their first event, so a rate would miss that one)
    assert values(prom, "sum by (kind) (jobrec_events_accepted_total)") == {(("kind", "click"),): 3.0}
    assert one(prom, "sum(jobrec_events_rejected_total)") == 2
