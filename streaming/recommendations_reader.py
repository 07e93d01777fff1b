"""Read the recommendations topic: the newest list per user, as a consuming service would keep it."""

from __future__ import annotations

import time
from typing import Any

from jobrec.streaming.clients import RecommendationsConsumer


def read_latest_lists(consumer_args: dict[str, Any], topic: str, timeout_seconds: float = 30.0) -> dict[str, dict]:
    """Read the topic from the start to its current end; returns user_id -> newest message (as a dict)."""
    consumer = RecommendationsConsumer(topic=topic, **consumer_args)
    try:
        deadline = time.monotonic() + timeout_seconds
        while not consumer.caught_up() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=500)
        return consumer.lists
    finally:
        consumer.close()
