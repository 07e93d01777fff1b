"""Python clients for services: send click events, follow the recommendation lists.

    producer = ClickProducer(bootstrap_servers="127.0.0.1:9092")
    producer.send("user-17", "job-42", "apply")          # validated, event_id generated, acknowledged
    consumer = RecommendationsConsumer(bootstrap_servers="127.0.0.1:9092")
    consumer.poll()                                       # reads what is new on the compacted topic
    consumer.latest("user-17")                            # the newest list (or the list for new users), or None

Retrying is safe: an event keeps its event_id across retries, and the pipeline drops repeated event_ids.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

from jobrec.schemas.click_event import ClickEvent, parse_click_event
from jobrec.schemas.recommendation import list_for_new_user
from jobrec.streaming.producer import encode_event, make_click_event

log = logging.getLogger(__name__)


class InvalidEvent(ValueError):
    """The event does not follow click event v1; `field` and `reason` say why."""

    def __init__(self, reason: str, field: str | None):
        super().__init__(reason)
        self.reason, self.field = reason, field


class ClickProducer:
    def __init__(
        self, topic: str = "job-clicks", retries: int = 5, backoff_seconds: float = 0.5, **kafka_args: Any
    ) -> None:
        from kafka import KafkaProducer

        self.topic, self.retries, self.backoff_seconds = topic, retries, backoff_seconds
        self._producer = KafkaProducer(acks="all", **kafka_args)

    def send(
        self,
        user_id: str,
        job_id: str,
        event_type: str = "click",
        occurred_at: datetime | None = None,
        event_id: str | None = None,
    ) -> str:
        """Validate, send and wait for the brokers' acknowledgement; returns the event_id. Raises InvalidEvent
        for a bad event, and the last Kafka error after `retries` attempts (same event_id each time)."""
        event = make_click_event(user_id, job_id, event_type, occurred_at, event_id)
        raw = encode_event(event)
        verdict = parse_click_event(raw, int(time.time() * 1000))
        if not isinstance(verdict, ClickEvent):
            raise InvalidEvent(verdict.reason, verdict.field)
        for attempt in range(1, self.retries + 1):
            try:
                self._producer.send(self.topic, key=user_id.encode(), value=raw).get(timeout=30)
                return event["event_id"]
            except Exception as e:  # noqa: BLE001 - retried with the same event_id, then raised
                if attempt == self.retries:
                    raise
                log.warning("send of %s failed (%s); retry %d of %d", event["event_id"], e, attempt, self.retries)
                time.sleep(self.backoff_seconds * attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._producer.close()


class RecommendationsConsumer:
    """Follows the compacted recommendations topic from its start; keeps the newest list per user."""

    def __init__(self, topic: str = "job-recommendations", **kafka_args: Any) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self._consumer = KafkaConsumer(enable_auto_commit=False, **kafka_args)
        parts = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or [])]
        self._consumer.assign(parts)
        self._consumer.seek_to_beginning(*parts)
        self._parts = parts
        self._end_at_start = self._consumer.end_offsets(parts)
        self.lists: dict[str, dict] = {}

    def caught_up(self) -> bool:
        """Whether everything that was on the topic when this consumer started has been read."""
        return all(self._consumer.position(tp) >= self._end_at_start[tp] for tp in self._parts)

    def poll(self, timeout_ms: int = 1000) -> int:
        """Read what is new; returns how many messages were read."""
        n = 0
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for rec in records:
                n += 1
                if rec.key is None:
                    continue
                if rec.value is None:
                    self.lists.pop(rec.key.decode(), None)
                else:
                    self.lists[rec.key.decode()] = json.loads(rec.value)
        return n

    def latest(self, user_id: str, fallback: bool = True) -> dict | None:
        """The user's newest list; for a user without one, the list for new users (source fallback) if
        `fallback` and one was published."""
        msg = self.lists.get(user_id)
        if msg is None and fallback:
            return list_for_new_user(self.lists, user_id)
        return msg

    def close(self) -> None:
        self._consumer.close()
