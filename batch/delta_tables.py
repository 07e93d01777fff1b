"""Where the Delta tables live and how they are created: one folder per table under storage.tables_root."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from jobrec.schemas.tables import DEAD_LETTERS, EVENTS, INTERACTIONS, JOBS, PARTITION_COLUMNS, TABLE_DDL

# Delta properties a table is created with (and given at the ingest's start if it was created without them).
# interactions takes a MERGE from every fold of new events (streaming.interactions_fold): with deletion vectors a
# MERGE that updates a few rows of
# a file marks them deleted and writes only the new rows, where it would otherwise rewrite every file it touches
# (clicks on random pairs touch nearly all of them). Measured: 1,000 updates and inserts into 1M rows wrote 21 KB
# instead of 3.1 MB (all 1M rows copied), in about the same time.
# The tables the streaming queries write get a few small files from every micro-batch, for good: a day of one
# batch every 5 s is ~70k files per table. Auto compaction bin-packs them after a write when Delta judges enough
# small files have gathered (spark.databricks.delta.autoCompact.minNumFiles; observed here: after a table's first
# write, then about every 50 small files), in the writer's own commit sequence, so each table keeps one writer.
# Measured on a 200k-row interactions table: in 800 small files (about
# 15 minutes of a live ingest) a MERGE of 1,000 rows took 4.0-4.9 s and the speed layer's history read 0.33 s;
# compacted into 4 files, 2.6 s and 0.07 s.
# events keeps a change data feed: the fold reads the rows its appends inserted since the last fold. Appends
# write no change files (the feed reads their added files), so it costs nothing per micro-batch.
AUTO_COMPACT = {"delta.autoOptimize.autoCompact": "true"}
CHANGE_FEED = {"delta.enableChangeDataFeed": "true"}
TABLE_PROPERTIES: dict[str, dict[str, str]] = {
    INTERACTIONS: {"delta.enableDeletionVectors": "true", **AUTO_COMPACT},
    EVENTS: {**CHANGE_FEED, **AUTO_COMPACT},
    DEAD_LETTERS: AUTO_COMPACT,
    JOBS: AUTO_COMPACT,
}


log = logging.getLogger(__name__)


def absolute_location(location: str) -> str:
    """A local path made absolute (Delta's table builder misreads a path that starts with a dot); URIs as they are."""
    if "://" in location or location.startswith("file:"):
        return location
    return str(Path(location).resolve())


def table_path(tables_root: str, name: str) -> str:
    return f"{absolute_location(tables_root).rstrip('/')}/{name}"


def ensure_delta_table(spark: SparkSession, tables_root: str, name: str) -> str:
    """Create the table with its schema from `schemas.tables` if it does not exist; return its path."""
    from delta.tables import DeltaTable

    path = table_path(tables_root, name)
    if not DeltaTable.isDeltaTable(spark, path):
        schema = spark.createDataFrame([], TABLE_DDL[name]).schema
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
        if name in PARTITION_COLUMNS:
            builder = builder.partitionedBy(*PARTITION_COLUMNS[name])
        for key, value in TABLE_PROPERTIES.get(name, {}).items():
            builder = builder.property(key, value)
        try:
            builder.execute()
        except Exception:
            # two processes creating the same new table at once (speed instances starting together on an empty
            # folder): the loser's first commit conflicts (ProtocolChangedException). Its isDeltaTable still
            # answers from the cached empty log, but a second createIfNotExists reads the log afresh and finds the
            # winner's table; any other failure fails again here
            log.info("creating %s conflicted with another writer; trying once more", name)
            builder.execute()
    return path


def ensure_table_properties(spark: SparkSession, tables_root: str, name: str) -> None:
    """Give an existing table the properties of TABLE_PROPERTIES it lacks (a table created before they were
    declared), in one metadata commit; nothing when it has them. Only a table's one writer calls it, at start."""
    from delta.tables import DeltaTable

    wanted = TABLE_PROPERTIES.get(name, {})
    path = table_path(tables_root, name)
    if not wanted or not DeltaTable.isDeltaTable(spark, path):
        return
    have = DeltaTable.forPath(spark, path).detail().collect()[0]["properties"] or {}
    missing = {k: v for k, v in wanted.items() if have.get(k) != v}
    if missing:
        listed = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(missing.items()))
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({listed})")
        log.info("table %s: set %s", name, listed)


def read_delta_table(spark: SparkSession, tables_root: str, name: str) -> DataFrame:
    """The table, or an empty frame of its schema when it does not exist yet. Readers never create a table: each
    table has one writing process (`table_writers`), and on object storage Delta's log store is safe only for
    one writer; a reader creating the table it reads would be a second one."""
    from delta.tables import DeltaTable

    path = table_path(tables_root, name)
    if not DeltaTable.isDeltaTable(spark, path):
        return spark.createDataFrame([], TABLE_DDL[name])
    return spark.read.format("delta").load(path)


def latest_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).collect()[0]["version"])


@contextmanager
def idempotent_writes(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Delta commits made inside carry (app_id, version); Delta skips a commit whose pair it already has.

    A MERGE takes these from session confs, not from writer options. They are unset afterwards, or a later,
    unrelated MERGE in the same session would carry the same pair and be skipped silently.
    """
    spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(version))
    try:
        yield
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")


def run_concurrently(*writes: Callable[[], None]) -> None:
    """Run independent writes (Spark jobs) from driver threads at once, and wait for all of them; the first
    failure is raised once all have ended. Spark schedules jobs of several threads together, so a Delta write and
    a Kafka write (or two factor tables) overlap their fixed costs instead of queueing."""
    with ThreadPoolExecutor(max_workers=len(writes)) as pool:
        futures = [pool.submit(write) for write in writes]
    for future in futures:
        future.result()
