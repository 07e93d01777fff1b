"""The job catalog end to end on the real broker, Spark and Delta: the seed's jobs.csv loaded with its
misspelt categories fixed, job events through the ingest into the jobs table, and closed or expired jobs kept
out of every list published after the event: by the speed layer (fold-in and fallback) and by the batch publish.

Expected values are computed here from the CSV files, not taken from the code under test.
"""

from __future__ import annotations

import contextlib
import csv
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from jobrec.batch.backfill import CsvLayout, load_counts_csv
from jobrec.batch.connections import ensure_topics, python_client_args
from jobrec.batch.core.catalog import CategoryNormaliser
from jobrec.batch.delta_tables import table_path
from jobrec.batch.jobs_table import load_jobs_csv
from jobrec.batch.processes import als_params, publish_model
from jobrec.batch.train import train_model, write_model
from jobrec.schemas import tables as t
from jobrec.schemas.config import load_config
from jobrec.schemas.recommendation import NEW_USER_KEY
from jobrec.streaming.clients import RecommendationsConsumer
from jobrec.streaming.job_events import start_job_events
from jobrec.streaming.processes import ingest_settings
from jobrec.streaming.producer import make_click_event, make_job_event, send_click_events, send_job_events, send_raw
from jobrec.streaming.speed import SpeedStats
from tests.integration.conftest import REPO, SEED_DIR, make_producer, running_speed_layer, write_config

CAP = 3


def seed_categories() -> dict[str, str]:
    """job -> category as the test reads jobs.csv: the one known misspelling fixed by hand."""
    with (SEED_DIR / "jobs.csv").open(newline="") as f:
        return {
            r["jobID"]: ("Retail" if r["job_category"] == "Retial" else r["job_category"]) for r in csv.DictReader(f)
        }


def popular_capped(history: dict[str, set[str]], category: dict[str, str], hidden: set[str], n: int) -> list[str]:
    """The list for new users, worked out here: jobs by how many users clicked them (then job id), hidden ones
    left out, at most CAP of a category."""
    users_per_job = Counter(job for jobs in history.values() for job in jobs)
    taken: list[str] = []
    for job, _ in sorted(users_per_job.items(), key=lambda kv: (-kv[1], kv[0])):
        if job not in hidden and sum(category[j] == category[job] for j in taken) < CAP:
            taken.append(job)
    return taken[:n]


def seed_history() -> dict[str, set[str]]:
    by_user: dict[str, set[str]] = {}
    with (SEED_DIR / "job_clicks.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            if int(r["Clicks"]) > 0:
                by_user.setdefault(r["userId"], set()).add(r["jobId"])
    return by_user


@pytest.fixture(scope="module")
def catalog_pipeline(spark, broker, tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalog")
    config = write_config(
        folder,
        broker.bootstrap,
        "catalog",
        kafka={"jobs_topic": "catalog-job-events"},
        publish={"max_per_category": CAP},
        fold_in={"model_check_seconds": 600},
    )
    cfg = load_config(config, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)
    load_counts_csv(
        spark,
        str(SEED_DIR / "job_clicks.csv"),
        CsvLayout(),
        cfg.storage.tables_root,
        "click",
        cfg.ingest.weights,
        binary=True,
    )
    report = load_jobs_csv(
        spark,
        str(SEED_DIR / "jobs.csv"),
        cfg.storage.tables_root,
        CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases),
    )
    model = train_model(spark, cfg.storage.tables_root, als_params(cfg))
    write_model(spark, cfg.storage.tables_root, model, t.STATUS_PUBLISHED)
    return cfg, model, report, config


def read_lists(cfg) -> dict[str, dict]:
    """Every message on the recommendations topic, in order: user -> the newest one (after each call's end)."""
    consumer = RecommendationsConsumer(
        topic=cfg.kafka.recommendations_topic, **python_client_args(cfg.kafka, cfg.kafka.bootstrap_servers)
    )
    try:
        deadline = time.monotonic() + 30
        while not consumer.caught_up() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=500)
        return dict(consumer.lists)
    finally:
        consumer.close()


