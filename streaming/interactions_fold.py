"""Fold the events table into interactions, exactly once, outside the ingest's micro-batches.

Why not in the micro-batch: a MERGE into interactions costs about 2 s whatever its size (materialise the source,
find the touched files, write, commit; measured with `jobrec bench ingest`), more than the rest of a 1,000-event
batch together. The micro-batch now only appends events (and dead letters); every `ingest.fold_seconds` the
events committed since the last fold are counted into interactions in one MERGE, so that cost is paid once per
fold, not once per batch. Readers of interactions (the retrain, a starting speed instance) see clicks up to that
much later; the events table is as fresh as before.

Exactly once: the fold position is the newest events version counted, kept in interactions itself as Delta's
transaction pair (FOLD_APP_ID, that version). A fold reads the rows inserted in events versions (position,
newest] from Delta's change data feed and MERGEs their counts with the pair (FOLD_APP_ID, newest): the counts and
the new position commit together. A crash before that commit leaves the position where it was (the same versions
are folded again); after it, the next fold starts after `newest`. Compactions of events change no data and add no
rows to the feed.

The position is set when the ingest starts (`set_fold_position`): on new tables at events' first version; on
tables the ingest wrote before folds existed (each micro-batch MERGEd its own counts) at events' current version,
since everything in events then is counted already.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobrec.batch.delta_tables import idempotent_writes, latest_version, table_path
from jobrec.batch.interactions_table import aggregate_interactions, merge_interactions
from jobrec.schemas import tables as t
from jobrec.streaming.checkpoint_guard import CheckpointMismatch, ingest_versions, table_transactions

log = logging.getLogger(__name__)

FOLD_APP_ID = "jobrec-fold:events"
CHANGE_TYPE = "_change_type"


@dataclass(frozen=True)
class FoldReport:
    """What one fold counted: events versions first..last and the (user, job) pairs their events touched."""

    first_version: int
    last_version: int
    pairs_inserted: int
    pairs_updated: int
    seconds: float

    def describe(self) -> str:
        return (
            f"folded events versions {self.first_version}-{self.last_version} into interactions: "
            f"{self.pairs_inserted} new and {self.pairs_updated} updated (user, job) pairs in "
            f"{self.seconds:.2f} s"
        )


def fold_position(spark: SparkSession, tables_root: str) -> int | None:
    """The newest events version counted in interactions; None: no fold position yet (or no interactions table)."""
    from delta.tables import DeltaTable

    path = table_path(tables_root, t.INTERACTIONS)
    if not DeltaTable.isDeltaTable(spark, path):
        return None
    return table_transactions(spark, {t.INTERACTIONS: path})[t.INTERACTIONS].get(FOLD_APP_ID)


def set_fold_position(spark: SparkSession, tables_root: str) -> int:
    """Give interactions a fold position if it has none (see the module's docstring); return the position. Called
    by the ingest at start, before its query writes anything, so events' current version is stable."""
    interactions = table_path(tables_root, t.INTERACTIONS)
    events = table_path(tables_root, t.EVENTS)
    transactions = table_transactions(spark, {t.EVENTS: events, t.INTERACTIONS: interactions})
    position = transactions[t.INTERACTIONS].get(FOLD_APP_ID)
    if position is not None:
        return position
    # a micro-batch of the ingest before folds whose events committed and whose MERGE did not (a crash between
    # them): that ingest would have redone the MERGE on restart; this one would never count those events
    merged = transactions[t.INTERACTIONS]
    for app_id, (batch, _) in ingest_versions({t.EVENTS: transactions[t.EVENTS]}).items():
        if merged.get(app_id, -1) < batch:
            raise CheckpointMismatch(
                f"events holds batch {batch} of {app_id} and interactions only batch {merged.get(app_id)}: either "
                "a micro-batch of an ingest from before interactions were folded was cut short (run that release's "
                "`jobrec ingest --once` to finish it, then start this one), or the interactions table was replaced "
                "(restore it, e.g. with Delta RESTORE); folding now would leave those events uncounted"
            )
    position = latest_version(spark, events)
    # an empty commit that only records the pair
    (
        spark.createDataFrame([], t.TABLE_DDL[t.INTERACTIONS])
        .write.format("delta")
        .mode("append")
        .option("txnAppId", FOLD_APP_ID)
        .option("txnVersion", position)
        .save(interactions)
    )
    log.info("interactions: folds of events start after events version %d", position)
    return position


def fold_events(spark: SparkSession, tables_root: str, weights: Mapping[str, float]) -> FoldReport | None:
    """Count the events committed since the fold position into interactions, with the new position in the same
    commit; None when there was nothing new."""
    position = fold_position(spark, tables_root)
    if position is None:
        raise RuntimeError(f"{table_path(tables_root, t.INTERACTIONS)} has no fold position; the ingest sets it")
    events_path = table_path(tables_root, t.EVENTS)
    newest = latest_version(spark, events_path)
    if newest <= position:
        return None
    started = time.perf_counter()
    inserted = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", position + 1)
        .option("endingVersion", newest)
        .load(events_path)
        .where(F.col(CHANGE_TYPE) == "insert")
    )
    updates = aggregate_interactions(inserted, weights)
    with idempotent_writes(spark, FOLD_APP_ID, newest):
        metrics = merge_interactions(spark, updates, table_path(tables_root, t.INTERACTIONS))
    if fold_position(spark, tables_root) != newest:
        # versions with no inserted row (compactions only): a MERGE of nothing may commit nothing, and the
        # position must still move on
        with idempotent_writes(spark, FOLD_APP_ID, newest):
            spark.createDataFrame([], t.TABLE_DDL[t.INTERACTIONS]).write.format("delta").mode("append").save(
                table_path(tables_root, t.INTERACTIONS)
            )
    report = FoldReport(
        first_version=position + 1,
        last_version=newest,
        pairs_inserted=int(metrics.get("num_inserted_rows", 0)),
        pairs_updated=int(metrics.get("num_updated_rows", 0)),
        seconds=time.perf_counter() - started,
    )
    log.info("%s", report.describe())
    return report


class PeriodicFold:
    """Folds at most every `every_seconds`, called from the ingest's monitoring loop. A failed fold is logged and
    tried again at the next turn (the position did not move, nothing is lost); the ingest goes on meanwhile."""

    def __init__(
        self,
        spark: SparkSession,
        tables_root: str,
        weights: Mapping[str, float],
        every_seconds: float,
        *,
        on_fold: Callable[[FoldReport], None] = lambda report: None,
        on_failure: Callable[[], None] = lambda: None,
    ):
        self.spark = spark
        self.tables_root = tables_root
        self.weights = dict(weights)
        self.every_seconds = every_seconds
        self.on_fold = on_fold
        self.on_failure = on_failure
        self.last_try = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last_try < self.every_seconds:
            return
        self.last_try = time.monotonic()
        try:
            self.fold()
        except Exception:  # noqa: BLE001 - the next turn tries again from the same position
            self.on_failure()
            log.exception("folding events into interactions failed; trying again in %.0f s", self.every_seconds)

    def fold(self) -> FoldReport | None:
        report = fold_events(self.spark, self.tables_root, self.weights)
        if report is not None:
            self.on_fold(report)
        return report
