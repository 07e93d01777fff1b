"""Parse raw Kafka records into click events or dead letters, one Arrow batch at a time.

Spark hands the function below Arrow record batches of Kafka records (through `mapInArrow`), so the per-record
contract check of `schemas.click_event` runs in Python without a per-row Spark/Python round trip. Pure: a test
calls it with a hand-built Arrow batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from jobrec.schemas import tables as t
from jobrec.schemas.click_event import ClickEvent, EventLimits, parse_click_event

# input columns (selected from Spark's Kafka source before the call)
IN_VALUE = "value"
IN_TOPIC = "topic"
IN_PARTITION = "partition"
IN_OFFSET = "offset"
IN_RECEIVED_MS = "received_ms"

OCCURRED_AT_US = "occurred_at_us"

# the columns every parser's output ends with: the verdict and where the record came from
VERDICT_FIELDS: list[tuple[str, pa.DataType]] = [
    (t.REASON_CODE, pa.string()),
    (t.REASON, pa.string()),
    (t.RAW, pa.binary()),
    (t.KAFKA_TOPIC, pa.string()),
    (t.KAFKA_PARTITION, pa.int32()),
    (t.KAFKA_OFFSET, pa.int64()),
    (IN_RECEIVED_MS, pa.int64()),
]
_SPARK_TYPES = {pa.string(): "STRING", pa.binary(): "BINARY", pa.int32(): "INT", pa.int64(): "BIGINT"}


def spark_ddl(schema: pa.Schema) -> str:
    """The Spark DDL of an Arrow schema of the types above (what mapInArrow is told it returns)."""
    return ", ".join(f"{f.name} {_SPARK_TYPES[f.type]}" for f in schema)


# output: one row per record; reason_code is null for a valid event, raw is kept only for a rejected one
PARSED_ARROW_SCHEMA = pa.schema(
    [
        (t.EVENT_ID, pa.string()),
        (t.USER_ID, pa.string()),
        (t.JOB_ID, pa.string()),
        (t.EVENT_TYPE, pa.string()),
        (OCCURRED_AT_US, pa.int64()),
        *VERDICT_FIELDS,
    ]
)
PARSED_DDL = spark_ddl(PARSED_ARROW_SCHEMA)


def parse_record_batch(batch: pa.RecordBatch, limits: EventLimits) -> pa.RecordBatch:
    """One output row per input record, in order: the event's fields, or a reason and the raw bytes."""
    values = batch.column(IN_VALUE).to_pylist()
    received = batch.column(IN_RECEIVED_MS).to_pylist()
    cols: dict[str, list[object]] = {f.name: [] for f in PARSED_ARROW_SCHEMA}
    for raw, received_ms in zip(values, received, strict=True):
        verdict = parse_click_event(raw, received_ms if received_ms is not None else 0, limits)
        if isinstance(verdict, ClickEvent):
            cols[t.EVENT_ID].append(verdict.event_id)
            cols[t.USER_ID].append(verdict.user_id)
            cols[t.JOB_ID].append(verdict.job_id)
            cols[t.EVENT_TYPE].append(verdict.event_type)
            cols[OCCURRED_AT_US].append(verdict.occurred_at_micros)
            cols[t.REASON_CODE].append(None)
            cols[t.REASON].append(None)
            cols[t.RAW].append(None)
        else:
            for name in (t.EVENT_ID, t.USER_ID, t.JOB_ID, t.EVENT_TYPE, OCCURRED_AT_US):
                cols[name].append(None)
            cols[t.REASON_CODE].append(verdict.code)
            cols[t.REASON].append(verdict.reason)
            cols[t.RAW].append(raw)
    cols[t.KAFKA_TOPIC] = batch.column(IN_TOPIC).to_pylist()
    cols[t.KAFKA_PARTITION] = batch.column(IN_PARTITION).to_pylist()
    cols[t.KAFKA_OFFSET] = batch.column(IN_OFFSET).to_pylist()
    cols[IN_RECEIVED_MS] = received
    return pa.RecordBatch.from_pydict(cols, schema=PARSED_ARROW_SCHEMA)


def parse_record_batches(batches: Iterator[pa.RecordBatch], limits: EventLimits) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        yield parse_record_batch(batch, limits)