def test_jobs_csv_load_fixes_the_misspelt_category(spark, catalog_pipeline) -> None:
    cfg, _, report, _ = catalog_pipeline
    with (SEED_DIR / "jobs.csv").open(newline="") as f:
        raw = Counter(r["job_category"] for r in csv.DictReader(f))
    assert report.categories_fixed == raw["Retial"] == 789
    assert report.jobs_inserted == sum(raw.values())
    table = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.JOBS))
    counts = {r[t.CATEGORY]: r["count"] for r in table.groupBy(t.CATEGORY).count().collect()}
    assert "Retial" not in counts and counts["Retail"] == raw["Retail"] + raw["Retial"]
    assert {r[t.STATUS] for r in table.select(t.STATUS).distinct().collect()} == {t.JOB_OPEN}
    # a second load of the same file changes nothing
    again = load_jobs_csv(
        spark,
        str(SEED_DIR / "jobs.csv"),
        cfg.storage.tables_root,
        CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases),
    )
    assert (again.jobs_inserted, again.categories_updated) == (0, 0)
    assert table.count() == sum(raw.values())


def test_a_closed_or_expired_job_is_in_no_list_published_after_the_event(spark, catalog_pipeline) -> None:
    cfg, model, _, config = catalog_pipeline
    category = seed_categories()
    history = seed_history()

    # 1. a batch publish with the open catalog: the category cap holds, and we find the most listed jobs
    publish_model(spark, cfg, cfg.kafka.bootstrap_servers, model.model_version)
    before = read_lists(cfg)
    new_user = before.pop(NEW_USER_KEY)
    assert new_user["source"] == t.SOURCE_FALLBACK
    assert [i["job_id"] for i in new_user["items"]] == popular_capped(history, category, set(), cfg.publish.top_n)
    listed = Counter(i["job_id"] for m in before.values() for i in m["items"])
    for m in before.values():
        per_category = Counter(category[i["job_id"]] for i in m["items"])
        assert max(per_category.values()) <= CAP, m
        assert len(m["items"]) == cfg.publish.top_n
    closing, expiring = [job for job, _ in listed.most_common(2)]
    assert listed[closing] > 20 and listed[expiring] > 20
    # users whose list has the job to close near the top, so their next fold-in list would have it too
    probes = sorted(u for u, m in before.items() if closing in [i["job_id"] for i in m["items"][:3]])[:5]
    assert probes

    stats = SpeedStats()
    producer = make_producer(cfg)
    with running_speed_layer(cfg, stats=stats), contextlib.closing(producer):

        def fold_in_lists(users: list[str]) -> dict[str, list[str]]:
            """Click (a view of a job the user already has) and wait for each user's new fold-in list."""
            clicks = {u: make_click_event(u, sorted(history[u])[0], "view") for u in users}
            send_click_events(producer, cfg.kafka.clicks_topic, clicks.values())
            deadline, got = time.monotonic() + 30, {}
            while time.monotonic() < deadline and len(got) < len(users):
                for u, m in read_lists(cfg).items():
                    if u in clicks and m["newest_event_at"] == clicks[u]["occurred_at"]:
                        got[u] = m
            assert set(got) == set(users), f"no fold-in list for {set(users) - set(got)}"
            assert {m["source"] for m in got.values()} == {t.SOURCE_FOLD_IN}
            return {u: [i["job_id"] for i in m["items"]] for u, m in got.items()}

        # 2. the control: before the close, fold-in lists still have the job (so the check below can fail)
        assert any(closing in jobs for jobs in fold_in_lists(probes).values())

        # 3. job events: close one job, post one that expires in a few seconds, a late post of the closed job
        # (older than the close: must not reopen it), a new job in a misspelt category, and a malformed event
        now = datetime.now(timezone.utc)
        expires_at = now + timedelta(seconds=4)
        events = [
            make_job_event(closing, "closed", occurred_at=now),
            make_job_event(closing, "posted", category="IT", occurred_at=now - timedelta(minutes=5)),
            make_job_event(expiring, "posted", expires_at=expires_at, occurred_at=now),
            make_job_event("new-job-1", "posted", category=" retial ", occurred_at=now),
        ]
        send_job_events(producer, cfg.kafka.jobs_topic, events)
        send_raw(producer, cfg.kafka.jobs_topic, [(b"x", b'{"job_id": "j", "action": "reopened"}')])
        deadline = time.monotonic() + 30
        while stats.job_events + stats.job_events_rejected < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (stats.job_events, stats.job_events_rejected) == (4, 1)

        # 4. fold-in lists computed after the close do not have it, and are still full
        after = fold_in_lists(probes)
        for jobs in after.values():
            assert closing not in jobs and len(jobs) == cfg.publish.top_n
            assert max(Counter(category[j] for j in jobs).values()) <= CAP

        # 5. a new user whose only click is on the new job gets a fallback list: Retail first (the job's
        # category, fixed from " retial "), capped, then popular jobs of other categories
        click = make_click_event("catalog-new-user", "new-job-1", "apply")
        send_click_events(producer, cfg.kafka.clicks_topic, [click])
        deadline, fallback = time.monotonic() + 30, None
        while time.monotonic() < deadline and fallback is None:
            fallback = read_lists(cfg).get("catalog-new-user")
        assert fallback is not None and fallback["source"] == t.SOURCE_FALLBACK
        jobs = [i["job_id"] for i in fallback["items"]]
        assert [category[j] for j in jobs[:CAP]] == ["Retail"] * CAP
        assert "Retail" not in [category[j] for j in jobs[CAP:]]
        assert closing not in jobs and len(jobs) == cfg.publish.top_n

    # 6. the ingest applies the job events to the Delta jobs table and dead-letters the malformed one; and the
    # rows of a jobs file sent with `jobs load --to-topic` (the way to load one while an ingest runs)
    jobs_file = config.parent / "more-jobs.csv"
    jobs_file.write_text("jobID,job_category\nfile-job-1,Retial\nfile-job-2,IT\n,Sales\n")
    sent = subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config)]
        + ["jobs", "load", "--to-topic", str(jobs_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert "3 rows read (1 without a job id): 2 posted events acknowledged" in sent.stdout
    start_job_events(spark, ingest_settings(cfg, cfg.kafka.bootstrap_servers), once=True).awaitTermination(300)
    jobs = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.JOBS))
    state = {r[t.JOB_ID]: r for r in jobs.where(jobs[t.JOB_ID].isin(closing, expiring, "new-job-1")).collect()}
    assert state[closing][t.STATUS] == t.JOB_CLOSED  # the late post did not reopen it
    assert state[closing][t.CATEGORY] == "IT"  # but its category, newer than the CSV's, was taken
    assert state[expiring][t.STATUS] == t.JOB_OPEN and state[expiring][t.EXPIRES_AT] is not None
    assert state["new-job-1"][t.CATEGORY] == "Retail" and state["new-job-1"][t.RAW_CATEGORY] == " retial "
    from_file = {r[t.JOB_ID]: (r[t.CATEGORY], r[t.STATUS]) for r in jobs.where("job_id LIKE 'file-job-%'").collect()}
    assert from_file == {"file-job-1": ("Retail", t.JOB_OPEN), "file-job-2": ("IT", t.JOB_OPEN)}
    dead = spark.read.format("delta").load(table_path(cfg.storage.tables_root, t.DEAD_LETTERS))
    reasons = [r[t.REASON_CODE] for r in dead.where(dead[t.KAFKA_TOPIC] == cfg.kafka.jobs_topic).collect()]
    assert reasons == ["missing_field"]

    # 7. a batch publish after the expiry: neither job is in any list, and every list is still full
    time.sleep(max(0.0, (expires_at - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    # (scored on the driver this time: the catalog rules hold on both publish paths)
    n = publish_model(spark, cfg, cfg.kafka.bootstrap_servers, model.model_version, on_driver=True)
    latest = read_lists(cfg)
    batch_lists = {u: m for u, m in latest.items() if m["source"] == t.SOURCE_BATCH}
    assert len(batch_lists) == n == len(before)
    # the list for new users leaves them out too
    hidden = {closing, expiring}
    assert [i["job_id"] for i in latest[NEW_USER_KEY]["items"]] == popular_capped(history, category, hidden, 10)
    for m in batch_lists.values():
        jobs = [i["job_id"] for i in m["items"]]
        assert closing not in jobs and expiring not in jobs and len(jobs) == cfg.publish.top_n
