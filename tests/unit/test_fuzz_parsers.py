"""Fuzzing the record contracts: for any bytes, and for JSON documents built to hit every corner (lone surrogates,
control and format characters, extreme times, nested values, repeated keys, huge numbers), the parsers never
raise, every verdict is a known reason code or an event the pipeline can store, and the Arrow-batch parsers
that run inside Spark return one valid row per record. A raise there fails the micro-batch and, on a replay, every
micro-batch after it (issue 11)."""

from __future__ import annotations

import json
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobrec.batch.core.catalog import CategoryNormaliser
from jobrec.schemas.click_event import (
    EVENT_TYPES,
    ClickEvent,
    EventLimits,
    Rejection,
    epoch_micros,
    parse_click_event,
)
from jobrec.schemas.job_event import ACTIONS, JobEvent, parse_job_event
from jobrec.streaming import job_events, parse

SCHEMAS = Path(__file__).parents[2] / "schemas"
CLICK_SCHEMA = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "click_event.v1.json").read_text()))
JOB_SCHEMA = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "job_event.v1.json").read_text()))

# the reason codes of the README's "What happens to bad input", with issue 11's additions
COMMON_CODES = {
    "invalid_json", "invalid_utf8", "not_object", "missing_field", "null_field", "wrong_type", "empty_field",
    "too_long", "control_char", "bad_timestamp", "future_timestamp", "past_timestamp", "nul_byte", "too_deep",
    "too_large", "unknown_field", "duplicate_key", "unsupported_version", "empty_record",
    "bad_unicode", "format_char", "timestamp_out_of_range",
}  # fmt: skip
CLICK_CODES = COMMON_CODES | {"unknown_event_type", "reserved_id"}
JOB_CODES = COMMON_CODES | {"unknown_action", "field_not_allowed", "bad_expiry"}
# codes a JSON Schema cannot give: judged against the receive time, the calendar, the range, or the raw text
SCHEMA_BLIND = {
    "future_timestamp", "past_timestamp", "timestamp_out_of_range", "bad_timestamp", "bad_expiry",
    "duplicate_key", "too_large",
}  # fmt: skip
# what no accepted string may hold, from the Unicode database rather than the parser's own lists
UNSEEN_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
LOW, HIGH = datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(3000, 1, 1, tzinfo=timezone.utc)

RECEIVED_MS = 1795694400000  # 2026-11-26T12:00:00Z
INT64 = st.integers(-(2**63), 2**63 - 1)
# mostly the broker time of the plausible documents; any 64-bit number (CreateTime topics take the producer's)
RECEIVED = st.one_of(*[st.just(RECEIVED_MS)] * 4, INT64, st.integers(-(10**13), 10**14))
# the defaults, and limits so wide that only the range check is left to judge a time
LIMITS = st.sampled_from([EventLimits(), EventLimits(max_future_seconds=10**12, max_past_days=10**7)])

# every code point, lone surrogates (category Cs) included, and the characters issue 11 is about
ANY_CHAR = st.characters(codec=None, categories=None)
NASTY_CHAR = st.sampled_from(
    ["\ud800", "\udfff", "\x00", "\n", "\x7f", "\x85", "\x9f", "\u00ad", "\u061c", "\u200b", "\u200d", "\u2028"]
    + ["\u202e", "\u2066", "\u2069", "\ufeff", "\U000e0041", "\U0001f600", "\u00a0", "*", '"', "\\", "é", "ß"]
)
TEXT = st.text(st.one_of(ANY_CHAR, NASTY_CHAR), max_size=12)
PLAIN_ID = st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True)
WILD_ID = st.one_of(
    st.sampled_from(["*", "", "pj\ud800", "u\u0085", "j\u202e1", "e\u200b1", "x" * 128, "x" * 129, "Łódź-\U0001f600"]),
    TEXT,
    st.tuples(PLAIN_ID, NASTY_CHAR, PLAIN_ID).map("".join),
)
IDS = st.one_of(PLAIN_ID, WILD_ID)


@st.composite
def stamps(draw: st.DrawFn) -> str:
    """RFC 3339-like times: mostly well formed, years 0001-9999, offsets up to +-23:59, leap seconds."""
    year = draw(st.one_of(st.integers(2017, 2027), st.integers(0, 9999), st.sampled_from([1, 1969, 1970, 2999, 3000])))
    month, day = draw(st.integers(1, 12)), draw(st.one_of(st.integers(1, 28), st.integers(0, 32)))
    hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    second = draw(st.one_of(st.integers(0, 59), st.just(60), st.just(61)))
    frac = draw(st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,10}", fullmatch=True)))
    sign, oh, om = draw(st.sampled_from("+-")), draw(st.integers(0, 24)), draw(st.integers(0, 60))
    offset = draw(st.sampled_from(["Z", "z", f"{sign}{oh:02d}:{om:02d}", f"{sign}23:59"]))
    t = draw(st.sampled_from("TTTTt "))
    return f"{year:04d}-{month:02d}-{day:02d}{t}{hour:02d}:{minute:02d}:{second:02d}{frac}{offset}"


