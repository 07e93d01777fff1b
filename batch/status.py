"""What the Delta tables and the streaming checkpoints hold now, for `jobrec status`: each table's row count and
latest Delta version, the dead letters by reason, the serving model and the newest rejected one with the gate's
record, and the Kafka offsets a streaming query's newest micro-batch reads up to.

Read only: a table that does not exist is reported absent, never created. Counts come from Delta's log where
Delta can answer them so (a plain count), the versions from the newest commit (`history(1)`).
"""

from __future__ import annotations

import json
from datetime import timezone
from typing import Any

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from jobrec.batch.delta_tables import table_path
from jobrec.batch.train import serving_model_version
from jobrec.schemas import tables as t

# every table the pipeline writes, in the order `jobrec status` lists them
TABLES = tuple(t.TABLE_DDL)


def read_table_size(spark: SparkSession, tables_root: str, name: str) -> dict[str, Any]:
    """{"present": bool, "rows": int | None, "version": int | None} of one table (rows and version None when
    absent)."""
    from delta.tables import DeltaTable

    path = table_path(tables_root, name)
    if not DeltaTable.isDeltaTable(spark, path):
        return {"present": False, "rows": None, "version": None}
    table = DeltaTable.forPath(spark, path)
    version = int(table.history(1).collect()[0]["version"])
    # the count at that version, so that rows and version agree while a writer commits beside us
    rows = spark.read.format("delta").option("versionAsOf", version).load(path).count()
    return {"present": True, "rows": rows, "version": version}


def count_dead_letters(spark: SparkSession, tables_root: str) -> dict[str, int]:
    """reason_code -> number of dead letters, most frequent first ({} without a dead_letters table)."""
    from delta.tables import DeltaTable

    path = table_path(tables_root, t.DEAD_LETTERS)
    if not DeltaTable.isDeltaTable(spark, path):
        return {}
    rows = spark.read.format("delta").load(path).groupBy(t.REASON_CODE).count().collect()
    return dict(sorted(((r[0], int(r[1])) for r in rows), key=lambda kv: (-kv[1], kv[0])))


def model_summary(row: Row) -> dict[str, Any]:
    """A models-table row as `jobrec status` reports it: size, data version, parameters and the gate's record
    (k, validation and popularity metrics, reason); the gate's fields are None for a model trained without it."""
    metrics = json.loads(row[t.METRICS]) if row[t.METRICS] else {}
    return {
        "version": row[t.MODEL_VERSION],
        "status": row[t.STATUS],
        # a naive datetime from Spark is local time: astimezone reads it so
        "created_at": row[t.CREATED_AT].astimezone(timezone.utc).isoformat(),
        "n_users": row[t.N_USERS],
        "n_jobs": row[t.N_JOBS],
        "n_interactions": row[t.N_INTERACTIONS],
        "data_version": row[t.DATA_VERSION],
        "params": json.loads(row[t.PARAMS]) if row[t.PARAMS] else {},
        "k": metrics.get("k"),
        "validation": metrics.get("validation"),
        "popularity": metrics.get("popularity"),
        "gate_reason": metrics.get("gate"),
        # where the parameters came from: a search (kept without its trial list), or reused from a model
        "params_source": metrics.get("params_source"),
        "search": {k: v for k, v in (metrics.get("search") or {}).items() if k != "top"} or None,
    }


def read_models(spark: SparkSession, tables_root: str) -> dict[str, Any]:
    """{"counts": {status: n}, "serving": summary | None, "latest_rejected": summary | None}: the serving model is
    the newest published one (as `batch.train.serving_model_version` picks it), the rejected one the newest
    rejected, whether older or newer than the serving model."""
    from delta.tables import DeltaTable

    path = table_path(tables_root, t.MODELS)
    if not DeltaTable.isDeltaTable(spark, path):
        return {"counts": {}, "serving": None, "latest_rejected": None}
    models = spark.read.format("delta").load(path)
    counts = {r[0]: int(r[1]) for r in models.groupBy(t.STATUS).count().collect()}
    serving = serving_model_version(spark, tables_root)
    serving_row = models.where(F.col(t.MODEL_VERSION) == serving).first() if serving else None
    rejected_row = (
        models.where(F.col(t.STATUS) == t.STATUS_REJECTED).orderBy(F.col(t.CREATED_AT).desc()).limit(1).first()
    )
    return {
        "counts": dict(sorted(counts.items())),
        "serving": model_summary(serving_row) if serving_row else None,
        "latest_rejected": model_summary(rejected_row) if rejected_row else None,
    }


def parse_offsets_file(text: str) -> dict[str, dict[str, int]]:
    """A Structured Streaming offsets-log file -> topic -> partition -> the next offset the batch reads up to.

    The file is "v1", a line of batch metadata, then one line per source of the query: a Kafka source's line is
    JSON {topic: {partition: offset}}, a source with nothing yet is "-".
    """
    offsets: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        line = line.strip()
        if not line.startswith("{"):
            continue
        for topic, partitions in json.loads(line).items():
            if isinstance(partitions, dict):
                offsets.setdefault(topic, {}).update({str(p): int(o) for p, o in partitions.items()})
    return offsets


def checkpoint_batch_files(spark: SparkSession, folder: str) -> dict[int, str]:
    """batch id -> path of the files in a checkpoint's log folder ({} when it does not exist). Hadoop's file
    system of the folder lists it, so that s3a:// checkpoints read as local ones do, without a Spark job and
    without the stack trace Spark's file source logs for a folder that is not there (every new checkpoint);
    hidden files (.crc, temporary) are skipped."""
    jvm: Any = spark.sparkContext._jvm  # set while the session runs
    path = jvm.org.apache.hadoop.fs.Path(folder)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):  # the query never planned a batch
        return {}
    found = {}
    for status in fs.listStatus(path):
        name = status.getPath().getName()
        if name.isdigit():
            found[int(name)] = status.getPath().toString()
    return found


def read_checkpoint_offsets(spark: SparkSession, checkpoint: str) -> dict[str, Any] | None:
    """The newest micro-batch of the streaming query with this checkpoint: {"batch": id, "committed": whether it
    finished, "offsets": topic -> partition -> next offset}; None when the query has planned no batch yet.

    Spark's Kafka source commits no consumer offsets: its offsets log is the only record of how far it read.
    """
    base = checkpoint.rstrip("/")
    planned = checkpoint_batch_files(spark, f"{base}/offsets")
    if not planned:
        return None
    batch = max(planned)
    text = spark.read.format("binaryFile").load(planned[batch]).select("content").first()
    return {
        "batch": batch,
        "committed": batch in checkpoint_batch_files(spark, f"{base}/commits"),
        "offsets": parse_offsets_file(bytes(text[0]).decode("utf-8")) if text else {},
    }
