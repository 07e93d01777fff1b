"""Prometheus metrics of the continuous processes without an HTTP API of their own: `jobrec ingest` and
`jobrec speed` (the API serves its own on /metrics).

Each process keeps its metrics in its own registry, served on `metrics.host`:`metrics.*_port` by
prometheus_client's threaded HTTP server. What the on-call engineer asks of them:
- ingest: is it making progress (time of the last completed micro-batch), how far behind the topic's end is it,
  how many rows went where, and why records were rejected (dead letters by reason code);
- speed: how fresh are the lists (broker receipt of a click -> its list acknowledged), how many lists of which
  source, how far behind each owned partition is, and what was skipped (rejected, repeated, internal errors);
- retrain (a Job that exits; its metrics go to a Pushgateway, `metrics.pushgateway_url`): when it last ran and
  published, how long it took, what the gate decided, the candidate's and popularity's validation NDCG;
- online evaluation (`jobrec evaluate --online`, pushed the same way): hit rate, MRR and lists per outcome of the
  period's lists, per source and model version.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric

from jobrec.schemas import tables as t

if TYPE_CHECKING:
    from jobrec.batch.online_report import OnlineReport

log = logging.getLogger(__name__)

# a micro-batch takes from a fraction of a second (a few events) to minutes (a backlog of max_offsets_per_trigger)
BATCH_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, float("inf"))
# the freshness bound the speed layer is held to is about a second at 1,000 events/s
FRESHNESS_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, float("inf"))


def serve_metrics(registry: CollectorRegistry, host: str, port: int, what: str) -> Any:
    """Serve `registry` on http://host:port/metrics in a daemon thread; returns the server (to shut down)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("%s metrics on http://%s:%d/metrics", what, host, server.server_port)
    return server


