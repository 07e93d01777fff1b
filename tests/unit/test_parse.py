"""The Arrow-batch parser keeps every record: valid ones as events, the rest with reason and raw bytes."""

from __future__ import annotations

import json

import pyarrow as pa

from jobrec.schemas.click_event import EventLimits
from jobrec.streaming import parse


def test_each_record_becomes_one_row_in_order() -> None:
    good = json.dumps(
        {"event_id": "e1", "user_id": "u", "job_id": "j", "event_type": "save", "occurred_at": "2026-11-26T10:00:00Z"}
    ).encode()
    batch = pa.RecordBatch.from_pydict(
        {
            parse.IN_VALUE: [good, b"oops", None],
            parse.IN_TOPIC: ["clicks"] * 3,
            parse.IN_PARTITION: [0, 1, 2],
            parse.IN_OFFSET: [10, 11, 12],
            parse.IN_RECEIVED_MS: [1795694400000] * 3,  # 2026-11-26T12:00:00Z
        }
    )
    out = parse.parse_record_batch(batch, EventLimits()).to_pydict()
    assert out["event_id"] == ["e1", None, None]
    assert out["reason_code"] == [None, "invalid_json", "empty_record"]
    assert out["raw"] == [None, b"oops", None]
    assert out["kafka_offset"] == [10, 11, 12]
    # 2026-11-26T10:00:00Z = 1795687200 s since the epoch (`date -u -d 2026-11-26T10:00:00Z +%s`)
    assert out[parse.OCCURRED_AT_US] == [1795687200 * 10**6, None, None]
