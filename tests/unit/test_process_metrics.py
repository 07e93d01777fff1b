"""The ingest's and the speed layer's Prometheus metrics, read back in the text format a Prometheus server scrapes
(parsed by prometheus_client's own parser), against values worked out by hand."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobrec.streaming.process_metrics import IngestMetrics, SpeedMetrics, offsets_behind
from jobrec.streaming.speed import SpeedStats


def scraped(registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """sample name + sorted labels -> value, as a scrape sees them."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_offsets_behind_per_partition_from_a_progress_source_in_either_form() -> None:
    source = {
        "latestOffset": json.dumps({"clicks": {"0": 120, "1": 40, "2": 7}}),
        "endOffset": json.dumps({"clicks": {"0": 100, "1": 40, "2": 9}}),
    }
    # 2: read past the end seen when the batch was planned (new records came in between): nothing behind
    assert offsets_behind(source) == {("clicks", "0"): 20, ("clicks", "1"): 0, ("clicks", "2"): 0}
    as_objects = {k: json.loads(v) for k, v in source.items()}
    assert offsets_behind(as_objects) == offsets_behind(source)
    # a source without offsets yet (first batch planning) or of another shape says nothing
    assert offsets_behind({"latestOffset": None, "endOffset": None}) == {}
    assert offsets_behind({"latestOffset": "[1, 2]", "endOffset": "{}"}) == {}


def test_ingest_metrics_add_up_batches_rows_and_dead_letters_by_reason() -> None:
    m = IngestMetrics()
    before = time.time()
    m.observe_batch(
        {
            "events": 7,
            "dead_letters": 3,
            "dead_letters_by_reason": {"invalid_json": 2, "missing_field": 1},
            "seconds": 1.5,
        }
    )
    m.observe_batch({"events": 5, "dead_letters": 1, "dead_letters_by_reason": {"invalid_json": 1}, "seconds": 4.0})
    # an empty batch (Spark's watermark-only one) counts as a batch but is not "a batch with rows"
    stamp_after_rows = scraped(m.registry)[("jobrec_ingest_last_batch_completed_timestamp_seconds", ())]
    m.observe_batch({"events": 0, "dead_letters": 0, "dead_letters_by_reason": {}, "seconds": 0.2})
    got = scraped(m.registry)
    assert got[("jobrec_ingest_batches_total", ())] == 3
    assert got[("jobrec_ingest_rows_total", (("table", "events"),))] == 12
    assert got[("jobrec_ingest_rows_total", (("table", "dead_letters"),))] == 4
    assert got[("jobrec_ingest_dead_letters_total", (("reason", "invalid_json"),))] == 3
    assert got[("jobrec_ingest_dead_letters_total", (("reason", "missing_field"),))] == 1
    assert got[("jobrec_ingest_batch_seconds_count", ())] == 3
    assert got[("jobrec_ingest_batch_seconds_sum", ())] == pytest.approx(5.7)
    # buckets are cumulative: 0.2 and 1.5 are <= 2, 4.0 is not
    assert got[("jobrec_ingest_batch_seconds_bucket", (("le", "2.0"),))] == 2
    assert got[("jobrec_ingest_last_batch_completed_timestamp_seconds", ())] == stamp_after_rows
    assert before <= stamp_after_rows <= time.time()


def test_ingest_metrics_count_folds_into_interactions() -> None:
    from jobrec.streaming.interactions_fold import FoldReport

    m = IngestMetrics()
    before = time.time()
    m.observe_fold(FoldReport(first_version=3, last_version=5, pairs_inserted=4, pairs_updated=6, seconds=2.5))
    m.observe_fold(FoldReport(first_version=6, last_version=6, pairs_inserted=0, pairs_updated=1, seconds=0.5))
    m.fold_failures.inc()
    got = scraped(m.registry)
    assert got[("jobrec_ingest_rows_total", (("table", "interactions"),))] == 11
    assert got[("jobrec_ingest_fold_seconds_count", ())] == 2
    assert got[("jobrec_ingest_fold_seconds_sum", ())] == pytest.approx(3.0)
    assert got[("jobrec_ingest_fold_failures_total", ())] == 1
    assert before <= got[("jobrec_ingest_last_fold_completed_timestamp_seconds", ())] <= time.time()


def test_ingest_progress_sets_lag_per_partition_and_the_rate() -> None:
    m = IngestMetrics()
    m.observe_progress(
        {
            "name": "ingest_clicks",
            "processedRowsPerSecond": 250.0,
            "sources": [
                {
                    "latestOffset": {"clicks": {"0": 10, "1": 30}},
                    "endOffset": {"clicks": {"0": 10, "1": 12}},
                }
            ],
        }
    )
    got = scraped(m.registry)
    assert got[("jobrec_ingest_offsets_behind", (("partition", "0"), ("topic", "clicks")))] == 0
    assert got[("jobrec_ingest_offsets_behind", (("partition", "1"), ("topic", "clicks")))] == 18
    assert got[("jobrec_ingest_processed_rows_per_second", (("query", "ingest_clicks"),))] == 250.0
    assert got[("jobrec_ingest_last_progress_timestamp_seconds", (("query", "ingest_clicks"),))] > 0