def offsets_behind(progress_source: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """(topic, partition) -> records between what a micro-batch read (endOffset) and the topic's end when it ran
    (latestOffset), from one source of a StreamingQueryProgress; Spark gives both as JSON text or objects."""

    def offsets(value: Any) -> dict[str, dict[str, int]]:
        if value is None:
            return {}
        parsed = json.loads(value) if isinstance(value, str) else value
        return parsed if isinstance(parsed, dict) else {}

    latest, end = offsets(progress_source.get("latestOffset")), offsets(progress_source.get("endOffset"))
    behind = {}
    for topic, partitions in latest.items():
        if not isinstance(partitions, dict):
            continue
        for partition, offset in partitions.items():
            read = end.get(topic, {}).get(partition)
            if isinstance(offset, int) and isinstance(read, int):
                behind[(topic, str(partition))] = max(0, offset - read)
    return behind


class IngestMetrics:
    """The ingest's metrics, fed by its foreachBatch (one call per written batch) and its query progress."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.batches = Counter("jobrec_ingest_batches_total", "micro-batches written", registry=r)
        self.rows = Counter(
            "jobrec_ingest_rows_total", "rows written by micro-batches, by table", ["table"], registry=r
        )
        self.dead_letters = Counter(
            "jobrec_ingest_dead_letters_total",
            "records rejected to the dead_letters table, by reason",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "jobrec_ingest_batch_seconds",
            "wall time of a micro-batch's foreachBatch (parse, de-duplication, the events and dead-letters appends)",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.last_batch = Gauge(
            "jobrec_ingest_last_batch_completed_timestamp_seconds",
            "when the last micro-batch with rows completed (Unix time)",
            registry=r,
        )
        self.last_progress = Gauge(
            "jobrec_ingest_last_progress_timestamp_seconds",
            "when a query last reported progress, a finished micro-batch or Spark's idle report (Unix time)",
            ["query"],
            registry=r,
        )
        self.behind = Gauge(
            "jobrec_ingest_offsets_behind",
            "records between the last micro-batch's end and the topic's end when it ran",
            ["topic", "partition"],
            registry=r,
        )
        self.input_rate = Gauge(
            "jobrec_ingest_processed_rows_per_second", "rows per second of the last micro-batch", ["query"], registry=r
        )
        self.last_fold = Gauge(
            "jobrec_ingest_last_fold_completed_timestamp_seconds",
            "when new events were last folded into the interactions table (Unix time)",
            registry=r,
        )
        self.fold_seconds = Histogram(
            "jobrec_ingest_fold_seconds",
            "wall time of a fold of new events into interactions (one MERGE)",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.fold_failures = Counter(
            "jobrec_ingest_fold_failures_total",
            "folds into interactions that failed (tried again at the next turn, from the same position)",
            registry=r,
        )

    def observe_batch(self, written: Mapping[str, Any]) -> None:
        """One written micro-batch, as `streaming.ingest.write_ingest_batch` returns it."""
        self.batches.inc()
        self.rows.labels("events").inc(int(written.get("events", 0)))
        self.rows.labels("dead_letters").inc(int(written.get("dead_letters", 0)))
        for reason, n in dict(written.get("dead_letters_by_reason", {})).items():
            self.dead_letters.labels(str(reason)).inc(int(n))
        self.batch_seconds.observe(float(written.get("seconds", 0.0)))
        if written.get("events", 0) or written.get("dead_letters", 0):
            self.last_batch.set(time.time())

    def observe_fold(self, report: Any) -> None:
        """One fold of events into interactions (streaming.interactions_fold.FoldReport)."""
        self.rows.labels("interactions").inc(int(report.pairs_inserted) + int(report.pairs_updated))
        self.fold_seconds.observe(float(report.seconds))
        self.last_fold.set(time.time())

    def observe_progress(self, progress: Mapping[str, Any]) -> None:
        """One StreamingQueryProgress (as a dict): offsets behind per partition, the query's rate and time."""
        name = str(progress.get("name") or progress.get("id") or "")
        self.last_progress.labels(name).set(time.time())
        rate = progress.get("processedRowsPerSecond")
        if isinstance(rate, (int, float)):
            self.input_rate.labels(name).set(float(rate))
        for source in progress.get("sources") or ():
            if isinstance(source, Mapping):
                for (topic, partition), n in offsets_behind(source).items():
                    self.behind.labels(topic, partition).set(n)


class SpeedMetrics:
    """The speed layer's metrics: its counters (SpeedStats) read at scrape time, freshness and lag observed."""

    def __init__(self, stats: Any) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_SpeedStatsCollector(stats))
        self.freshness = Histogram(
            "jobrec_speed_click_to_list_seconds",
            "from the broker's receipt of a click to the acknowledgement of the list it refreshed",
            buckets=FRESHNESS_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.poll_seconds = Histogram(
            "jobrec_speed_poll_seconds",
            "compute (parse, fold-in, top-N) and publish time of one poll with records",
            ["stage"],
            buckets=FRESHNESS_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.lag = Gauge(
            "jobrec_speed_partition_lag",
            "records of an owned clicks partition not yet read (its end minus this instance's position)",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.instance = Gauge(
            "jobrec_speed_instance_info",
            "1, labelled with the instance name every list of this instance carries (header jobrec-speed-instance)",
            ["instance"],
            registry=self.registry,
        )
        self._lag_checked = 0.0

    def identify(self, instance: str) -> None:
        self.instance.labels(instance).set(1)

    def observe_poll(
        self, received_ms: Iterable[int], acknowledged_at: float, compute_s: float, publish_s: float
    ) -> None:
        """A published poll: each click's broker timestamp (ms) against the time its lists were acknowledged."""
        ack_ms = acknowledged_at * 1000.0
        for ms in received_ms:
            self.freshness.observe(max(0.0, (ack_ms - ms) / 1000.0))
        self.poll_seconds.labels("compute").observe(compute_s)
        self.poll_seconds.labels("publish").observe(publish_s)

    def update_lag(self, consumer: Any, every_seconds: float = 10.0) -> None:
        """Lag of the owned partitions, at most every `every_seconds` (it asks the brokers for the ends)."""
        now = time.monotonic()
        if now - self._lag_checked < every_seconds:
            return
        owned = list(consumer.assignment())
        if not owned:
            self.lag.clear()
            return
        self._lag_checked = now
        try:
            ends = consumer.end_offsets(owned)
            self.lag.clear()
            for tp in owned:
                self.lag.labels(tp.topic, str(tp.partition)).set(max(0, ends[tp] - consumer.position(tp)))
        except Exception:  # noqa: BLE001 - a metric must never stop the layer
            log.debug("could not read the clicks partitions' ends for the lag metric", exc_info=True)


class _SpeedStatsCollector:
    """SpeedStats' counters as Prometheus counters, read when scraped (the hot path only adds to ints)."""

    def __init__(self, stats: Any) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        records = CounterMetricFamily(
            "jobrec_speed_click_records", "click records read, by what became of them", labels=["outcome"]
        )
        records.add_metric(["applied"], s.events)
        records.add_metric(["rejected"], s.rejected)
        records.add_metric(["repeated"], s.repeats)
        yield records
        lists = CounterMetricFamily("jobrec_speed_lists", "lists published, by source", labels=["source"])
        lists.add_metric(["fold-in"], s.lists - s.fallback_lists)
        lists.add_metric(["fallback"], s.fallback_lists)
        yield lists
        yield CounterMetricFamily(
            "jobrec_speed_internal_errors", "records or users skipped because the code raised", value=s.internal_errors
        )
        jobs = CounterMetricFamily("jobrec_speed_job_events", "job events read, by outcome", labels=["outcome"])
        jobs.add_metric(["applied"], s.job_events)
        jobs.add_metric(["rejected"], s.job_events_rejected)
        yield jobs
        yield CounterMetricFamily("jobrec_speed_polls", "polls that had click records", value=s.polls_with_records)


# --- the retrain: a scheduled Job that exits, so its metrics are pushed, not scraped ----------------------------

RETRAIN_JOB = "jobrec-retrain"
# one of these per run: published (passed and its lists sent), passed (passed, --no-publish), rejected (the gate
# kept the serving model), skipped (too little data), failed (an error ended the run)
RETRAIN_OUTCOMES = ("published", "passed", "rejected", "skipped", "failed")


def retrain_registry(outcome: str, seconds: float, model: Any = None, now: float | None = None) -> CollectorRegistry:
    """The metrics of one retrain run. `model`: its TrainedModel (None when skipped or failed)."""
    if outcome not in RETRAIN_OUTCOMES:
        raise ValueError(f"unknown retrain outcome {outcome!r}: one of {RETRAIN_OUTCOMES}")
    now = time.time() if now is None else now
    registry = CollectorRegistry()
    Gauge("jobrec_retrain_last_run_timestamp_seconds", "when the last retrain run ended", registry=registry).set(now)
    Gauge("jobrec_retrain_duration_seconds", "how long the last retrain run took", registry=registry).set(seconds)
    outcomes = Gauge(
        "jobrec_retrain_outcome",
        "1 for the outcome of the last retrain run, 0 for the others",
        ["outcome"],
        registry=registry,
    )
    for name in RETRAIN_OUTCOMES:
        outcomes.labels(name).set(1 if name == outcome else 0)
    if outcome == "published":
        # pushed with POST (pushadd): a rejected or skipped run leaves the last publication's time as it was
        Gauge(
            "jobrec_retrain_last_published_timestamp_seconds",
            "when a retrain last published a model",
            registry=registry,
        ).set(now)
    if model is not None:
        ndcg = Gauge(
            "jobrec_retrain_validation_ndcg",
            "validation NDCG@k of the last run's candidate model and of the popularity baseline",
            ["model"],
            registry=registry,
        )
        for name, key in (("candidate", "validation"), ("popularity", "popularity")):
            value = (model.metrics.get(key) or {}).get("ndcg")
            if value is not None:
                ndcg.labels(name).set(value)
        size = Gauge("jobrec_retrain_data", "what the last run's model was trained on", ["what"], registry=registry)
        size.labels("users").set(model.n_users)
        size.labels("jobs").set(model.n_jobs)
        size.labels("interactions").set(model.n_interactions)
    return registry


# the retrain pod's namespace (the chart sets it from the downward API): pushed as a grouping label, so that the
# dashboard's namespace filter finds the retrain's metrics on a Pushgateway shared by several installations
NAMESPACE_ENV = "JOBREC_NAMESPACE"


def push_retrain_metrics(url: str, registry: CollectorRegistry, timeout_seconds: float = 5.0) -> bool:
    """Push to a Prometheus Pushgateway at `url` (Prometheus scrapes it with honor_labels); a failure is logged,
    never raised: the metrics must not fail a retrain that worked."""
    import os

    from prometheus_client import pushadd_to_gateway

    namespace = os.environ.get(NAMESPACE_ENV, "")
    grouping = {"namespace": namespace} if namespace else {}
    try:
        pushadd_to_gateway(url, job=RETRAIN_JOB, registry=registry, grouping_key=grouping, timeout=timeout_seconds)
    except Exception as e:  # noqa: BLE001 - unreachable gateway, refused push: say so and go on
        log.warning("could not push the retrain's metrics to %s: %s", url, e)
        return False
    log.info("retrain metrics pushed to %s", url)
    return True


ONLINE_EVALUATION_JOB = "jobrec-online-evaluation"


def online_evaluation_registry(report: OnlineReport, now: float | None = None) -> CollectorRegistry:
    """The outcomes of the lists of `jobrec evaluate --online`'s period, per source and model version."""
    registry = CollectorRegistry()
    labels = ["source", "model_version"]
    Gauge("jobrec_online_last_run_timestamp_seconds", "when the online evaluation last ran", registry=registry).set(
        time.time() if now is None else now
    )
    hit_rate = Gauge(
        "jobrec_online_hit_rate",
        "decided lists with a hit within their span, per decided list",
        labels,
        registry=registry,
    )
    mrr = Gauge(
        "jobrec_online_mrr", "mean of 1 / rank of the hit over decided lists (a miss: 0)", labels, registry=registry
    )
    lists = Gauge("jobrec_online_lists", "lists of the period by outcome", [*labels, "outcome"], registry=registry)
    for c in report.per_model_version:
        version = c.model_version or ""
        if c.hit_rate is not None and c.mrr is not None:
            hit_rate.labels(c.source, version).set(c.hit_rate)
            mrr.labels(c.source, version).set(c.mrr)
        for outcome, n in ((t.OUTCOME_HIT, c.hits), (t.OUTCOME_MISS, c.misses), (t.OUTCOME_PENDING, c.pending)):
            lists.labels(c.source, version, outcome).set(n)
    return registry


def push_online_evaluation_metrics(url: str, registry: CollectorRegistry, timeout_seconds: float = 5.0) -> bool:
    """Replace (PUT) the online evaluation's group on the Pushgateway: model versions that left the period leave
    with it. A failure is logged, never raised."""
    import os

    from prometheus_client import push_to_gateway

    namespace = os.environ.get(NAMESPACE_ENV, "")
    grouping = {"namespace": namespace} if namespace else {}
    try:
        push_to_gateway(
            url, job=ONLINE_EVALUATION_JOB, registry=registry, grouping_key=grouping, timeout=timeout_seconds
        )
    except Exception as e:  # noqa: BLE001 - unreachable gateway, refused push: say so and go on
        log.warning("could not push the online evaluation's metrics to %s: %s", url, e)
        return False
    log.info("online evaluation metrics pushed to %s", url)
    return True
