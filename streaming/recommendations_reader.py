"""Read the recommendations topic: the newest list per user, as a consuming service would keep it."""

from __future__ import annotations

import json
import time
from typing import Any


def read_latest_lists(consumer_args: dict[str, Any], topic: str, timeout_seconds: float = 30.0) -> dict[str, dict]:
    """Read the topic from the start to its current end; returns user_id -> newest message (as a dict)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**consumer_args, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        latest: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if all(consumer.position(tp) >= end[tp] for tp in partitions):
                break
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.key is None:
                        continue
                    if rec.value is None:  # a tombstone deletes the user's list
                        latest.pop(rec.key.decode(), None)
                    else:
                        latest[rec.key.decode()] = json.loads(rec.value)
        return latest
    finally:
        consumer.close()
