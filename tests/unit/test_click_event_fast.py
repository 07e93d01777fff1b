"""The batch decoder of a poll's clicks (`parse_click_events`) against the reference parser, record by record.

Its fast path (msgspec into a strict struct, then a few comparisons) may only ever accept what
`parse_click_event` accepts, with the very same fields, and hands everything else to it: so for any records the
two give equal verdicts, Rejections with the same code, detail and field. The records below are built to sit on
the fast path's edges: keys written twice by hand, extra keys, escapes, raw control bytes, whitespace JSON does
and does not allow, schema_version spelt every way, times on the edges of the receive window and of RFC 3339.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobrec.schemas import click_event
from jobrec.schemas.click_event import (
    EVENT_TYPES,
    ClickEvent,
    EventLimits,
    Rejection,
    parse_click_event,
    parse_click_events,
)
from tests.unit.test_click_event import BAD_RECORDS, GOOD, LIMITS, RECEIVED_MS, enc, with_
from tests.unit.test_fuzz_parsers import CLICK_RECORDS, FUZZ, HUGE_NUMBERS, IDS, INT64, JSON_VALUES, STAMPS, TEXT


def assert_same_verdicts(ours: list[ClickEvent | Rejection], reference: list[ClickEvent | Rejection]) -> None:
    """Equal verdicts, and for events the same datetime down to its time zone object (== on aware datetimes
    compares only the instant)."""
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference, strict=True):
        assert type(a) is type(b) and a == b, (a, b)
        if isinstance(a, ClickEvent) and isinstance(b, ClickEvent):
            assert a.occurred_at.tzinfo is b.occurred_at.tzinfo is timezone.utc
            assert a.occurred_at.replace(tzinfo=None) == b.occurred_at.replace(tzinfo=None)
            assert a.occurred_at.fold == b.occurred_at.fold


def reference(records: list[tuple[bytes | None, int]], limits: EventLimits) -> list[ClickEvent | Rejection]:
    return [parse_click_event(raw, ms, limits) for raw, ms in records]


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DEFAULT = EventLimits()


@st.composite
def stamps_near(draw: st.DrawFn, received_ms: int, limits: EventLimits) -> str:
    """An RFC 3339 time, mostly inside the receive window, some on an edge of it or of the 1970-3000 range (to the
    microsecond), written with 0 to 10 fraction digits and any offset within +-23:59."""
    received_us = received_ms * 1000
    future_us, past_us = limits.max_future_seconds * 1_000_000, limits.max_past_days * 86_400_000_000
    inside = st.integers(-min(past_us, 10**12), min(future_us, 10**11)) if future_us >= 0 <= past_us else st.just(0)
    edges = [received_us + future_us, received_us - past_us, 0, 32503680000 * 1_000_000]  # the last is 3000-01-01
    us = draw(
        st.one_of(
            *[inside.map(lambda d: received_us + d)] * 4,
            st.tuples(st.sampled_from(edges), st.integers(-3, 3)).map(sum),
            st.tuples(st.sampled_from(edges), st.integers(-2_000_000, 2_000_000)).map(sum),
        )
    )
    offset_minutes = draw(st.one_of(st.just(0), st.integers(-23 * 60 - 59, 23 * 60 + 59)))
    try:
        local = EPOCH + timedelta(microseconds=us) + timedelta(minutes=offset_minutes)
    except OverflowError:
        return "2026-11-26T11:00:00Z"
    digits = draw(st.integers(0, 10))
    fraction = f"{local.microsecond:06d}{draw(st.from_regex(r'[0-9]{4}', fullmatch=True))}"[:digits]
    sign = "+" if offset_minutes >= 0 else "-"
    offset = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    if offset_minutes == 0:
        offset = draw(st.sampled_from(["Z", "Z", "z", "+00:00", "-00:00"]))
    date = f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    return f"{date}T{local.hour:02d}:{local.minute:02d}:{local.second:02d}{'.' if digits else ''}{fraction}{offset}"


# a time that is otherwise fine with one part changed: the edges of the RFC 3339 sub-language the fast path reads
OFFSET_EDITS = ["+05:60", "+24:00", "+00:60", "+23:59", "-23:59", "+0000", "+00", "", " Z", "Z\\n", "z", "-00:00"]
STAMP_EDITS = [("T", "t"), ("T", " "), (":00", ":60"), (":00", ":61"), ("-0", "-1"), (".", ","), ("-", "")]
VERSIONS = ["1", "1.0", "1e0", "10e-1", "1E0", "true", '"1"', "2", "0", "-0", "01", "1.", "null", "NaN", "Infinity"]
VERSIONS += ["9" * 30, "-1", "1.0000000000000001", "[1]", "1 ", " 1"]
# ids at the edges of what an id may be; "a\x7fb" is ASCII that JSON may carry unescaped, yet a control character
ID_EDGES = ["", "x" * 128, "x" * 129, "*", "**", "a\x7fb", "a b", "é", "Łódź", "a\u00a0b", '"q"', "\ud800", "\x00"]
ID_EDGES += ["u\u200b", "\U0001f600", "a/b", "a\\b", " "]
SPACE = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n", "  "])
ODD_SPACE = st.sampled_from(["\x0b", "\x0c", "\x00", "\xa0", "\ufeff", ",", "}", "{", "\x1f", "\x7f", "[", "x"])
MUTATIONS = [
    "repeat", "repeat_same", "repeat_version", "extra", "drop", "wild", "huge", "non_string", "id_edge", "escape",
    "raw_control", "control_in_id", "odd_space", "version", "stamp", "stamp_edit", "offset_edit", "offset_edit",
    "event_type", "record_limit",
]  # fmt: skip


def json_string(value: str, ensure_ascii: bool) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii)


@st.composite
def near_valid_records(draw: st.DrawFn) -> tuple[tuple[bytes, int], EventLimits]:
    """A click of the common valid shape, as raw bytes with its broker timestamp, and the limits to judge it by;
    then none, one or a few mutations, each aimed at one check of the fast path; written with varied whitespace."""
    received_ms = draw(st.one_of(*[st.just(RECEIVED_MS)] * 6, INT64, st.integers(0, 10**13)))
    wide = EventLimits(max_future_seconds=10**12, max_past_days=10**7)
    limits = draw(st.sampled_from([DEFAULT] * 6 + [EventLimits(max_future_seconds=0, max_past_days=1), wide]))
    ascii_only = draw(st.sampled_from([True, True, False]))
    plain = st.from_regex(r"[a-zA-Z0-9 _.:@-]{1,12}", fullmatch=True)
    values = {name: json_string(draw(plain), ascii_only) for name in ("event_id", "user_id", "job_id")}
    values["event_type"] = json.dumps(draw(st.sampled_from(EVENT_TYPES)))
    values["occurred_at"] = json.dumps(draw(stamps_near(received_ms, limits)))
    pairs = [(json.dumps(k), v) for k, v in values.items()]
    if draw(st.integers(0, 3)) == 0:
        pairs.append(('"schema_version"', "1"))
    odd: list[str] = ["", "", ""]  # before the object, after "{", after it
    for what in [draw(st.sampled_from(MUTATIONS)) for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2])))]:
        at = draw(st.integers(0, len(pairs) - 1)) if pairs else 0
        key, value = pairs[at] if pairs else ('"event_id"', '"e"')
        if what == "repeat":  # a key twice, written by hand: json.dumps cannot
            pairs.append((key, json.dumps(draw(st.one_of(plain, st.sampled_from(EVENT_TYPES))))))
        elif what == "repeat_same":
            pairs.append((key, value))
        elif what == "repeat_version":
            pairs += [('"schema_version"', "1")] * 2
        elif what == "extra":
            extra = draw(st.one_of(TEXT, st.sampled_from(["Event_id", "event_id ", "schema", "schemaVersion", ""])))
            pairs.append((json.dumps(extra), json.dumps(draw(JSON_VALUES))))
        elif what == "drop" and pairs:
            del pairs[at]
        elif what == "wild" and pairs:
            pairs[at] = (key, json.dumps(draw(JSON_VALUES)))
        elif what == "huge" and pairs:
            pairs[at] = (key, draw(HUGE_NUMBERS))
        elif what == "non_string" and pairs:
            pairs[at] = (key, draw(st.sampled_from(["17", "null", "true", "1.5", "[]", "{}", '["a"]', "-0"])))
        elif what == "id_edge":
            name = draw(st.sampled_from(['"event_id"', '"user_id"', '"job_id"']))
            new = json_string(draw(st.one_of(st.sampled_from(ID_EDGES), IDS)), draw(st.booleans()))
            pairs = [(k, new if k == name else v) for k, v in pairs]
        elif what == "escape" and len(value) > 2 and value[0] == '"':  # \uXXXX where a plain character would do
            i = draw(st.integers(1, len(value) - 2))
            if value[i] not in '\\"':
                pairs[at] = (key, value[:i] + f"\\u{ord(value[i]):04x}" + value[i + 1 :])
        elif what == "raw_control" and pairs:  # a raw control byte, inside a string or not
            i = draw(st.integers(0, len(value)))
            byte = draw(st.sampled_from(["\x00", "\x01", "\t", "\n", "\x1f", "\x7f", "\x85", "\r"]))
            pairs[at] = (key, value[:i] + byte + value[i:])
        elif what == "control_in_id":  # DEL is the one control character JSON lets through unescaped
            name = draw(st.sampled_from(['"event_id"', '"user_id"', '"job_id"']))
            byte = draw(st.sampled_from(["\x7f", "\x7f", "\x01", "\x00"]))
            pairs = [(k, v[0] + byte + v[1:] if k == name else v) for k, v in pairs]
        elif what == "odd_space":
            odd[draw(st.integers(0, 2))] = draw(ODD_SPACE)
        elif what == "version":
            pairs = [p for p in pairs if p[0] != '"schema_version"'] + [
                ('"schema_version"', draw(st.sampled_from(VERSIONS)))
            ]
        elif what == "stamp":
            pairs = [(k, json.dumps(draw(STAMPS)) if k == '"occurred_at"' else v) for k, v in pairs]
        elif what == "stamp_edit":
            old, new = draw(st.sampled_from(STAMP_EDITS))
            pairs = [(k, v.replace(old, new, 1) if k == '"occurred_at"' else v) for k, v in pairs]
        elif what == "offset_edit":
            offset = draw(st.sampled_from(OFFSET_EDITS))
            pairs = [
                (k, re.sub(r'(Z|z|[+-][0-9:]+)"$', offset + '"', v) if k == '"occurred_at"' else v) for k, v in pairs
            ]
        elif what == "event_type":
            new = json.dumps(draw(st.one_of(st.sampled_from(["Click", "view ", " apply", "", "clicks"]), TEXT)))
            pairs = [(k, new if k == '"event_type"' else v) for k, v in pairs]
        elif what == "record_limit":
            limits = EventLimits(
                -1, limits.max_future_seconds, limits.max_past_days
            )  # set below, once the size is known
    pairs = draw(st.permutations(pairs))
    colon, comma = draw(SPACE) + ":" + draw(SPACE), draw(SPACE) + "," + draw(SPACE)
    body = comma.join(f"{k}{colon}{v}" for k, v in pairs)
    text = draw(SPACE) + odd[0] + "{" + odd[1] + draw(SPACE) + body + draw(SPACE) + "}" + odd[2] + draw(SPACE)
    raw = text.encode("utf-8", "surrogatepass")
    if limits.max_record_bytes == -1:  # a record limit right around this record's size
        limits = EventLimits(len(raw) + draw(st.integers(-1, 1)), limits.max_future_seconds, limits.max_past_days)
    return (raw, received_ms), limits


# mostly near-valid records, some of the fuzz tests' anything-goes records
FAST_FUZZ = settings(FUZZ, max_examples=600)
ANY_RECORD = st.tuples(CLICK_RECORDS, st.one_of(st.just(RECEIVED_MS), INT64))


@FAST_FUZZ
@given(near=st.lists(near_valid_records(), min_size=1, max_size=8), others=st.lists(ANY_RECORD, max_size=3))
@example(near=[((with_(), RECEIVED_MS), LIMITS)], others=[])
@example(
    near=[((enc(GOOD)[:-1] + b', "event_id": "e-2"}', RECEIVED_MS), LIMITS)],  # duplicate key
    others=[(None, RECEIVED_MS), (b"", 0)],
)
def test_batch_verdicts_equal_the_reference_parser_record_by_record(
    near: list[tuple[tuple[bytes, int], EventLimits]], others: list[tuple[bytes | None, int]]
) -> None:
    # one batch has one set of limits: the first record's, applied to all of them
    limits = near[0][1]
    records = [record for record, _ in near] + others
    assert_same_verdicts(parse_click_events(records, limits), reference(records, limits))


@pytest.mark.parametrize("label,raw,code", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_every_rejection_keeps_its_code_detail_and_field(label: str, raw: bytes | None, code: str) -> None:
    [verdict] = parse_click_events([(raw, RECEIVED_MS)], LIMITS)
    assert isinstance(verdict, Rejection) and verdict.code == code, label
    assert verdict == parse_click_event(raw, RECEIVED_MS, LIMITS)


def test_a_repeated_event_id_is_a_duplicate_key_not_the_last_value() -> None:
    # msgspec alone would keep "e-2"; the contract refuses an event that says two things
    raw = b'{"event_id": "e-1", "user_id": "u-1", "job_id": "j-1", "event_type": "click", '
    raw += b'"occurred_at": "2026-11-26T11:59:00Z", "event_id": "e-2"}'
    [verdict] = parse_click_events([(raw, RECEIVED_MS)], LIMITS)
    assert verdict == Rejection("duplicate_key", "field 'event_id' appears twice", "event_id")


def test_a_repeated_schema_version_is_a_duplicate_key() -> None:
    raw = enc({**GOOD, "schema_version": 1})[:-1] + b', "schema_version": 1}'
    [verdict] = parse_click_events([(raw, RECEIVED_MS)], LIMITS)
    assert isinstance(verdict, Rejection) and verdict.code == "duplicate_key"


def test_valid_events_in_a_poll_with_rejections_keep_their_order() -> None:
    cases = [(with_(event_id=f"e-{i}"), f"e-{i}") for i in range(3)] + [(raw, code) for _, raw, code in BAD_RECORDS]
    cases = cases[::2] + cases[1::2]
    records = [(raw, RECEIVED_MS) for raw, _ in cases]
    verdicts = parse_click_events(records, LIMITS)
    assert [v.event_id if isinstance(v, ClickEvent) else v.code for v in verdicts] == [want for _, want in cases]
    assert_same_verdicts(verdicts, reference(records, LIMITS))


# (record, the event it is, written out by hand): what producers send, which the fast path must take itself
COMMON = [
    (with_(), ClickEvent("e-1", "u-1", "j-1", "click", datetime(2026, 11, 26, 11, 59, 0, 250000, timezone.utc))),
    (
        with_(schema_version=1, occurred_at="2026-11-26T13:59:00.123456789+02:00", event_type="apply"),
        ClickEvent("e-1", "u-1", "j-1", "apply", datetime(2026, 11, 26, 11, 59, 0, 123456, timezone.utc)),
    ),
    (
        b'{"event_id":"e 2","user_id":"u!~","job_id":"' + b"j" * 128 + b'","event_type":"view",'
        b'"occurred_at":"2026-11-26T06:29:59.9999999-05:30"}',
        ClickEvent("e 2", "u!~", "j" * 128, "view", datetime(2026, 11, 26, 11, 59, 59, 999999, timezone.utc)),
    ),
    (
        b'\n{\n  "occurred_at": "2026-11-25T12:00:00Z",\n  "job_id": "j",\n  "user_id": "u",\n'
        b'  "event_type": "save",\n  "event_id": "e"\n}\n',
        ClickEvent("e", "u", "j", "save", datetime(2026, 11, 25, 12, tzinfo=timezone.utc)),
    ),
]


@pytest.mark.parametrize("raw,expected", COMMON)
def test_common_records_take_the_fast_path_and_give_the_same_event(raw: bytes, expected: ClickEvent) -> None:
    fast = click_event._common_click_event(raw, RECEIVED_MS, LIMITS)
    assert fast is not None, "the fast path did not take a record of the common shape"
    assert_same_verdicts([fast], [expected])
    assert_same_verdicts(
        parse_click_events([(raw, RECEIVED_MS)], LIMITS), [parse_click_event(raw, RECEIVED_MS, LIMITS)]
    )


@pytest.mark.parametrize(
    "delta_us,accepted",
    [
        # the window is [received - 3650 days, received + 86400 s], both ends included, to the microsecond
        (86_400_000_000, True),
        (86_400_000_001, False),
        (-3650 * 86_400_000_000, True),
        (-3650 * 86_400_000_000 - 1, False),
    ],
)
def test_the_window_edges_are_exact(delta_us: int, accepted: bool) -> None:
    at = EPOCH + timedelta(milliseconds=RECEIVED_MS, microseconds=delta_us)
    raw = with_(occurred_at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    [verdict] = parse_click_events([(raw, RECEIVED_MS)], LIMITS)
    assert isinstance(verdict, ClickEvent) == accepted
    assert_same_verdicts([verdict], [parse_click_event(raw, RECEIVED_MS, LIMITS)])


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-26T11:59:00+05:60",  # fromisoformat reads six hours; RFC 3339 has no minute 60
        "2026-11-26T11:59:00+24:00",
        "2026-11-26T11:59:00+0530",
        "2026-11-26T11:59:00+05",
        "2026-11-26t11:59:00z",
        "2026-11-26 11:59:00Z",
        "2026-11-26T11:59:60Z",
        "2026-11-26T24:00:00Z",
        "2026-11-26T11:59:00.1234567890Z",
        "2026-11-26T11:59:00,5Z",
        "2026-11-26T11:59:00.Z",
        "2026-11-26T11:59Z",
        "2026-11-26T11Z",
        "20261126T115900Z",
        "2026-W48-4T11:59:00Z",
        "2026-330T11:59:00Z",
        "2026-02-29T00:00:00Z",
        "2024-02-29T00:00:00Z",
        "2026-11-26T11:59:00.999999999-00:00",
        "1970-01-01T00:59:59+01:00",
        "2026-11-26T11:59:00",
    ],
)
def test_times_on_the_edges_of_rfc_3339_get_the_reference_verdict(stamp: str) -> None:
    raw = with_(occurred_at=stamp)
    limits = EventLimits(max_record_bytes=4096, max_future_seconds=10**12, max_past_days=10**7)
    assert_same_verdicts(parse_click_events([(raw, RECEIVED_MS)], limits), reference([(raw, RECEIVED_MS)], limits))
