"""The click-event contract in code: parse one raw Kafka record into a valid event or a reason for rejecting it.

This is the same contract as `click_event.v1.json` (a test checks the two agree on every case it knows), written
by hand because the pipeline needs one short, stable reason per bad record for the dead-letter table, and because
it runs once per record on the hot path. Pure: no Spark, no Kafka; time comes in as an argument so replaying a
record after a crash gives the same verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

EVENT_TYPES: tuple[str, ...] = ("view", "click", "save", "apply")
ID_FIELDS: tuple[str, ...] = ("event_id", "user_id", "job_id")
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "user_id", "job_id", "event_type", "occurred_at")
OPTIONAL_FIELDS: tuple[str, ...] = ("schema_version",)
MAX_ID_LENGTH = 128
MAX_TIMESTAMP_LENGTH = 40

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
        return f"{self.code}: {self.detail}"


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
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise _DuplicateKey(dup)
    return dict(pairs)


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


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 date-time with an offset as aware UTC datetime, or None if it is not one."""
    m = _RFC3339.match(text)
    if not m:
        return None
    year, month, day, hour, minute, second, frac, offset = m.groups()
    micros = int((frac or "0").ljust(6, "0")[:6])
    if offset in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if offset[0] == "+" else -1
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            return None
        tz = timezone(sign * timedelta(hours=oh, minutes=om))
    try:
        # RFC 3339 allows a leap second (60); datetime does not, so fold it into the next second's start
        leap = int(second) == 60
        dt = datetime(
            int(year), int(month), int(day), int(hour), int(minute), 59 if leap else int(second), micros, tzinfo=tz
        )
        if leap:
            dt += timedelta(seconds=1)
    except ValueError:
        return None
    return dt.astimezone(timezone.utc)


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
        return Rejection("duplicate_key", f"field {e} appears twice", str(e))
    except RecursionError:
        return Rejection("too_deep", "JSON nested too deeply")
    except ValueError as e:  # JSONDecodeError is a ValueError
        return Rejection("invalid_json", str(e)[:200])
    if not isinstance(doc, dict):
        return Rejection("not_object", f"expected a JSON object, got {_json_type(doc)}")
    return doc


def check_id(value: str, name: str) -> Rejection | None:
    """An id field: non-empty, at most MAX_ID_LENGTH characters, no control characters."""
    if value == "":
        return Rejection("empty_field", name, name)
    if len(value) > MAX_ID_LENGTH:
        return Rejection("too_long", f"{name} has {len(value)} characters, limit {MAX_ID_LENGTH}", name)
    if _CONTROL_CHARS.search(value):
        return Rejection("control_char", f"{name} contains a control character", name)
    return None


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
    if "schema_version" in doc and (doc["schema_version"] != 1 or isinstance(doc["schema_version"], bool)):
        return Rejection(
            "unsupported_version", f"schema_version {str(doc['schema_version'])[:20]}, expected 1", "schema_version"
        )
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
    if doc["event_type"] not in EVENT_TYPES:
        return Rejection(
            "unknown_event_type", f"{doc['event_type'][:32]!r}, expected one of {', '.join(EVENT_TYPES)}", "event_type"
        )

    stamp = doc["occurred_at"]
    occurred = parse_timestamp(stamp) if len(stamp) <= MAX_TIMESTAMP_LENGTH else None
    if occurred is None:
        return Rejection("bad_timestamp", f"occurred_at {stamp[:48]!r} is not an RFC 3339 date-time", "occurred_at")
    received = EPOCH + timedelta(milliseconds=received_at_ms)
    if occurred > received + timedelta(seconds=limits.max_future_seconds):
        return Rejection("future_timestamp", f"occurred_at {stamp} is after the broker received it", "occurred_at")
    if occurred < received - timedelta(days=limits.max_past_days):
        return Rejection(
            "past_timestamp", f"occurred_at {stamp} is more than {limits.max_past_days} days old", "occurred_at"
        )
    return ClickEvent(doc["event_id"], doc["user_id"], doc["job_id"], doc["event_type"], occurred)
