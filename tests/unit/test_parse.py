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


RECEIVED_MS = 1795694400000  # 2026-11-26T12:00:00Z


def click(**changes: object) -> bytes:
    doc = {"event_id": "e1", "user_id": "u", "job_id": "j", "event_type": "view", "occurred_at": "2026-11-26T10:00:00Z"}
    doc.update(changes)
    return json.dumps(doc).encode()


def batch_of(records: list[bytes | None]) -> pa.RecordBatch:
    n = len(records)
    return pa.RecordBatch.from_pydict(
        {
            parse.IN_VALUE: pa.array(records, pa.binary()),
            parse.IN_TOPIC: ["clicks"] * n,
            parse.IN_PARTITION: pa.array([0] * n, pa.int32()),
            parse.IN_OFFSET: pa.array(range(n), pa.int64()),
            parse.IN_RECEIVED_MS: pa.array([RECEIVED_MS] * n, pa.int64()),
        }
    )


# issue 11, as the attacker sent it: each of these failed every micro-batch or was accepted
ISSUE_11 = [
    (click(job_id="j").replace(b'"j"', b'"pj\\ud800"'), "bad_unicode"),
    (click(occurred_at="9999-12-31T23:59:60Z"), "timestamp_out_of_range"),
    (click(occurred_at="0001-01-01T00:00:00+00:01"), "timestamp_out_of_range"),
    (click(user_id="*"), "reserved_id"),
    (click(user_id="u\u0085"), "control_char"),
    (click(job_id="\u202ej"), "format_char"),
    (click(event_id="e\u200b"), "format_char"),
]


def test_issue_11_records_become_dead_letters_and_the_batch_survives() -> None:
    records = [click(event_id="before")] + [raw for raw, _ in ISSUE_11] + [click(event_id="after")]
    out = parse.parse_record_batch(batch_of(records), EventLimits())
    out.validate(full=True)  # every string column is valid UTF-8, as Spark will read it
    got = out.to_pydict()
    assert got["reason_code"] == [None] + [code for _, code in ISSUE_11] + [None]
    assert got["event_id"] == ["before"] + [None] * len(ISSUE_11) + ["after"]
    assert got["raw"] == [None] + [raw for raw, _ in ISSUE_11] + [None]
    assert got["kafka_offset"] == list(range(len(records)))


def test_a_record_that_makes_the_parser_raise_is_an_internal_error_dead_letter(monkeypatch) -> None:
    real = parse.parse_click_event

    def flaky(raw, received_ms, limits):
        if raw == b"explode":
            raise ZeroDivisionError("division by zero")
        return real(raw, received_ms, limits)

    def flaky_batch(records, limits):
        return [flaky(raw, ms, limits) for raw, ms in records]

    # the batch decoder raises on the poison record; the batch is judged record by record, where it raises again
    monkeypatch.setattr(parse, "parse_click_event", flaky)
    monkeypatch.setattr(parse, "parse_click_events", flaky_batch)
    out = parse.parse_record_batch(batch_of([click(event_id="a"), b"explode", click(event_id="b")]), EventLimits())
    got = out.to_pydict()
    assert got["event_id"] == ["a", None, "b"]
    assert got["reason_code"] == [None, "internal_error", None]
    assert got["reason"][1] == "internal_error: ZeroDivisionError: division by zero"
    assert got["raw"][1] == b"explode"


def test_an_accepted_event_arrow_cannot_hold_is_an_internal_error_dead_letter(monkeypatch) -> None:
    # a parser bug that lets a lone surrogate through: Arrow would fail the whole batch on it
    from jobrec.schemas.click_event import ClickEvent

    real = parse.parse_click_event

    def leaky(raw, received_ms, limits):
        verdict = real(raw, received_ms, limits)
        return (
            ClickEvent("e2", "u", "pj\ud800", "view", verdict.occurred_at) if raw == click(event_id="e2") else verdict
        )

    monkeypatch.setattr(
        parse, "parse_click_events", lambda records, limits: [leaky(r, ms, limits) for r, ms in records]
    )
    out = parse.parse_record_batch(batch_of([click(), click(event_id="e2")]), EventLimits())
    out.validate(full=True)
    got = out.to_pydict()
    assert got["job_id"] == ["j", None] and got["reason_code"] == [None, "internal_error"]
    assert got["reason"][1].startswith("internal_error: UnicodeEncodeError: ")


def test_rows_that_still_fail_arrow_are_isolated_one_by_one(monkeypatch) -> None:
    # the batch conversion fails on the bad rows and is redone row by row
    rows: list = [("e1", "u", "j", "view", 1), ("e2", "u", "pj\ud800", "view", 2), ("e3", "u", "j", "view", 2**63)]
    raws = [b"1", b"2", b"3"]
    out = parse.verdict_batch(parse.PARSED_ARROW_SCHEMA, rows, raws, batch_of(raws))
    out.validate(full=True)
    got = out.to_pydict()
    assert got["event_id"] == ["e1", None, None]
    assert got["reason_code"] == [None, "internal_error", "internal_error"]
    assert got["raw"] == [None, b"2", b"3"]
