"""Parse raw Kafka records into click events or dead letters, one Arrow batch at a time.

Spark hands the function below Arrow record batches of Kafka records (through `mapInArrow`), so the per-record
contract check of `schemas.click_event` runs in Python without a per-row Spark/Python round trip. Pure: a test
calls it with a hand-built Arrow batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa

from jobrec.schemas import tables as t
from jobrec.schemas.click_event import ClickEvent, EventLimits, Rejection, parse_click_event, parse_click_events

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
# the reason code of a record that made a parser raise (a bug, or input nobody foresaw), and its detail's limit
INTERNAL_ERROR = "internal_error"
MAX_DETAIL = 200


def parse_record_batch(batch: pa.RecordBatch, limits: EventLimits) -> pa.RecordBatch:
    """One output row per input record, in order: the event's fields, or a reason and the raw bytes."""
    values = batch.column(IN_VALUE).to_pylist()
    received = [ms if ms is not None else 0 for ms in batch.column(IN_RECEIVED_MS).to_pylist()]
    records = list(zip(values, received, strict=True))
    verdicts: Sequence[ClickEvent | Rejection | None]
    try:
        # the fast decoder for the common shape, the reason-coded parser for the rest: the same verdicts
        verdicts = parse_click_events(records, limits)
    except Exception:  # judged record by record below, where one that raises becomes an internal_error
        verdicts = [None] * len(records)
    rows = [_click_row(raw, ms, limits, v) for (raw, ms), v in zip(records, verdicts, strict=True)]
    return verdict_batch(PARSED_ARROW_SCHEMA, rows, values, batch)


def _click_row(
    raw: bytes | None, received_ms: int, limits: EventLimits, verdict: ClickEvent | Rejection | None = None
) -> tuple[object, ...] | Rejection:
    try:
        if verdict is None:
            verdict = parse_click_event(raw, received_ms, limits)
        if isinstance(verdict, Rejection):
            return verdict
        return (verdict.event_id, verdict.user_id, verdict.job_id, verdict.event_type, verdict.occurred_at_micros)
    except Exception as e:  # one record must never fail the micro-batch (and so the stream)
        return internal_error(e)


def internal_error(e: BaseException) -> Rejection:
    """The dead-letter verdict of a record that made the parse raise: the exception's type and message."""
    try:
        message = str(e)
    except Exception:  # an exception whose message cannot be built is still an internal error
        message = "(no message)"
    return Rejection(INTERNAL_ERROR, f"{type(e).__name__}: {message}"[:MAX_DETAIL])


def verdict_batch(
    schema: pa.Schema,
    rows: Sequence[tuple[object, ...] | Rejection],
    raws: Sequence[bytes | None],
    batch: pa.RecordBatch,
) -> pa.RecordBatch:
    """The output batch, one row per input record: its event values (the schema's columns before VERDICT_FIELDS)
    or its rejection with its raw bytes, then the Kafka columns of `batch`.

    Should the batch fail Arrow's conversion (a value the contract let through but Arrow cannot hold: a string
    that does not encode as UTF-8, an integer out of range), its rows are converted again one by one and each
    that fails becomes an internal_error dead letter: one bad record never fails the batch, and the common case
    pays for no per-record check.
    """
    event_fields = list(schema)[: len(schema) - len(VERDICT_FIELDS)]
    try:
        return _build(schema, event_fields, rows, raws, batch)
    except Exception:
        return _build(schema, event_fields, [_convertible(row, event_fields) for row in rows], raws, batch)


def _convertible(row: tuple[object, ...] | Rejection, fields: list[pa.Field]) -> tuple[object, ...] | Rejection:
    if isinstance(row, Rejection):
        return row
    try:
        for value, f in zip(row, fields, strict=True):
            pa.array([value], type=f.type)
    except Exception as e:
        return internal_error(e)
    return row


def _build(
    schema: pa.Schema,
    event_fields: list[pa.Field],
    rows: Sequence[tuple[object, ...] | Rejection],
    raws: Sequence[bytes | None],
    batch: pa.RecordBatch,
) -> pa.RecordBatch:
    cols: dict[str, list[object]] = {f.name: [] for f in schema}
    for row, raw in zip(rows, raws, strict=True):
        if isinstance(row, Rejection):
            for f in event_fields:
                cols[f.name].append(None)
            cols[t.REASON_CODE].append(row.code)
            cols[t.REASON].append(row.reason)  # UTF-8 encodable by construction
            cols[t.RAW].append(raw)
        else:
            for f, value in zip(event_fields, row, strict=True):
                cols[f.name].append(value)
            for name in (t.REASON_CODE, t.REASON, t.RAW):
                cols[name].append(None)
    cols[t.KAFKA_TOPIC] = batch.column(IN_TOPIC).to_pylist()
    cols[t.KAFKA_PARTITION] = batch.column(IN_PARTITION).to_pylist()
    cols[t.KAFKA_OFFSET] = batch.column(IN_OFFSET).to_pylist()
    cols[IN_RECEIVED_MS] = batch.column(IN_RECEIVED_MS).to_pylist()
    return pa.RecordBatch.from_pydict(cols, schema=schema)


def parse_record_batches(batches: Iterator[pa.RecordBatch], limits: EventLimits) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        yield parse_record_batch(batch, limits)
