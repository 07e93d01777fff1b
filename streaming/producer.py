"""Send click events to the clicks topic and job events to the jobs topic: what a producing service does, used by
the CLI, the demo and the benchmarks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from jobrec.schemas.recommendation import format_timestamp


def make_click_event(
    user_id: str,
    job_id: str,
    event_type: str = "click",
    occurred_at: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A click event v1; event_id is generated once here and must be reused on any retry of the same event."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "user_id": user_id,
        "job_id": job_id,
        "event_type": event_type,
        "occurred_at": format_timestamp(occurred_at or datetime.now(timezone.utc)),
    }


def encode_event(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def send_raw(producer: Any, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Send (key, value) records and wait until the brokers acknowledged all of them; returns how many."""
    futures = [producer.send(topic, key=key, value=value) for key, value in records]
    producer.flush()
    for f in futures:
        f.get(timeout=60)
    return len(futures)


def send_click_events(producer: Any, topic: str, events: Iterable[dict[str, Any]]) -> int:
    """Send events keyed by user_id (a user's events stay in order on one partition)."""
    return send_raw(producer, topic, ((str(e["user_id"]).encode(), encode_event(e)) for e in events))


def make_job_event(
    job_id: str,
    action: str,
    category: str | None = None,
    expires_at: datetime | None = None,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A job event v1 (schemas/job_event.v1.json); category and expires_at only for a posted job."""
    event: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()),
        "job_id": job_id,
        "action": action,
        "occurred_at": format_timestamp(occurred_at or datetime.now(timezone.utc)),
    }
    if category is not None:
        event["category"] = category
    if expires_at is not None:
        event["expires_at"] = format_timestamp(expires_at)
    return event


def send_job_events(producer: Any, topic: str, events: Iterable[dict[str, Any]]) -> int:
    """Send job events keyed by job_id (a job's events stay in order)."""
    return send_raw(producer, topic, ((str(e["job_id"]).encode(), encode_event(e)) for e in events))
