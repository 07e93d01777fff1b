"""`jobrec evaluate --online` on the real broker, Spark and Delta, run as a user runs it.

A scripted history: lists on the recommendations topic (the project's own message encoder) and in the
recommendations table (as a batch publish appends them; one only there, as if compacted off the topic, one in both),
and interactions in the events table (rows of its DDL, as the ingest writes them). Some users click a listed
job within the span, at known ranks; some click an unlisted job, a listed job after the window, or after a newer
list; one only views a listed job (views are not counted in this config); one list's span is still open. The
expected outcome of each list is written out by hand below, and the hit rates and MRRs the table, the printed
summary and the pushed metrics must show are computed from those in plain Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from functools import partial

from pyspark.sql import Row

from jobrec.batch.connections import ensure_topics, spark_kafka_options
from jobrec.batch.delta_tables import run_concurrently, table_path
from jobrec.batch.online_evaluation import OnlineSettings, evaluate_online, topic_lists
from jobrec.schemas import tables as t
from jobrec.schemas.config import load_config
from jobrec.schemas.recommendation import NEW_USER_KEY, recommendation_message
from jobrec.streaming.producer import send_raw
from tests.integration.conftest import make_producer, pushed_samples, unique_name, write_config

H = timedelta(hours=1)
WINDOW_HOURS = 6

NOW = datetime.now(timezone.utc)
# 06:00 UTC three days ago, with microseconds: the table keeps them, a message only milliseconds
B = NOW.replace(hour=6, minute=0, second=0, microsecond=456789) - timedelta(days=3)
P = NOW - 2 * H  # a list whose 6-hour span is still open

# (user, generated_at, source, model_version, jobs best first, where: topic, table or both)
LISTS = [
    ("u-hit-2", B, "batch", "v1", "a1 a2 a3 a4", "both"),
    ("u-hit-1", B, "batch", "v1", "b1 b2 b3", "topic"),
    ("u-unlisted", B, "batch", "v1", "c1 c2", "topic"),
    ("u-late", B, "batch", "v1", "d1 d2", "topic"),
    ("u-newer", B, "batch", "v1", "e1 e2 e3", "topic"),
    ("u-newer", B + H, "fold-in", "v1", "e4 e2 e5", "topic"),
    ("u-view", B, "batch", "v1", "f1 f2", "topic"),
    ("u-fallback", B, "fallback", "popularity", "g1 g2 g3", "topic"),
    ("u-table", B, "batch", "v1", "h1 h2", "table"),
    ("u-fold-miss", B + 2 * H, "fold-in", "v1", "i1 i2", "topic"),
    ("u-next-day", B + 24 * H, "batch", "v2", "k1 k2", "topic"),
    ("u-pending", P, "batch", "v2", "m1 m2", "topic"),
    (NEW_USER_KEY, B, "fallback", "v1", "a1 b1", "topic"),  # the list for new users: no one's list, not evaluated
]

# (user, job, event type, occurred_at)
EVENTS = [
    ("u-hit-2", "a3", "click", B + H),  # rank 3, then rank 2: the hit's rank is 2
    ("u-hit-2", "a2", "save", B + 2 * H),
    ("u-hit-1", "b1", "apply", B + 5 * H),
    ("u-unlisted", "x9", "click", B + H),
    ("u-late", "d1", "click", B + 7 * H),  # after the 6-hour window
    ("u-newer", "e2", "click", B + 2 * H),  # after the fold-in list: counts for it (rank 2), not the batch list
    ("u-newer", "e1", "click", B + 3 * H),  # only on the older list, whose span ended at B + 1 h
    ("u-view", "f1", "view", B + H),  # views are not counted here
    ("u-fallback", "g3", "click", B + H / 2),
    ("u-table", "h2", "click", B + H),
    ("u-next-day", "k1", "click", B + 25 * H),
    ("u-next-day", "k2", "click", B + 20 * H),  # before the list was generated
    ("u-pending", "m1", "click", P + H / 2),  # a click, but the span is open: pending
]

# the outcome of each list, by hand from the two tables above: (user, source) -> (outcome, rank of the hit)
EXPECTED = {
    ("u-hit-2", "batch"): ("hit", 2),
    ("u-hit-1", "batch"): ("hit", 1),
    ("u-unlisted", "batch"): ("miss", None),
    ("u-late", "batch"): ("miss", None),
    ("u-newer", "batch"): ("miss", None),
    ("u-newer", "fold-in"): ("hit", 2),
    ("u-view", "batch"): ("miss", None),
    ("u-fallback", "fallback"): ("hit", 3),
    ("u-table", "batch"): ("hit", 2),
    ("u-fold-miss", "fold-in"): ("miss", None),
    ("u-next-day", "batch"): ("hit", 1),
    ("u-pending", "batch"): ("pending", None),
}


def expected_rates(per_model_version: bool = True) -> dict[tuple[str, str], tuple[int, int, int, float, float]]:
    """(source, model_version, or "all" when not `per_model_version`) -> (hits, decided, pending, hit rate, MRR),
    from EXPECTED in plain Python."""
    version = {(user, source): v for user, _, source, v, _, _ in LISTS}
    counts: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for (user, source), (outcome, rank) in EXPECTED.items():
        c = counts[(source, version[(user, source)] if per_model_version else "all")]
        c[0] += outcome == "hit"
        c[1] += outcome != "pending"
        c[2] += outcome == "pending"
        c[3] += 1 / rank if rank else 0.0
    return {k: (int(h), int(d), int(p), h / d, rr / d) for k, (h, d, p, rr) in counts.items()}


def test_hit_rates_of_a_scripted_stream_are_exact(spark, broker, pushgateway, tmp_path, request) -> None:
    name = unique_name(request)
    config = write_config(
        tmp_path,
        broker.bootstrap,
        name,
        online_evaluation={"event_types": ["click", "save", "apply"]},
        metrics={"pushgateway_url": pushgateway},
    )
    cfg = load_config(config, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)

    producer = make_producer(cfg)
    lists = [
        (user.encode(), recommendation_message(user, v, at, None, source, _items(jobs)).encode())
        for user, at, source, v, jobs, where in LISTS
        if where != "table"
    ]
    send_raw(producer, cfg.kafka.recommendations_topic, lists)
    producer.close()

    # the batch publish's table rows: its own DDL, generated_at with the microseconds the message drops
    table_rows = [
        (user, v, at, None, source, [(j, 1.0 / r, r) for r, j in enumerate(jobs.split(), 1)])
        for user, at, source, v, jobs, where in LISTS
        if where != "topic"
    ]
    # the events as the ingest writes them (the events table's DDL, received now): appended here rather than
    # sent through `jobrec ingest`, which would add a streaming query's start to the test's time
    received = datetime.now(timezone.utc)
    event_rows = [
        (f"e{i}", user, job, kind, at, received, cfg.kafka.clicks_topic, 0, i, 0)
        for i, (user, job, kind, at) in enumerate(EVENTS)
    ]
    # both tables at once: a new table's first commit is mostly the driver's fixed cost
    run_concurrently(
        partial(_write_table, spark, table_rows, cfg.storage.tables_root, t.RECOMMENDATIONS),
        partial(_write_table, spark, event_rows, cfg.storage.tables_root, t.EVENTS),
    )

    out = tmp_path / "report"
    done = _evaluate(config, out)
    assert done.returncode == 0, done.stderr[-3000:]

    table = _snapshot(spark, cfg.storage.tables_root)
    rows = {(r[t.USER_ID], r[t.SOURCE]): r for r in table}
    assert {k: (r[t.OUTCOME], r[t.HIT_RANK]) for k, r in rows.items()} == EXPECTED
    assert len(table) == len(EXPECTED)  # u-hit-2's two copies, on the topic and in the table, are one list
    assert all(r[t.WINDOW_HOURS] == WINDOW_HOURS for r in rows.values())
    # spans to the millisecond (a message's precision): the fold-in list ended the batch list's, the window u-late's
    assert rows[("u-newer", "batch")][t.SHOWN_UNTIL] == _naive(_ms(B + H))
    assert rows[("u-late", "batch")][t.SHOWN_UNTIL] == _naive(_ms(B) + WINDOW_HOURS * H)
    assert rows[("u-hit-2", "batch")][t.HIT_JOB_ID] == "a2"
    assert rows[("u-table", "batch")][t.JOB_IDS] == ["h1", "h2"]

    # the printed table, the report's numbers and the pushed gauges: the rates computed here
    expected = expected_rates()
    printed = {
        (cells[0], cells[1]): cells[2:]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| source")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    results = json.loads((out / "results.json").read_text())
    reported = {(r["source"], r["model_version"]): r for r in results["per_model_version"]}
    pushed = pushed_samples(pushgateway, "jobrec-online-evaluation")
    assert set(reported) == set(expected)
    for (source, version), (hits, decided, pending, rate, mrr) in expected.items():
        assert printed[(source, version)] == [str(decided), str(hits), f"{rate:.4f}", f"{mrr:.4f}", str(pending)]
        r = reported[(source, version)]
        assert (r["hits"], r["decided"], r["pending"]) == (hits, decided, pending)
        assert abs(r["hit_rate"] - rate) < 1e-12 and abs(r["mrr"] - mrr) < 1e-12
        labels = (("model_version", version), ("source", source))
        assert abs(pushed[("jobrec_online_hit_rate", labels)] - rate) < 1e-12
        assert abs(pushed[("jobrec_online_mrr", labels)] - mrr) < 1e-12
        assert pushed[("jobrec_online_lists", (*labels[:1], ("outcome", "pending"), labels[1]))] == pending
    for (source, version), (hits, decided, pending, rate, mrr) in expected_rates(per_model_version=False).items():
        assert printed[(source, version)] == [str(decided), str(hits), f"{rate:.4f}", f"{mrr:.4f}", str(pending)]
    # per day: the first day's batch lists against the next day's
    first_day = B.replace(hour=0, minute=0, second=0, microsecond=0)
    per_bucket = {(r["source"], r["model_version"], r["bucket_start"]): r for r in results["per_bucket"]}
    assert per_bucket[("batch", "v1", first_day.isoformat())]["hit_rate"] == expected[("batch", "v1")][3]
    assert per_bucket[("batch", "v2", (first_day + 24 * H).isoformat())]["hit_rate"] == 1.0
    assert "![hit rate and MRR over time](hit_rate.png)" in (out / "report.md").read_text()
    assert (out / "hit_rate.png").stat().st_size > 5000

    # running again (the job itself, in this process: a second JVM would double the test's time) changes nothing:
    # decided rows are final, the pending one is still pending
    o = cfg.online_evaluation
    settings = OnlineSettings(WINDOW_HOURS, o.event_types, o.lateness_minutes, o.days, o.bucket_hours)
    on_topic = topic_lists(spark, spark_kafka_options(cfg.kafka, broker.bootstrap), cfg.kafka.recommendations_topic)
    run = evaluate_online(spark, cfg.storage.tables_root, on_topic, settings, datetime.now(timezone.utc))
    assert (run.lists_read, run.decided, run.pending) == (1, 0, 1)
    assert _snapshot(spark, cfg.storage.tables_root) == table


def _write_table(spark, rows: list[tuple], tables_root: str, name: str) -> None:
    spark.createDataFrame(rows, t.TABLE_DDL[name]).write.format("delta").save(table_path(tables_root, name))


def _items(jobs: str) -> list[dict[str, object]]:
    return [{"job_id": j, "score": 1.0 / r, "rank": r} for r, j in enumerate(jobs.split(), 1)]


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _naive(moment: datetime) -> datetime:
    # a timestamp collected from Spark is naive local time
    return moment.astimezone().replace(tzinfo=None)


def _snapshot(spark, tables_root: str) -> list[Row]:
    table = spark.read.format("delta").load(table_path(tables_root, t.ONLINE_EVALUATION))
    return sorted(table.collect(), key=lambda r: (r[t.USER_ID], r[t.GENERATED_AT]))


def _evaluate(config, out) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "jobrec.streaming.cli",
            "--config",
            str(config),
            "evaluate",
            "--online",
            "--window-hours",
            str(WINDOW_HOURS),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
