"""Fold events into the `interactions` table: one row per (user, job) with counts per event type.

Used by the stream (each micro-batch's new events) and by the CSV backfill. The MERGE adds counts, so it must
run once per batch: callers wrap it in `idempotent_writes` with the batch's id.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobrec.schemas import tables as t
from jobrec.schemas.click_event import EVENT_TYPES


def strength_expr(weights: Mapping[str, float], prefix: str = "") -> Column:
    """Weighted strength from the count columns: sum of weight[type] * n_type."""
    total: Column = F.lit(0.0)
    for event_type in EVENT_TYPES:
        total = total + F.lit(float(weights[event_type])) * F.col(prefix + t.count_column(event_type))
    return total


def aggregate_interactions(events: DataFrame, weights: Mapping[str, float]) -> DataFrame:
    """Events (one row per event) -> one row per (user_id, job_id) in the interactions schema."""
    counts = [
        F.sum(F.when(F.col(t.EVENT_TYPE) == e, 1).otherwise(0)).cast("long").alias(t.count_column(e))
        for e in EVENT_TYPES
    ]
    grouped = events.groupBy(t.USER_ID, t.JOB_ID).agg(
        *counts, F.min(t.OCCURRED_AT).alias(t.FIRST_AT), F.max(t.OCCURRED_AT).alias(t.LAST_AT)
    )
    return grouped.select(
        t.USER_ID, t.JOB_ID, *t.COUNT_COLUMNS, strength_expr(weights).alias(t.STRENGTH), t.FIRST_AT, t.LAST_AT
    )


def merge_interactions(spark: SparkSession, updates: DataFrame, interactions_path: str) -> dict[str, int]:
    """Add `updates` (interactions schema) into the table: counts and strength add up, times widen. Returns
    Delta's figures of the MERGE (num_inserted_rows, num_updated_rows, ...)."""
    from delta.tables import DeltaTable

    target = DeltaTable.forPath(spark, interactions_path)
    added = {c: F.col(f"t.{c}") + F.col(f"u.{c}") for c in (*t.COUNT_COLUMNS, t.STRENGTH)}
    result = (
        target.alias("t")
        .merge(updates.alias("u"), f"t.{t.USER_ID} = u.{t.USER_ID} AND t.{t.JOB_ID} = u.{t.JOB_ID}")
        .whenMatchedUpdate(
            set={
                **added,
                # least/greatest skip nulls: a backfilled row without times takes the stream's
                t.FIRST_AT: F.least(F.col(f"t.{t.FIRST_AT}"), F.col(f"u.{t.FIRST_AT}")),
                t.LAST_AT: F.greatest(F.col(f"t.{t.LAST_AT}"), F.col(f"u.{t.LAST_AT}")),
            }
        )
        .whenNotMatchedInsertAll()
        .execute()
    )
    row = result.first()
    return {k: int(v or 0) for k, v in row.asDict().items()} if row is not None else {}