STAMPS = st.one_of(
    stamps(),
    stamps(),
    st.sampled_from(["9999-12-31T23:59:60Z", "0001-01-01T00:00:00+00:01", "2026-11-26T11:00:00Z\n", "yesterday"]),
    TEXT,
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, st.sampled_from([1, 1.0, 2, True, "1"]))
JSON_VALUES = st.recursive(
    SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(TEXT, kids, max_size=3)), max_leaves=8
)
# number literals json.dumps would never write: past the int parser's digit limit, past a float's range
HUGE_NUMBERS = st.sampled_from(["9" * 5000, "-" + "1" * 4300, "1e999999", "-1e-999999", "1" * 400 + ".5", "1E+400"])


@st.composite
def documents(
    draw: st.DrawFn, fields: dict[str, st.SearchStrategy], optional: tuple[str, ...] = (), mutate: bool = True
) -> bytes:
    """A JSON object as raw bytes: every field with a plausible or nasty value, then (if `mutate`) up to three
    mutations (a field dropped, given a wild value or a number literal no json.dumps writes, repeated, an unknown
    key added), in any order; escaped to ASCII or written as is (a lone surrogate then becomes bytes UTF-8
    refuses)."""
    ensure_ascii = draw(st.sampled_from([True, True, True, False]))

    def dumps(value: object) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii)

    pairs = [
        (name, dumps(draw(value))) for name, value in fields.items() if name not in optional or draw(st.booleans())
    ]
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3])) if mutate else 0):
        name = draw(st.sampled_from([*fields, "schema_version"]))
        what = draw(st.sampled_from(["drop", "wild", "huge", "repeat", "unknown"]))
        if what == "drop":
            pairs = [(k, v) for k, v in pairs if k != name]
        elif what in ("wild", "huge"):
            value = dumps(draw(JSON_VALUES)) if what == "wild" else draw(HUGE_NUMBERS)
            pairs = [(k, v) for k, v in pairs if k != name] + [(name, value)]
        elif what == "repeat":
            pairs.append((name, dumps(draw(fields.get(name, JSON_VALUES)))))
        else:
            pairs.append((draw(TEXT), dumps(draw(JSON_VALUES))))
    pairs = draw(st.permutations(pairs))
    text = "{" + ", ".join(f"{dumps(k)}: {v}" for k, v in pairs) + "}"
    return text.encode("utf-8", "surrogatepass")


# ids that may well be accepted: any text without the characters no id may hold (by the Unicode database)
FAIR_ID = st.text(st.characters(codec=None, exclude_categories=tuple(UNSEEN_CATEGORIES)), min_size=1, max_size=12)


def fields_of(ids: st.SearchStrategy[str], stamps: st.SearchStrategy[str], wild: bool) -> dict[str, dict]:
    """The click and the job fields, each with its strategy: `wild` adds nasty text to the enumerations."""
    event_types, actions = st.sampled_from(EVENT_TYPES), st.sampled_from(ACTIONS)
    if wild:
        event_types, actions = st.one_of(event_types, TEXT), st.one_of(actions, TEXT)
    click = {"event_id": ids, "user_id": ids, "job_id": ids, "event_type": event_types, "occurred_at": stamps}
    job = {"event_id": ids, "job_id": ids, "action": actions, "occurred_at": stamps, "category": ids}
    return {"click": click, "job": {**job, "expires_at": stamps}}


WILD_FIELDS = fields_of(IDS, STAMPS, wild=True)
FAIR_FIELDS = fields_of(st.one_of(FAIR_ID, PLAIN_ID), stamps(), wild=False)


@st.composite
def spliced(draw: st.DrawFn, docs: st.SearchStrategy[bytes]) -> bytes:
    """A document with a few bytes replaced: truncations, broken UTF-8, stray quotes and brackets."""
    raw = draw(docs)
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + draw(st.binary(max_size=4)) + raw[at + draw(st.integers(0, 4)) :]


