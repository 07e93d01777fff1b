"""The click-event contract: every kind of bad input gets its reason, and the hand-written parser agrees with
the published JSON Schema (checked by the independent `jsonschema` library) on every case."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from jobrec.schemas.click_event import (
    ClickEvent,
    EventLimits,
    Rejection,
    check_id,
    parse_click_event,
    parse_timestamp,
)

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
    # issue 11: what an attacker sent to the real stack. A lone surrogate passed the parser and then failed every
    # micro-batch in Arrow; these times raised OverflowError in parse_timestamp; "*" is the new-user list's key.
    ("lone surrogate in job_id", enc(GOOD).replace(b'"j-1"', b'"pj\\ud800"'), "bad_unicode"),
    ("leap second at the end of 9999", with_(occurred_at="9999-12-31T23:59:60Z"), "timestamp_out_of_range"),
    ("year 1 with a positive offset", with_(occurred_at="0001-01-01T00:00:00+00:01"), "timestamp_out_of_range"),
    ("user_id is the new-user key", with_(user_id="*"), "reserved_id"),
    ("C1 control (NEL) in an id", with_(user_id="u\u00851"), "control_char"),
    ("bidi override in an id", with_(job_id="j\u202e1"), "format_char"),
    ("zero-width space in an id", with_(event_id="e\u200b1"), "format_char"),
    # around them
    ("lone low surrogate in user_id", with_(user_id="\udc00u"), "bad_unicode"),
    ("byte order mark in an id", with_(job_id="\ufeffj-1"), "format_char"),
    ("tag character (beyond the BMP) in an id", with_(job_id="j\U000e0041"), "format_char"),
    ("line separator in an id", with_(user_id="u\u20281"), "format_char"),
    ("year 3000", with_(occurred_at="3000-01-01T00:00:00Z"), "timestamp_out_of_range"),
    ("just before the epoch", with_(occurred_at="1970-01-01T00:30:00+01:00"), "timestamp_out_of_range"),
    ("non-ASCII digits in a timestamp", with_(occurred_at="\u0662\u0660\u0662\u0666-11-26T11:59:00Z"), "bad_timestamp"),
    ("newline after a timestamp", with_(occurred_at="2026-11-26T11:59:00Z\n"), "bad_timestamp"),
    ("lone surrogate as schema_version", with_(schema_version="\ud800"), "unsupported_version"),
    (
        "duplicate key that is a lone surrogate",
        enc(GOOD)[:-1] + b', "\\ud800": 1, "\\ud800": 2}',
        "duplicate_key",
    ),
]


@pytest.mark.parametrize("label,raw,code", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_record_is_rejected_with_its_reason(label: str, raw: bytes | None, code: str) -> None:
    verdict = parse_click_event(raw, RECEIVED_MS, LIMITS)
    assert isinstance(verdict, Rejection), f"{label} was accepted"
    assert verdict.code == code
    assert verdict.reason.startswith(code + ": ") and len(verdict.reason) > len(code) + 3
    verdict.reason.encode("utf-8")  # it goes to the dead-letter table through Arrow: a lone surrogate would fail it


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
        ("0001-01-01T00:00:00-00:01", datetime(1, 1, 1, 0, 1, tzinfo=timezone.utc)),
        # valid RFC 3339 whose UTC time datetime cannot hold: None, never OverflowError
        ("9999-12-31T23:59:60Z", None),
        ("0001-01-01T00:00:00+00:01", None),
        ("\u0662\u0660\u0662\u0666-11-26T11:59:00Z", None),  # Arabic-Indic digits: int() reads them, RFC 3339 does not
        ("2026-11-26T11:59:00Z\n", None),
    ],
)
def test_rfc3339_timestamps(stamp: str, expected: datetime | None) -> None:
    assert parse_timestamp(stamp) == expected


@pytest.mark.parametrize(
    "stamp,in_range",
    [
        ("1970-01-01T00:00:00Z", True),
        ("1969-12-31T23:59:59.999999Z", False),
        ("1970-01-01T00:59:59+01:00", False),  # 1969-12-31T23:59:59Z
        ("1969-12-31T23:00:00-01:00", True),  # 1970-01-01T00:00:00Z
        ("2999-12-31T23:59:59.999999Z", True),
        ("2999-12-31T23:59:60Z", False),  # the leap second is 3000-01-01T00:00:00Z
        ("3000-01-01T00:30:00+01:00", True),  # 2999-12-31T23:30:00Z
        ("3000-01-01T00:00:00Z", False),
        ("0001-01-01T00:00:00Z", False),
        ("9999-12-31T23:59:59Z", False),
    ],
)
def test_timestamps_outside_1970_to_3000_are_out_of_range(stamp: str, in_range: bool) -> None:
    limits = EventLimits(max_future_seconds=10**12, max_past_days=10**7)  # no judging against the receive time
    verdict = parse_click_event(with_(occurred_at=stamp), RECEIVED_MS, limits)
    if in_range:
        assert isinstance(verdict, ClickEvent)
    else:
        assert isinstance(verdict, Rejection) and verdict.code == "timestamp_out_of_range"


@pytest.mark.parametrize("received_ms,code", [(2**63 - 1, "past_timestamp"), (-(2**63), "future_timestamp")])
def test_a_broker_timestamp_beyond_datetime_still_gets_a_verdict(received_ms: int, code: str) -> None:
    # a topic that keeps CreateTime takes the producer's timestamp, any 64-bit number
    verdict = parse_click_event(with_(), received_ms, LIMITS)
    assert isinstance(verdict, Rejection) and verdict.code == code


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
            "format_char",
            "bad_unicode",
            "reserved_id",
            "unknown_field",
            "unsupported_version",
        }
    ]
    + [with_(occurred_at="yesterday"), with_(occurred_at="2026-11-26T11:59:00")]
    # ids that are fine: any script, characters beyond the BMP, a star that is not the whole id, a no-break space
    + [with_(user_id="Łódź-ユーザー"), with_(job_id="job-\U0001f600"), with_(user_id="**"), with_(job_id="j\u00a01")],
)
def test_parser_agrees_with_the_published_json_schema(raw: bytes) -> None:
    # the JSON Schema has no clock, no byte limit and no calendar: compare on what both can judge
    verdict = parse_click_event(raw, RECEIVED_MS, EventLimits(max_record_bytes=10**6))
    assert isinstance(verdict, ClickEvent) == _schema_accepts(raw)


ALL_CODE_POINTS = "".join(map(chr, range(0x110000)))


def test_id_characters_agree_with_the_json_schema_on_every_code_point() -> None:
    # the schema forbids one character class (negated); the parser has three, one per reason code
    forbidden = set(re.findall(SCHEMA["$defs"]["id"]["not"]["pattern"], ALL_CODE_POINTS))
    verdicts = {c: check_id(c, "x") for c in ALL_CODE_POINTS}
    assert forbidden == {c for c, v in verdicts.items() if v is not None}
    codes = {c: v.code for c, v in verdicts.items() if v is not None}
    assert {c for c, code in codes.items() if code == "bad_unicode"} == set(map(chr, range(0xD800, 0xE000)))
    assert {c for c, code in codes.items() if code == "control_char"} == set(
        map(chr, [*range(0x20), *range(0x7F, 0xA0)])
    )
    # independently of the lists: every control, format, surrogate, line or paragraph separator character of the
    # Unicode database this Python carries is refused
    assert {c for c in ALL_CODE_POINTS if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")} <= set(codes)


def test_the_same_record_gets_the_same_verdict_whenever_it_is_replayed() -> None:
    # the verdict depends on the broker's receive time, not on the wall clock: a replay after a crash agrees
    raw = with_(occurred_at="2026-11-27T11:00:00Z")
    assert isinstance(parse_click_event(raw, RECEIVED_MS, LIMITS), ClickEvent)
    assert parse_click_event(raw, RECEIVED_MS, LIMITS) == parse_click_event(raw, RECEIVED_MS, LIMITS)
    later_receipt = RECEIVED_MS - 2 * 86400 * 1000
    assert isinstance(parse_click_event(raw, later_receipt, LIMITS), Rejection)
