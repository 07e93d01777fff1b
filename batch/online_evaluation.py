"""`jobrec evaluate --online`: how the lists served to users fared, evaluated periodically into the
online_evaluation table (the rule is `batch.core.online_eval`'s; this module reads, attributes and writes).

The lists come from everywhere they are kept: the recommendations topic from its start (batch, fold-in and fallback
lists; a compacted topic keeps recent history until compaction), the recommendations table (every batch publish,
kept after compaction) and online_evaluation's own rows (a pending list's jobs are kept there, so compaction cannot
lose a list before it is decided). A list's span ends at the user's next list among all of these, or after the
window. The lists not decided yet go to the driver with their users' interactions with their jobs (the events
table, semi-joined in Spark), and their outcomes are merged into online_evaluation by (user_id, generated_at,
source, window_hours): a decided row is final and a pending one is updated, so a re-run changes nothing decided and
each list has one row per window. One run holds ~ the lists published since the last run on the driver.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pyspark.sql import Column, DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F

from jobrec.batch.connections import spark_kafka_options
from jobrec.batch.core.online_eval import (
    Interaction,
    ListOutcome,
    OutcomeGroup,
    ServedList,
    attribute_lists,
    shown_until,
)
from jobrec.batch.delta_tables import ensure_delta_table, read_delta_table
from jobrec.batch.online_report import OnlineReport, summarise_groups, write_online_report
from jobrec.batch.table_writers import EVALUATE, hold_writer_lock
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import EPOCH, epoch_micros
from jobrec.schemas.config import Config
from jobrec.schemas.recommendation import NEW_USER_KEY

log = logging.getLogger(__name__)

# a list's identity: one user's list of one source at one instant (to the millisecond, the message's precision)
LIST_KEY = (t.USER_ID, t.GENERATED_AT, t.SOURCE)
LIST_COLUMNS = (*LIST_KEY, t.MODEL_VERSION, t.JOB_IDS)
ROW_KEY = (*LIST_KEY, t.WINDOW_HOURS)
NEXT_GENERATED_AT = "next_generated_at"
BUCKET_START = "bucket_start"
LISTS = "lists"

# the fields of a recommendation message this job reads (schemas/recommendation.v1.json)
MESSAGE_DDL = (
    f"{t.USER_ID} STRING, {t.MODEL_VERSION} STRING, {t.GENERATED_AT} STRING, {t.SOURCE} STRING, "
    f"{t.ITEMS} ARRAY<STRUCT<{t.JOB_ID}: STRING, {t.SCORE}: DOUBLE, {t.RANK}: INT>>"
)


@dataclass(frozen=True)
class OnlineSettings:
    """online_evaluation's config (its keys, with the window in hours as --window-hours may set it)."""

    window_hours: float
    event_types: tuple[str, ...]
    lateness_minutes: float
    days: float
    bucket_hours: float


@dataclass(frozen=True)
class OnlineRun:
    """What one run did: lists in reach (the period and pending ones), decided by this run, still pending; as_of:
    the time up to which the events were taken as complete."""

    lists_read: int
    decided: int
    pending: int
    as_of: datetime


def _utc(micros: int) -> datetime:
    """A Spark timestamp read as microseconds (unix_micros: no time zone on the way) as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)


def _at(moment: datetime) -> Column:
    return F.timestamp_micros(F.lit(epoch_micros(moment)))


def _millis(column: str) -> Column:
    # the table keeps microseconds, a message milliseconds: the same batch list must get the same key from both
    return F.timestamp_millis(F.unix_millis(F.col(column)))


def _job_ids_by_rank(items: str) -> Column:
    # (rank, job_id) structs sort by rank first
    ranked = F.transform(F.col(items), lambda i: F.struct(i[t.RANK].alias(t.RANK), i[t.JOB_ID].alias(t.JOB_ID)))
    return F.transform(F.array_sort(ranked), lambda i: i[t.JOB_ID])


def topic_lists(spark: SparkSession, kafka_options: dict[str, str], topic: str) -> DataFrame:
    """Every list on the recommendations topic now (LIST_COLUMNS); records that are not lists are left out."""
    raw = (
        spark.read.format("kafka")
        .options(**kafka_options)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        # compaction leaves gaps in the offsets of a compacted topic: they are expected, not lost data
        .option("failOnDataLoss", "false")
        .load()
    )
    parsed = raw.select(F.from_json(F.col("value").cast("string"), MESSAGE_DDL).alias("m")).select("m.*")
    lists = parsed.where(F.col(t.USER_ID).isNotNull() & F.col(t.ITEMS).isNotNull()).select(
        t.USER_ID,
        F.to_timestamp(t.GENERATED_AT).alias(t.GENERATED_AT),
        t.SOURCE,
        t.MODEL_VERSION,
        _job_ids_by_rank(t.ITEMS).alias(t.JOB_IDS),
    )
    return lists.where(F.col(t.GENERATED_AT).isNotNull() & F.col(t.SOURCE).isNotNull())


def table_lists(recommendations: DataFrame) -> DataFrame:
    """The recommendations table's lists (LIST_COLUMNS), generated_at to the millisecond."""
    return recommendations.select(
        t.USER_ID,
        _millis(t.GENERATED_AT).alias(t.GENERATED_AT),
        t.SOURCE,
        t.MODEL_VERSION,
        _job_ids_by_rank(t.ITEMS).alias(t.JOB_IDS),
    )