def test_speed_metrics_read_the_stats_at_scrape_time_and_time_each_click_to_its_list() -> None:
    stats = SpeedStats()
    m = SpeedMetrics(stats)
    m.identify("host-a:123")
    stats.events, stats.rejected, stats.repeats = 40, 3, 2
    stats.lists, stats.fallback_lists = 30, 4
    stats.internal_errors, stats.job_events, stats.job_events_rejected, stats.polls_with_records = 1, 6, 2, 9
    acknowledged = 1_000_000.0
    # three clicks received 0.2 s, 0.7 s and 3 s before their lists were acknowledged
    m.observe_poll([999_999_800, 999_999_300, 999_997_000], acknowledged, compute_s=0.05, publish_s=0.01)
    got = scraped(m.registry)
    assert got[("jobrec_speed_click_records_total", (("outcome", "applied"),))] == 40
    assert got[("jobrec_speed_click_records_total", (("outcome", "rejected"),))] == 3
    assert got[("jobrec_speed_click_records_total", (("outcome", "repeated"),))] == 2
    assert got[("jobrec_speed_lists_total", (("source", "fold-in"),))] == 26
    assert got[("jobrec_speed_lists_total", (("source", "fallback"),))] == 4
    assert got[("jobrec_speed_internal_errors_total", ())] == 1
    assert got[("jobrec_speed_job_events_total", (("outcome", "rejected"),))] == 2
    assert got[("jobrec_speed_polls_total", ())] == 9
    assert got[("jobrec_speed_instance_info", (("instance", "host-a:123"),))] == 1
    assert got[("jobrec_speed_click_to_list_seconds_count", ())] == 3
    assert got[("jobrec_speed_click_to_list_seconds_sum", ())] == pytest.approx(3.9)
    assert got[("jobrec_speed_click_to_list_seconds_bucket", (("le", "0.25"),))] == 1
    assert got[("jobrec_speed_click_to_list_seconds_bucket", (("le", "1.0"),))] == 2
    assert got[("jobrec_speed_poll_seconds_count", (("stage", "compute"),))] == 1
    # the counters follow the stats without another call
    stats.events += 5
    assert scraped(m.registry)[("jobrec_speed_click_records_total", (("outcome", "applied"),))] == 45


def _samples(registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect() for s in family.samples}


def test_a_retrain_run_is_one_outcome_with_its_gate_metrics() -> None:
    from types import SimpleNamespace

    from jobrec.streaming.process_metrics import retrain_registry

    model = SimpleNamespace(
        metrics={"validation": {"ndcg": 0.31}, "popularity": {"ndcg": None}}, n_users=7, n_jobs=5, n_interactions=20
    )
    samples = _samples(retrain_registry("rejected", 12.5, model, now=1000.0))
    assert samples == {
        ("jobrec_retrain_last_run_timestamp_seconds", ()): 1000.0,
        ("jobrec_retrain_duration_seconds", ()): 12.5,
        ("jobrec_retrain_outcome", (("outcome", "published"),)): 0,
        ("jobrec_retrain_outcome", (("outcome", "passed"),)): 0,
        ("jobrec_retrain_outcome", (("outcome", "rejected"),)): 1,
        ("jobrec_retrain_outcome", (("outcome", "skipped"),)): 0,
        ("jobrec_retrain_outcome", (("outcome", "failed"),)): 0,
        # an undefined NDCG (no validation user) is left out, not pushed as 0
        ("jobrec_retrain_validation_ndcg", (("model", "candidate"),)): 0.31,
        ("jobrec_retrain_data", (("what", "users"),)): 7,
        ("jobrec_retrain_data", (("what", "jobs"),)): 5,
        ("jobrec_retrain_data", (("what", "interactions"),)): 20,
    }
    published = _samples(retrain_registry("published", 3.0, model, now=2000.0))
    assert published[("jobrec_retrain_last_published_timestamp_seconds", ())] == 2000.0
    skipped = _samples(retrain_registry("skipped", 1.0))
    assert {name for name, _ in skipped} == {
        "jobrec_retrain_last_run_timestamp_seconds",
        "jobrec_retrain_duration_seconds",
        "jobrec_retrain_outcome",
    }
    with pytest.raises(ValueError, match="unknown retrain outcome 'won'"):
        retrain_registry("won", 1.0)


def test_an_unreachable_pushgateway_is_logged_and_does_not_fail_the_retrain(caplog: pytest.LogCaptureFixture) -> None:
    from jobrec.streaming.local.embedded_kafka import free_port
    from jobrec.streaming.process_metrics import push_retrain_metrics, retrain_registry

    url = f"http://127.0.0.1:{free_port()}"
    assert push_retrain_metrics(url, retrain_registry("failed", 1.0), timeout_seconds=2) is False
    assert f"could not push the retrain's metrics to {url}" in caplog.text
