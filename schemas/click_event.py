"""The click-event contract in code: parse one raw Kafka record into a valid event or a reason for rejecting it.

This is the same contract as `click_event.v1.json` (a test checks the two agree on every case it knows), written
by hand because the pipeline needs one short, stable reason per bad record for the dead-letter table, and because
it runs once per record on the hot path. Pure: no Spark, no Kafka; time comes in as an argument so replaying a
record after a crash gives the same verdict. `parse_click_events` judges a poll's records the same way, faster: a
strict msgspec decode takes the common valid record, and anything else goes to `parse_click_event`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import msgspec

from jobrec.schemas.recommendation import NEW_USER_KEY

EVENT_TYPES: tuple[str, ...] = ("view", "click", "save", "apply")
ID_FIELDS: tuple[str, ...] = ("event_id", "user_id", "job_id")
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "user_id", "job_id", "event_type", "occurred_at")
OPTIONAL_FIELDS: tuple[str, ...] = ("schema_version",)
MAX_ID_LENGTH = 128
MAX_TIMESTAMP_LENGTH = 40
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# every accepted time lies in [MIN_TIME, MAX_TIME): the epoch (Spark, Kafka and most stores start there) up to a
# year no real event reaches, far inside what datetime, Arrow and Spark represent. A far-future sentinel for
# "never" (9999-12-31) is refused: a job that never expires leaves expires_at out.
MIN_TIME = EPOCH
MAX_TIME = datetime(3000, 1, 1, tzinfo=timezone.utc)

# The characters an id (and a job's category) must not contain, by reason code. click_event.v1.json and
# job_event.v1.json forbid exactly the union of the three (a unit test compares them on every code point).
# control_char: C0 controls, DEL and the C1 controls, U+0000-U+001F and U+007F-U+009F.
_CONTROL_CHARS = re.compile(r"[\u0000-\u001f\u007f-\u009f]")
# bad_unicode: lone surrogates, U+D800-U+DFFF (a JSON text can escape one, "\ud800"); in a Python str they are
# the only code points that UTF-8 cannot encode, so an id without them always encodes.
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# format_char: invisible characters that make two different ids look alike or reorder how text shows: every
# character of Unicode 15.1's general category Cf (soft hyphen U+00AD, Arabic and Syriac format marks, the
# Mongolian vowel separator U+180E, zero-width space / non-joiner / joiner and the LRM/RLM marks U+200B-U+200F,
# the bidi embeddings and overrides U+202A-U+202E, word joiner, invisible operators and bidi isolates
# U+2060-U+206F, the byte order mark U+FEFF, interlinear annotation U+FFF9-U+FFFB, and beyond the BMP the Kaithi,
# Egyptian, shorthand and musical format characters and the tag characters U+E0000-U+E007F), plus the line and
# paragraph separators U+2028-U+2029, and the unassigned code points inside those ranges (U+2065, U+E0000,
# U+E0002-U+E001F), so each range is one block.
_FORMAT_CHARS = re.compile(
    r"[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    r"\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    r"\U000e0000-\U000e007f]"
)
# all three in one class: a clean id (nearly all of them) costs one scan
_FORBIDDEN_CHARS = re.compile(
    "[" + "".join(p.pattern[1:-1] for p in (_CONTROL_CHARS, _SURROGATES, _FORMAT_CHARS)) + "]"
)
# matched whole (fullmatch: Python's `$` would let a trailing newline through) and with ASCII digits only, as the
# JSON Schema's pattern reads them (Python's \d takes any script's digits, which int() then reads too)
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def epoch_micros(dt: datetime) -> int:
    """An aware datetime as microseconds since the epoch (what Spark's timestamp_micros reads)."""
    return (dt - EPOCH) // timedelta(microseconds=1)


def from_epoch_micros(us: int | None) -> datetime | None:
    """Microseconds since the epoch (a Spark timestamp read through Arrow) as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=us) if us is not None else None


@dataclass(frozen=True)
class ClickEvent:
    """A click event that passed the contract; occurred_at is timezone-aware UTC."""

    event_id: str
    user_id: str
    job_id: str
    event_type: str
    occurred_at: datetime

    @property
    def occurred_at_micros(self) -> int:
        return epoch_micros(self.occurred_at)


@dataclass(frozen=True)
class Rejection:
    """Why a record was refused: a stable machine-readable code and a human-readable detail."""

    code: str
    detail: str
    field: str | None = None  # the event field at fault, when there is one

    @property
    def reason(self) -> str:
        """code: detail, always UTF-8 encodable (a lone surrogate that reached a detail shows as its escape)."""
        return f"{self.code}: {self.detail}".encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class EventLimits:
    """Bounds beyond the JSON Schema, relative to when the broker received the record."""

    max_record_bytes: int = 65536
    max_future_seconds: int = 86400
    max_past_days: int = 3650


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys silently; an event that says two things is not an event
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()  # find the first repeat in one pass: a record of thousands of keys stays cheap
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return doc


def check_schema_version(doc: dict[str, Any]) -> Rejection | None:
    """schema_version, when present, must be the number 1 (1.0 is the same JSON number; true is not)."""
    if "schema_version" not in doc:
        return None
    version = doc["schema_version"]
    if version == 1 and not isinstance(version, bool):
        return None
    # a string is shown quoted with escapes (it may hold anything, a lone surrogate too)
    shown = repr(version)[:24] if isinstance(version, str) else str(version)[:20]
    return Rejection("unsupported_version", f"schema_version {shown}, expected 1", "schema_version")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _since_epoch(text: str) -> timedelta | None:
    """An RFC 3339 date-time with an offset as the time since the epoch, or None if it is not one.

    Plain timedelta arithmetic on the local time and the offset, so a valid stamp outside datetime's range (year
    1 with a positive offset, 9999-12-31T23:59:60Z) gives a value instead of an OverflowError.
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, offset = m.groups()
    # RFC 3339 allows a leap second (60); datetime does not, so count it as the next second's start
    leap = second == "60"
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), 59 if leap else int(second))
    except ValueError:  # no such day or time (month 13, February 30, second 61, year 0)
        return None
    since = local - _NAIVE_EPOCH + timedelta(seconds=int(leap), microseconds=int((frac or "0").ljust(6, "0")[:6]))
    if offset in ("Z", "z"):
        return since
    oh, om = int(offset[1:3]), int(offset[4:6])
    if oh > 23 or om > 59:
        return None
    return since - (1 if offset[0] == "+" else -1) * timedelta(hours=oh, minutes=om)


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 date-time with an offset as aware UTC datetime, or None if it is not one or datetime cannot
    hold it (before year 1 or after 9999 in UTC). Never raises."""
    since = _since_epoch(text)
    if since is None:
        return None
    try:
        return EPOCH + since
    except OverflowError:
        return None


def check_timestamp(value: str, name: str) -> datetime | Rejection:
    """A timestamp field: an RFC 3339 date-time (bad_timestamp) in [MIN_TIME, MAX_TIME) (timestamp_out_of_range)."""
    since = _since_epoch(value) if len(value) <= MAX_TIMESTAMP_LENGTH else None
    if since is None:
        return Rejection("bad_timestamp", f"{name} {value[:48]!r} is not an RFC 3339 date-time", name)
    if not MIN_TIME - EPOCH <= since < MAX_TIME - EPOCH:
        return Rejection(
            "timestamp_out_of_range",
            f"{name} {value!r} is not in [{MIN_TIME:%Y-%m-%dT%H:%M:%SZ}, {MAX_TIME:%Y-%m-%dT%H:%M:%SZ})",
            name,
        )
    return EPOCH + since


def check_received_window(
    occurred: datetime, name: str, value: str, received_at_ms: int, limits: EventLimits
) -> Rejection | None:
    """future_timestamp / past_timestamp: `occurred` judged against the broker's receive time.

    In integer microseconds, so a broker timestamp beyond datetime's range (the producer sets it when the topic
    keeps CreateTime) still gives a verdict instead of an OverflowError.
    """
    occurred_us, received_us = epoch_micros(occurred), received_at_ms * 1000
    if occurred_us > received_us + limits.max_future_seconds * 1_000_000:
        return Rejection("future_timestamp", f"{name} {value} is after the broker received it", name)
    if occurred_us < received_us - limits.max_past_days * 86_400_000_000:
        return Rejection("past_timestamp", f"{name} {value} is more than {limits.max_past_days} days old", name)
    return None


def decode_json_object(raw: bytes | None, max_bytes: int) -> dict[str, Any] | Rejection:
    """The first checks of every record contract: bytes -> one JSON object, or why not."""
    if raw is None:
        return Rejection("empty_record", "the record has no value")
    if len(raw) > max_bytes:
        return Rejection("too_large", f"{len(raw)} bytes, limit {max_bytes}")
    if len(raw) == 0:
        return Rejection("empty_record", "the record value is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejection("invalid_utf8", f"byte {e.start} is not UTF-8")
    if "\x00" in text:
        return Rejection("nul_byte", f"NUL byte at character {text.index(chr(0))}")
    try:
        doc = json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except _DuplicateKey as e:
        return Rejection("duplicate_key", f"field {str(e)[:64]!r} appears twice", str(e)[:64])
    except RecursionError:
        return Rejection("too_deep", "JSON nested too deeply")
    except ValueError as e:  # JSONDecodeError is a ValueError
        return Rejection("invalid_json", str(e)[:200])
    if not isinstance(doc, dict):
        return Rejection("not_object", f"expected a JSON object, got {_json_type(doc)}")
    return doc


def check_id(value: str, name: str) -> Rejection | None:
    """An id field (or a category): non-empty, UTF-8 encodable, at most MAX_ID_LENGTH characters, no control or
    format character (the character sets above)."""
    if value == "":
        return Rejection("empty_field", name, name)
    clean = _FORBIDDEN_CHARS.search(value) is None
    if not clean and (m := _SURROGATES.search(value)) is not None:
        return Rejection("bad_unicode", f"{name} has a lone surrogate {_where(m)}, which UTF-8 cannot encode", name)
    if len(value) > MAX_ID_LENGTH:
        return Rejection("too_long", f"{name} has {len(value)} characters, limit {MAX_ID_LENGTH}", name)
    if clean:
        return None
    if (m := _CONTROL_CHARS.search(value)) is not None:
        return Rejection("control_char", f"{name} contains a control character {_where(m)}", name)
    if (m := _FORMAT_CHARS.search(value)) is not None:
        return Rejection("format_char", f"{name} contains an invisible format character {_where(m)}", name)
    return None


def _where(m: re.Match[str]) -> str:
    return f"U+{ord(m.group()):04X} at character {m.start()}"


def parse_click_event(
    raw: bytes | None, received_at_ms: int, limits: EventLimits = EventLimits()
) -> ClickEvent | Rejection:
    """Check one raw record against click event v1.

    `received_at_ms` is the broker's timestamp of the record (epoch milliseconds): far-future and far-past
    times are judged against it, not against the wall clock, so a replay judges the same way.
    """
    doc = decode_json_object(raw, limits.max_record_bytes)
    if isinstance(doc, Rejection):
        return doc

    unknown = sorted(set(doc) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        return Rejection("unknown_field", f"{unknown[0][:64]!r} is not in click event v1", unknown[0][:64])
    if (bad := check_schema_version(doc)) is not None:
        return bad
    for name in REQUIRED_FIELDS:
        if name not in doc:
            return Rejection("missing_field", name, name)
        if doc[name] is None:
            return Rejection("null_field", name, name)
        if not isinstance(doc[name], str):
            return Rejection("wrong_type", f"{name} must be a string, got {_json_type(doc[name])}", name)
    for name in ID_FIELDS:
        if (bad := check_id(doc[name], name)) is not None:
            return bad
    if doc["user_id"] == NEW_USER_KEY:
        return Rejection("reserved_id", f"user_id {NEW_USER_KEY!r} is the key of the list for new users", "user_id")
    if doc["event_type"] not in EVENT_TYPES:
        return Rejection(
            "unknown_event_type", f"{doc['event_type'][:32]!r}, expected one of {', '.join(EVENT_TYPES)}", "event_type"
        )

    occurred = check_timestamp(doc["occurred_at"], "occurred_at")
    if isinstance(occurred, Rejection):
        return occurred
    if (bad := check_received_window(occurred, "occurred_at", doc["occurred_at"], received_at_ms, limits)) is not None:
        return bad
    return ClickEvent(doc["event_id"], doc["user_id"], doc["job_id"], doc["event_type"], occurred)


# an id as msgspec checks it while decoding: a string of 1 to MAX_ID_LENGTH characters
_CommonId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class _CommonShape(msgspec.Struct, forbid_unknown_fields=True):
    """The only document the fast path judges itself: the five fields as strings, schema_version an integer."""

    event_id: _CommonId
    user_id: _CommonId
    job_id: _CommonId
    event_type: str
    occurred_at: str
    schema_version: int | msgspec.UnsetType = msgspec.UNSET


_COMMON_DECODER = msgspec.json.Decoder(_CommonShape)
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
# a sub-language of _RFC3339 that datetime.fromisoformat reads the same way: upper-case T and Z, and hours,
# minutes and seconds (no leap second) within range, offsets too (fromisoformat takes "+05:60" as six hours)
_COMMON_STAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def _common_click_event(raw: bytes | None, received_at_ms: int, limits: EventLimits) -> ClickEvent | None:
    """The event `parse_click_event` would return for a record of the common valid shape, or None when the record
    is anything else (the caller then asks `parse_click_event`). None is always safe; an event only when every
    check below implies the reference parser accepts the record with these very fields.

    The record must be ASCII without a backslash: then it is UTF-8, every string in it is written literally (no
    escape can make a surrogate or a format character) and every quote opens or closes a string. A raw control
    character is JSON only as whitespace between tokens or, for DEL, inside a string, where the checks below find it.
    """
    if type(raw) is not bytes or not 0 < len(raw) <= limits.max_record_bytes or not raw.isascii() or b"\\" in raw:
        return None
    try:
        doc = _COMMON_DECODER.decode(raw)
    except Exception:  # any refusal or surprise of the fast decoder: the reference parser judges
        return None
    version = doc.schema_version
    # msgspec keeps the last of two equal keys; the reference parser refuses the record. Strings here are the keys
    # and the five string values, so a repeated key shows as two quotes more than the distinct keys explain.
    if raw.count(b'"') != (20 if version is msgspec.UNSET else 22):
        return None
    if version is not msgspec.UNSET and version != 1:
        return None
    event_id, user_id, job_id, stamp = doc.event_id, doc.user_id, doc.job_id, doc.occurred_at
    # printable ASCII holds none of _FORBIDDEN_CHARS
    if (
        user_id == NEW_USER_KEY
        or doc.event_type not in _EVENT_TYPE_SET
        or not (event_id + user_id + job_id).isprintable()
    ):
        return None
    if _COMMON_STAMP.fullmatch(stamp) is None:
        return None
    try:
        # fromisoformat keeps the first six fraction digits, as _since_epoch does
        occurred = datetime.fromisoformat(stamp)
        if occurred.tzinfo is not timezone.utc:
            occurred = occurred.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # no such day, or the offset leaves datetime's years
        return None
    if not MIN_TIME <= occurred < MAX_TIME:
        return None
    # the receive window in float seconds with a second to spare (a float is off by microseconds here); a time
    # near either edge gets the exact integer check
    seconds, received = occurred.timestamp(), received_at_ms // 1000
    if not received + 2 - limits.max_past_days * 86400 < seconds < received + limits.max_future_seconds - 1:
        if check_received_window(occurred, "occurred_at", stamp, received_at_ms, limits) is not None:
            return None
    return ClickEvent(event_id, user_id, job_id, doc.event_type, occurred)


def parse_click_events(
    records: Sequence[tuple[bytes | None, int]], limits: EventLimits
) -> list[ClickEvent | Rejection]:
    """One poll's records, (value, broker timestamp in epoch ms) each, to a verdict each: exactly
    `[parse_click_event(value, ms, limits) for value, ms in records]`, faster when most records are valid.

    Records of the common shape (ASCII without a backslash, the five fields and perhaps schema_version 1, an
    upper-case RFC 3339 time) are decoded by msgspec into a strict struct and checked in a few comparisons; every
    other record, and every record that would be rejected, is judged by `parse_click_event` itself, so rejections
    keep their code, detail and field.
    """
    out: list[ClickEvent | Rejection] = []
    for raw, received_at_ms in records:
        event = _common_click_event(raw, received_at_ms, limits)
        out.append(event if event is not None else parse_click_event(raw, received_at_ms, limits))
    return out
