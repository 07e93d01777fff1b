"""The click-event contract: every kind of bad input gets its reason, and the hand-written parser agrees with
the published JSON Schema (checked by the independent `jsonschema` library) on every case."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from jobrec.schemas.click_event import ClickEvent, EventLimits, Rejection, parse_click_event, parse_timestamp

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "click_event.v1.json").read_text())
RECEIVED_MS = int(datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
LIMITS = EventLimits(max_record_bytes=4096, max_future_seconds=86400, max_past_days=3650)

GOOD = {
    "event_id": "e-1",
    "user_id": "u-1",
    "job_id": "j-1",
    "event_type": "click",
    "occurred_at": "2026-11-26T11:59:00.250Z",
}


def enc(doc: object) -> bytes:
    return json.dumps(doc).encode()


def with_(**changes: object) -> bytes:
    doc = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            del doc[k]
        else:
            doc[k] = v
    return enc(doc)


# (label, raw record, expected rejection code); at least 20 kinds of bad input
BAD_RECORDS = [
    ("tombstone", None, "empty_record"),
    ("empty", b"", "empty_record"),
    ("not json", b"hello world", "invalid_json"),
    ("truncated json", enc(GOOD)[:-5], "invalid_json"),
    ("invalid utf-8", b'{"event_id": "\xff\xfe"}', "invalid_utf8"),
    ("json array", enc([GOOD]), "not_object"),
    ("json string", enc("click"), "not_object"),
    ("json number", b"42", "not_object"),
    ("json null", b"null", "not_object"),
    ("missing user_id", with_(user_id=...), "missing_field"),
    ("missing occurred_at", with_(occurred_at=...), "missing_field"),
    ("null job_id", with_(job_id=None), "null_field"),
    ("user_id a number", with_(user_id=17), "wrong_type"),
    ("job_id an object", with_(job_id={"id": 1}), "wrong_type"),
    ("event_type a boolean", with_(event_type=True), "wrong_type"),
    ("empty event_id", with_(event_id=""), "empty_field"),
    ("empty user_id", with_(user_id=""), "empty_field"),
    ("over-long job_id", with_(job_id="j" * 129), "too_long"),
    ("unknown event type", with_(event_type="purchase"), "unknown_event_type"),
    ("event type wrong case", with_(event_type="Click"), "unknown_event_type"),
    ("unparseable timestamp", with_(occurred_at="yesterday"), "bad_timestamp"),
    ("timestamp without offset", with_(occurred_at="2026-11-26T11:59:00"), "bad_timestamp"),
    ("impossible date", with_(occurred_at="2026-02-30T10:00:00Z"), "bad_timestamp"),
    ("epoch number timestamp", with_(occurred_at=1764158340), "wrong_type"),
    ("far-future timestamp", with_(occurred_at="2099-01-01T00:00:00Z"), "future_timestamp"),
    ("far-past timestamp", with_(occurred_at="1970-01-01T00:00:00Z"), "past_timestamp"),
    ("NUL byte in the record", enc(GOOD)[:-1] + b"\x00}", "nul_byte"),
    ("escaped NUL in an id", with_(user_id="u\u00001"), "control_char"),
    ("newline in an id", with_(job_id="j\n1"), "control_char"),
    ("deep nesting", b"[" * 2000 + b"]" * 2000, "too_deep"),
    ("deep nesting in a field", with_(user_id=json.loads("[" * 50 + "]" * 50)), "wrong_type"),
    ("oversized record", with_(job_id="j" * 5000), "too_large"),
    ("unknown field", with_(extra="x"), "unknown_field"),
    (
        "duplicate key",
        b'{"event_id":"a","event_id":"b","user_id":"u","job_id":"j","event_type":"view",'
        b'"occurred_at":"2026-11-26T11:00:00Z"}',
        "duplicate_key",
    ),
    ("NaN literal", b'{"event_id": NaN}', "invalid_json"),
    ("wrong schema_version", with_(schema_version=2), "unsupported_version"),
]


@pytest.mark.parametrize("label,raw,code", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_record_is_rejected_with_its_reason(label: str, raw: bytes | None, code: str) -> None:
    verdict = parse_click_event(raw, RECEIVED_MS, LIMITS)
    assert isinstance(verdict, Rejection), f"{label} was accepted"
    assert verdict.code == code
    assert verdict.reason.startswith(code + ": ") and len(verdict.reason) > len(code) + 3


def test_at_least_twenty_kinds_of_bad_input() -> None:
    assert len({code for _, _, code in BAD_RECORDS}) >= 20


def test_valid_event_is_parsed_to_utc() -> None:
    raw = with_(occurred_at="2026-11-26T13:59:00.250+02:00", event_type="apply")
    event = parse_click_event(raw, RECEIVED_MS, LIMITS)
    assert event == ClickEvent("e-1", "u-1", "j-1", "apply", datetime(2026, 11, 26, 11, 59, 0, 250000, timezone.utc))
    # 2026-11-26T11:59:00.25Z in microseconds since the epoch (`date -u -d 2026-11-26T11:59:00Z +%s` is 1795694340)
    assert event.occurred_at_micros == 1_795_694_340_250_000


@pytest.mark.parametrize(
    "stamp,expected",
    [
        ("2026-11-26T11:59:00Z", datetime(2026, 11, 26, 11, 59, tzinfo=timezone.utc)),
        ("2026-11-26t11:59:00.123456789z", datetime(2026, 11, 26, 11, 59, 0, 123456, timezone.utc)),
        ("2026-11-26T00:30:00-01:30", datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, 0, 0, tzinfo=timezone.utc)),
        ("2026-11-26 11:59:00Z", None),
        ("2026-13-01T00:00:00Z", None),
        ("2026-11-26T11:59:00+25:00", None),
    ],
)
def test_rfc3339_timestamps(stamp: str, expected: datetime | None) -> None:
    assert parse_timestamp(stamp) == expected


def _schema_accepts(raw: bytes) -> bool:
    doc = json.loads(raw)
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=None)
    return validator.is_valid(doc)


@pytest.mark.parametrize(
    "raw",
    [with_(), with_(schema_version=1), with_(event_type="view"), with_(occurred_at="2026-11-26T11:00:00+01:00")]
    + [
        raw
        for _, raw, code in BAD_RECORDS
        if code
        in {
            "not_object",
            "missing_field",
            "null_field",
            "wrong_type",
            "empty_field",
            "too_long",
            "unknown_event_type",
            "control_char",
            "unknown_field",
            "unsupported_version",
        }
    ]
    + [with_(occurred_at="yesterday"), with_(occurred_at="2026-11-26T11:59:00")],
)
def test_parser_agrees_with_the_published_json_schema(raw: bytes) -> None:
    # the JSON Schema has no clock, no byte limit and no calendar: compare on what both can judge
    verdict = parse_click_event(raw, RECEIVED_MS, EventLimits(max_record_bytes=10**6))
    assert isinstance(verdict, ClickEvent) == _schema_accepts(raw)


def test_the_same_record_gets_the_same_verdict_whenever_it_is_replayed() -> None:
    # the verdict depends on the broker's receive time, not on the wall clock: a replay after a crash agrees
    raw = with_(occurred_at="2026-11-27T11:00:00Z")
    assert isinstance(parse_click_event(raw, RECEIVED_MS, LIMITS), ClickEvent)
    assert parse_click_event(raw, RECEIVED_MS, LIMITS) == parse_click_event(raw, RECEIVED_MS, LIMITS)
    later_receipt = RECEIVED_MS - 2 * 86400 * 1000
    assert isinstance(parse_click_event(raw, later_receipt, LIMITS), Rejection)
