"""The job-event contract in code (job_event.v1.json): a raw Kafka record -> a JobEvent or a Rejection.

Pure, like `click_event`: the same first checks (size, UTF-8, one JSON object, no repeated key) and the same
reason codes, so job events share the dead-letter table with click events (kafka_topic tells them apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jobrec.schemas.click_event import (
    EventLimits,
    Rejection,
    check_id,
    check_received_window,
    check_schema_version,
    check_timestamp,
    decode_json_object,
)

ACTIONS: tuple[str, ...] = ("posted", "closed")
POSTED, CLOSED = ACTIONS
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "job_id", "action", "occurred_at")
POSTED_ONLY_FIELDS: tuple[str, ...] = ("category", "expires_at")
OPTIONAL_FIELDS: tuple[str, ...] = ("schema_version", *POSTED_ONLY_FIELDS)
DEFAULT_LIMITS = EventLimits()


@dataclass(frozen=True)
class JobEvent:
    """A job event that passed the contract; times are timezone-aware UTC. category is as sent (not normalised)."""

    event_id: str
    job_id: str
    action: str
    occurred_at: datetime
    category: str | None = None
    expires_at: datetime | None = None


def parse_job_event(
    raw: bytes | None, received_at_ms: int, limits: EventLimits = DEFAULT_LIMITS
) -> JobEvent | Rejection:
    """Check one raw record against job event v1; times are judged against the broker's receive time."""
    doc = decode_json_object(raw, limits.max_record_bytes)
    if isinstance(doc, Rejection):
        return doc
    unknown = sorted(set(doc) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        return Rejection("unknown_field", f"{unknown[0][:64]!r} is not in job event v1", unknown[0][:64])
    if (bad := check_schema_version(doc)) is not None:
        return bad
    for name in REQUIRED_FIELDS + POSTED_ONLY_FIELDS:
        if name not in doc:
            if name in REQUIRED_FIELDS:
                return Rejection("missing_field", name, name)
            continue
        if doc[name] is None:
            return Rejection("null_field", name, name)
        if not isinstance(doc[name], str):
            return Rejection("wrong_type", f"{name} must be a string, got {type(doc[name]).__name__}", name)
    for name in ("event_id", "job_id", "category"):
        if name in doc and (bad := check_id(doc[name], name)) is not None:
            return bad
    action = doc["action"]
    if action not in ACTIONS:
        return Rejection("unknown_action", f"{action[:32]!r}, expected one of {', '.join(ACTIONS)}", "action")
    if action == CLOSED:
        for name in POSTED_ONLY_FIELDS:
            if name in doc:
                return Rejection("field_not_allowed", f"{name} is only for a posted event", name)
    occurred = check_timestamp(doc["occurred_at"], "occurred_at")
    if isinstance(occurred, Rejection):
        return occurred
    if (bad := check_received_window(occurred, "occurred_at", doc["occurred_at"], received_at_ms, limits)) is not None:
        return bad
    expires: datetime | None = None
    if "expires_at" in doc:
        stamp = check_timestamp(doc["expires_at"], "expires_at")
        if isinstance(stamp, Rejection):
            return stamp
        expires = stamp
        if expires <= occurred:
            return Rejection("bad_expiry", "expires_at must be after occurred_at", "expires_at")
    return JobEvent(doc["event_id"], doc["job_id"], action, occurred, doc.get("category"), expires)
