"""The anonymous list request in code (anonymous_request.v1.json): a request body -> the session's events, or a
Rejection that names the field at fault.

A visitor who is not signed in sends the jobs they touched in this session, either as job ids (each one click) or
as events with their types; the API folds them in as the history of a user who did exactly that. Pure: the same
first checks as a click event (size, UTF-8, one JSON object, no repeated key) and the same id rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from jobrec.schemas.click_event import EVENT_TYPES, Rejection, check_id, check_schema_version, decode_json_object

# the longest list a request may ask for (k): a list is for a page, not an export
MAX_K = 100
# the event type of a job given in job_ids
DEFAULT_EVENT_TYPE = "click"
FIELDS = frozenset({"schema_version", "job_ids", "events", "k"})
EVENT_FIELDS = frozenset({"job_id", "event_type"})


@dataclass(frozen=True)
class AnonymousRequest:
    """A checked request: the session's (job_id, event_type) in the order sent, and the list length asked for
    (None: the configured default)."""

    events: tuple[tuple[str, str], ...]
    k: int | None = None


def parse_k(value: Any, field: str = "k") -> int | Rejection:
    """A list length: an integer from 1 to MAX_K (a JSON number such as 10.0 is 10; true is not a number)."""
    wrong = Rejection("bad_type", f"{field} must be an integer from 1 to {MAX_K}", field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return wrong
    # 1e999 parses as infinity, which int() refuses with an OverflowError; a 400-digit integer overflows a float:
    # type and range errors here, not a crash
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return wrong
    number = int(value)
    if not 1 <= number <= MAX_K:
        shown = str(number) if abs(number) < 10**12 else ("over 10^12" if number > 0 else "below -10^12")
        return Rejection("out_of_range", f"{field} is {shown}, expected 1 to {MAX_K}", field)
    return number


def parse_anonymous_request(raw: bytes, max_bytes: int, max_events: int) -> AnonymousRequest | Rejection:
    """Check a request body against anonymous request v1; at most `max_events` events (job ids)."""
    doc = decode_json_object(raw, max_bytes)
    if isinstance(doc, Rejection):
        return doc
    if (bad := check_schema_version(doc)) is not None:
        return bad
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        return Rejection("unknown_field", f"unknown field {unknown[0][:64]!r}", unknown[0][:64])
    if ("job_ids" in doc) == ("events" in doc):
        return Rejection("missing_field", "send exactly one of job_ids and events", "job_ids")
    k = None
    if "k" in doc:
        checked = parse_k(doc["k"])
        if isinstance(checked, Rejection):
            return checked
        k = checked
    field = "job_ids" if "job_ids" in doc else "events"
    items = doc[field]
    if not isinstance(items, list):
        return Rejection("bad_type", f"{field} must be an array", field)
    if len(items) > max_events:
        return Rejection("too_many", f"{field} has {len(items)} entries, limit {max_events}", field)
    events: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        if field == "job_ids":
            job_id, event_type = item, DEFAULT_EVENT_TYPE
        else:
            if not isinstance(item, dict):
                return Rejection("bad_type", f"{where} must be an object", where)
            extra = sorted(set(item) - EVENT_FIELDS)
            if extra:
                return Rejection("unknown_field", f"{where} has an unknown field {extra[0][:64]!r}", where)
            if "job_id" not in item:
                return Rejection("missing_field", f"{where} has no job_id", f"{where}.job_id")
            job_id, event_type = item["job_id"], item.get("event_type", DEFAULT_EVENT_TYPE)
            if event_type not in EVENT_TYPES:
                return Rejection(
                    "bad_event_type",
                    f"{where}.event_type must be one of {', '.join(EVENT_TYPES)}",
                    f"{where}.event_type",
                )
            where += ".job_id"
        if not isinstance(job_id, str):
            return Rejection("bad_type", f"{where} must be a string", where)
        if (bad := check_id(job_id, where)) is not None:
            return bad
        events.append((job_id, event_type))
    return AnonymousRequest(tuple(events), k)