def with_next_list(lists: DataFrame) -> DataFrame:
    """`lists` with next_generated_at: the generated_at of the same user's next list of any source (null: none)."""
    starts = lists.select(t.USER_ID, t.GENERATED_AT).distinct()
    by_user = Window.partitionBy(t.USER_ID).orderBy(t.GENERATED_AT)
    starts = starts.withColumn(NEXT_GENERATED_AT, F.lead(t.GENERATED_AT).over(by_user))
    return lists.join(starts, [t.USER_ID, t.GENERATED_AT])


def evaluation_as_of(events: DataFrame, now: datetime, lateness: timedelta) -> datetime:
    """The time up to which the events are taken as complete: `lateness` before now, and no later than the newest
    event the ingest has received (an ingest that is down or behind holds lists pending, not missed)."""
    newest = events.agg(F.unix_micros(F.max(t.RECEIVED_AT))).collect()[0][0]
    as_of = now - lateness
    return as_of if newest is None else min(as_of, _utc(newest))


def _served(rows: Iterable[Row]) -> Iterator[ServedList]:
    for r in rows:
        yield ServedList(r[0], _utc(r[1]), r[2], r[3], tuple(r[4]), None if r[5] is None else _utc(r[5]))


def evaluate_online(
    spark: SparkSession,
    tables_root: str,
    lists_on_topic: DataFrame,
    settings: OnlineSettings,
    now: datetime,
) -> OnlineRun:
    """Attribute every list of the period not decided yet and merge the outcomes into online_evaluation."""
    window = timedelta(hours=settings.window_hours)
    path = ensure_delta_table(spark, tables_root, t.ONLINE_EVALUATION)
    evaluated = (
        spark.read.format("delta").load(path).where(F.col(t.WINDOW_HOURS) == F.lit(settings.window_hours)).cache()
    )
    try:
        # the period, reaching back to the oldest list still pending (runs further apart than `days` lose none)
        pending_micros = (
            evaluated.where(F.col(t.OUTCOME) == t.OUTCOME_PENDING)
            .agg(F.unix_micros(F.min(t.GENERATED_AT)))
            .collect()[0][0]
        )
        since = now - timedelta(days=settings.days)
        since = since if pending_micros is None else min(since, _utc(pending_micros))
        recommendations = read_delta_table(spark, tables_root, t.RECOMMENDATIONS)
        lists = (
            lists_on_topic.unionByName(table_lists(recommendations))
            .unionByName(evaluated.select(*LIST_COLUMNS))
            .where((F.col(t.GENERATED_AT) >= _at(since)) & (F.col(t.USER_ID) != NEW_USER_KEY))
            .dropDuplicates(list(LIST_KEY))
        )
        decided = evaluated.where(F.col(t.OUTCOME) != t.OUTCOME_PENDING).select(*LIST_KEY)
        undecided = with_next_list(lists).join(decided, list(LIST_KEY), "left_anti").cache()
        try:
            served = list(
                _served(
                    undecided.select(
                        t.USER_ID,
                        F.unix_micros(t.GENERATED_AT),
                        t.SOURCE,
                        t.MODEL_VERSION,
                        t.JOB_IDS,
                        F.unix_micros(NEXT_GENERATED_AT),
                    ).collect()
                )
            )
            events = read_delta_table(spark, tables_root, t.EVENTS)
            as_of = evaluation_as_of(events, now, timedelta(minutes=settings.lateness_minutes))
            if not served:
                return OnlineRun(0, 0, 0, as_of)
            first = min(s.generated_at for s in served)
            last = max(shown_until(s.generated_at, s.next_generated_at, window) for s in served)
            pairs = undecided.select(t.USER_ID, F.explode(t.JOB_IDS).alias(t.JOB_ID)).distinct()
            wanted = events.where(
                F.col(t.EVENT_TYPE).isin(*settings.event_types)
                & (F.col(t.OCCURRED_AT) >= _at(first))
                & (F.col(t.OCCURRED_AT) < _at(last))
            ).join(pairs, [t.USER_ID, t.JOB_ID], "left_semi")
            interactions = [
                Interaction(r[0], r[1], r[2], _utc(r[3]))
                for r in wanted.select(t.USER_ID, t.JOB_ID, t.EVENT_TYPE, F.unix_micros(t.OCCURRED_AT)).collect()
            ]
        finally:
            undecided.unpersist()
        outcomes = attribute_lists(served, interactions, window, as_of, settings.event_types)
        merge_outcomes(spark, path, outcomes, settings.window_hours, now)
    finally:
        evaluated.unpersist()
    pending = sum(o.outcome == t.OUTCOME_PENDING for o in outcomes)
    log.info(
        "online evaluation: %d lists not decided before, %d decided now, %d pending (events complete to %s)",
        len(outcomes),
        len(outcomes) - pending,
        pending,
        as_of.isoformat(),
    )
    return OnlineRun(len(outcomes), len(outcomes) - pending, pending, as_of)