def records(kind: str, optional: tuple[str, ...] = ()) -> st.SearchStrategy[bytes | None]:
    docs = documents(WILD_FIELDS[kind], optional)
    fair = documents(FAIR_FIELDS[kind], optional, mutate=False)
    # arbitrary bytes seldom get past the first checks, and the properties of accepted events need events that
    # are accepted: mostly documents, some of them fair ones
    return st.one_of(
        st.binary(max_size=200), docs, docs, fair, spliced(docs), st.sampled_from([None, b"", b"[" * 5000])
    )


CLICK_RECORDS, JOB_RECORDS = records("click"), records("job", ("category", "expires_at"))
FUZZ = settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def issue_11_click(field: str, json_text: str) -> bytes:
    """A click with one field's JSON text as issue 11's attacker wrote it (escapes kept as written)."""
    doc = {
        "event_id": '"e"',
        "user_id": '"u"',
        "job_id": '"j"',
        "event_type": '"view"',
        "occurred_at": '"2026-11-26T11:00:00Z"',
    }
    doc[field] = json_text
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in doc.items()) + "}").encode()


ISSUE_11_CLICKS = [
    issue_11_click("job_id", r'"pj\ud800"'),
    issue_11_click("occurred_at", '"9999-12-31T23:59:60Z"'),
    issue_11_click("occurred_at", '"0001-01-01T00:00:00+00:01"'),
    issue_11_click("user_id", '"*"'),
    issue_11_click("user_id", r'"u\u0085"'),
    issue_11_click("job_id", r'"\u202ej"'),
    issue_11_click("event_id", r'"e\u200b"'),
]


def assert_storable(text: str) -> None:
    """An accepted id or category: 1 to 128 characters, UTF-8 encodable, nothing invisible or controlling."""
    assert 1 <= len(text) <= 128
    text.encode("utf-8")
    assert not [c for c in text if unicodedata.category(c) in UNSEEN_CATEGORIES], ascii(text)


def _refuse(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def schema_view(raw: bytes | None) -> dict | None:
    """The document as a JSON Schema validator sees it, or None where it cannot (not UTF-8 JSON, NaN, too deep)."""
    if raw is None:
        return None
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def check_verdict(verdict: object, raw: bytes | None, codes: set[str], schema: jsonschema.Validator) -> None:
    doc = schema_view(raw)
    if isinstance(verdict, Rejection):
        assert verdict.code in codes, verdict
        verdict.reason.encode("utf-8")
        # what the published schema accepts, the parser refuses only for reasons the schema cannot see
        if doc is not None and schema.is_valid(doc):
            assert verdict.code in SCHEMA_BLIND, verdict
        return
    assert doc is not None and schema.is_valid(doc), raw  # what the parser accepts, the schema accepts
    times = [verdict.occurred_at]
    if isinstance(verdict, ClickEvent):
        for text in (verdict.event_id, verdict.user_id, verdict.job_id):
            assert_storable(text)
        assert verdict.user_id != "*" and verdict.event_type in EVENT_TYPES
    else:
        assert isinstance(verdict, JobEvent)
        for text in (verdict.event_id, verdict.job_id, *([verdict.category] if verdict.category is not None else [])):
            assert_storable(text)
        assert verdict.action in ACTIONS
        times += [verdict.expires_at] if verdict.expires_at is not None else []
    for t in times:
        assert t.tzinfo == timezone.utc and LOW <= t < HIGH, t


@FUZZ
@given(raw=CLICK_RECORDS, received_ms=RECEIVED, limits=LIMITS)
@example(raw=ISSUE_11_CLICKS[0], received_ms=RECEIVED_MS, limits=EventLimits())
@example(raw=ISSUE_11_CLICKS[1], received_ms=RECEIVED_MS, limits=EventLimits())
@example(raw=ISSUE_11_CLICKS[2], received_ms=RECEIVED_MS, limits=EventLimits())
@example(raw=ISSUE_11_CLICKS[3], received_ms=RECEIVED_MS, limits=EventLimits())
@example(raw=ISSUE_11_CLICKS[4], received_ms=RECEIVED_MS, limits=EventLimits())
@example(raw=ISSUE_11_CLICKS[5], received_ms=RECEIVED_MS, limits=EventLimits())
@example(raw=ISSUE_11_CLICKS[6], received_ms=RECEIVED_MS, limits=EventLimits())
@example(raw=ISSUE_11_CLICKS[1], received_ms=2**63 - 1, limits=EventLimits(max_past_days=10**7))
def test_click_parser_never_raises_and_accepts_only_storable_events(
    raw: bytes | None, received_ms: int, limits: EventLimits
) -> None:
    check_verdict(parse_click_event(raw, received_ms, limits), raw, CLICK_CODES, CLICK_SCHEMA)


@FUZZ
@given(raw=JOB_RECORDS, received_ms=RECEIVED, limits=LIMITS)
@example(raw=b'{"event_id": "e", "job_id": "pj\\ud800", "action": "closed", "occurred_at": "2026-11-26T11:00:00Z"}',
         received_ms=RECEIVED_MS, limits=EventLimits())  # fmt: skip
@example(raw=b'{"event_id": "e", "job_id": "j", "action": "posted", "occurred_at": "2026-11-26T11:00:00Z", '
             b'"expires_at": "9999-12-31T23:59:60Z"}', received_ms=RECEIVED_MS, limits=EventLimits())  # fmt: skip
@example(raw=b'{"event_id": "e", "job_id": "j", "action": "posted", "occurred_at": "0001-01-01T00:00:00+00:01"}',
         received_ms=RECEIVED_MS, limits=EventLimits())  # fmt: skip
def test_job_parser_never_raises_and_accepts_only_storable_events(
    raw: bytes | None, received_ms: int, limits: EventLimits
) -> None:
    check_verdict(parse_job_event(raw, received_ms, limits), raw, JOB_CODES, JOB_SCHEMA)


def kafka_batch(raws: list[bytes | None], received: list[int | None]) -> pa.RecordBatch:
    """What mapInArrow hands the parsers: the Kafka source's columns with Spark's types."""
    return pa.RecordBatch.from_pydict(
        {
            parse.IN_VALUE: pa.array(raws, pa.binary()),
            parse.IN_TOPIC: pa.array(["t"] * len(raws), pa.string()),
            parse.IN_PARTITION: pa.array([3] * len(raws), pa.int32()),
            parse.IN_OFFSET: pa.array(range(len(raws)), pa.int64()),
            parse.IN_RECEIVED_MS: pa.array(received, pa.int64()),
        }
    )


def check_batch(out: pa.RecordBatch, raws: list[bytes | None], schema: pa.Schema, verdicts: list[object]) -> None:
    assert out.schema == schema and out.num_rows == len(raws)
    out.validate(full=True)  # offsets, lengths and UTF-8 of every string: what Spark will read
    rows = out.to_pylist()
    for row, raw, verdict in zip(rows, raws, verdicts, strict=True):
        for value in row.values():
            if isinstance(value, str):
                value.encode("utf-8")
        if isinstance(verdict, Rejection):
            assert (row["reason_code"], row["reason"], row["raw"]) == (verdict.code, verdict.reason, raw)
        else:
            assert row["reason_code"] is None and row["raw"] is None
            assert isinstance(verdict, (ClickEvent, JobEvent))
            assert (row["event_id"], row["job_id"]) == (verdict.event_id, verdict.job_id)
            assert row[parse.OCCURRED_AT_US] == epoch_micros(verdict.occurred_at)
    assert [r["kafka_offset"] for r in rows] == list(range(len(raws)))


BATCH = st.lists(st.tuples(CLICK_RECORDS, st.one_of(st.none(), RECEIVED)), min_size=1, max_size=6)
JOB_BATCH = st.lists(st.tuples(JOB_RECORDS, st.one_of(st.none(), RECEIVED)), min_size=1, max_size=6)
BATCH_FUZZ = settings(FUZZ, max_examples=300)


@BATCH_FUZZ
@given(records=BATCH, limits=LIMITS)
@example(records=[(raw, RECEIVED_MS) for raw in ISSUE_11_CLICKS], limits=EventLimits())
def test_click_batch_parser_returns_one_valid_row_per_record(
    records: list[tuple[bytes | None, int | None]], limits: EventLimits
) -> None:
    raws, received = [r for r, _ in records], [ms for _, ms in records]
    out = parse.parse_record_batch(kafka_batch(raws, received), limits)
    verdicts = [parse_click_event(r, ms if ms is not None else 0, limits) for r, ms in records]
    check_batch(out, raws, parse.PARSED_ARROW_SCHEMA, verdicts)


@BATCH_FUZZ
@given(records=JOB_BATCH, limits=LIMITS, ttl=st.sampled_from([0.0, 30.0, 36500.0]))
def test_job_batch_parser_returns_one_valid_row_per_record(
    records: list[tuple[bytes | None, int | None]], limits: EventLimits, ttl: float
) -> None:
    raws, received = [r for r, _ in records], [ms for _, ms in records]
    normaliser = CategoryNormaliser(["IT", "Retail"], {"Retial": "Retail"})
    out = job_events.parse_job_record_batch(kafka_batch(raws, received), limits, normaliser, ttl)
    verdicts = [parse_job_event(r, ms if ms is not None else 0, limits) for r, ms in records]
    check_batch(out, raws, job_events.PARSED_JOB_ARROW_SCHEMA, verdicts)