def merge_outcomes(
    spark: SparkSession, path: str, outcomes: list[ListOutcome], window_hours: float, evaluated_at: datetime
) -> None:
    """Insert new lists' rows; update a pending row that got decided or a new span end. Decided rows stay as they
    are: a list decided once keeps its outcome even when its user's next list has since been compacted away."""
    from delta.tables import DeltaTable

    rows = [
        (
            o.served.user_id,
            o.served.generated_at,
            o.served.source,
            float(window_hours),
            o.served.model_version,
            list(o.served.job_ids),
            o.shown_until,
            o.outcome,
            o.hit_rank,
            o.hit_job_id,
            evaluated_at,
        )
        for o in outcomes
    ]
    if not rows:
        return
    source = spark.createDataFrame(rows, t.ONLINE_EVALUATION_DDL)
    changed = (
        f"t.{t.OUTCOME} = '{t.OUTCOME_PENDING}' AND "
        f"(s.{t.OUTCOME} <> '{t.OUTCOME_PENDING}' OR s.{t.SHOWN_UNTIL} <> t.{t.SHOWN_UNTIL})"
    )
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(source.alias("s"), " AND ".join(f"t.{c} = s.{c}" for c in ROW_KEY))
        .whenMatchedUpdateAll(condition=changed)
        .whenNotMatchedInsertAll()
        .execute()
    )


def outcome_groups(
    spark: SparkSession, tables_root: str, window_hours: float, since: datetime, bucket_hours: float
) -> list[OutcomeGroup]:
    """online_evaluation's rows of this window generated since `since`, counted per (source, model_version, time
    bucket, outcome, rank of the hit): buckets of bucket_hours from the Unix epoch, UTC."""
    width = bucket_hours * 3600.0
    rows = read_delta_table(spark, tables_root, t.ONLINE_EVALUATION).where(
        (F.col(t.WINDOW_HOURS) == F.lit(window_hours)) & (F.col(t.GENERATED_AT) >= _at(since))
    )
    bucket = F.floor(F.unix_micros(t.GENERATED_AT) / F.lit(width * 1e6)) * F.lit(int(round(width * 1e6)))
    grouped = (
        rows.groupBy(t.SOURCE, t.MODEL_VERSION, bucket.alias(BUCKET_START), t.OUTCOME, t.HIT_RANK)
        .agg(F.count(F.lit(1)).alias(LISTS))
        .collect()
    )
    return [
        OutcomeGroup(
            r[t.SOURCE],
            r[t.MODEL_VERSION],
            _utc(int(r[BUCKET_START])),
            r[t.OUTCOME],
            r[t.HIT_RANK],
            int(r[LISTS]),
        )
        for r in grouped
    ]


def run_online_evaluation(
    cfg: Config, bootstrap: str, out_dir: Path, window_hours: float | None = None, now: datetime | None = None
) -> tuple[OnlineRun, OnlineReport, Path]:
    """`jobrec evaluate --online`: evaluate the lists not decided yet (holding the evaluate writer lock), then
    report the period's outcomes in `out_dir`. Returns the run, the report's counts and report.md's path."""
    from jobrec.batch.processes import spark_session

    o = cfg.online_evaluation
    settings = OnlineSettings(window_hours or o.window_hours, o.event_types, o.lateness_minutes, o.days, o.bucket_hours)
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(days=settings.days)
    with (
        hold_writer_lock(cfg.storage.checkpoints_root, EVALUATE, "evaluate --online"),
        spark_session(cfg, "evaluate-online") as spark,
    ):
        on_topic = topic_lists(spark, spark_kafka_options(cfg.kafka, bootstrap), cfg.kafka.recommendations_topic)
        run = evaluate_online(spark, cfg.storage.tables_root, on_topic, settings, now)
        groups = outcome_groups(spark, cfg.storage.tables_root, settings.window_hours, since, settings.bucket_hours)
    report = summarise_groups(groups)
    facts = {
        "window_hours": settings.window_hours,
        "event_types": list(settings.event_types),
        "bucket_hours": settings.bucket_hours,
        "since": since.isoformat(timespec="seconds"),
        "evaluated_at": now.isoformat(timespec="seconds"),
        "as_of": run.as_of.isoformat(timespec="seconds"),
        "run": {"lists_not_decided_before": run.lists_read, "decided_now": run.decided, "pending": run.pending},
    }
    return run, report, write_online_report(out_dir, report, facts)
