"""Python clients for services: send click events, follow the recommendation lists, ask the HTTP API.

    producer = ClickProducer(bootstrap_servers="127.0.0.1:9092")
    producer.send("user-17", "job-42", "apply")          # validated, event_id generated, acknowledged
    consumer = RecommendationsConsumer(bootstrap_servers="127.0.0.1:9092")
    consumer.poll()                                       # reads what is new on the compacted topic
    consumer.latest("user-17")                            # the newest list (or the list for new users), or None
    api = ApiClient("http://127.0.0.1:8080", token="...")
    api.similar_jobs("job-42", k=10)                      # schemas/similar_jobs.v1.json
    api.recommend_session(["job-42", "job-7"])           # schemas/anonymous_recommendation.v1.json

Retrying is safe: an event keeps its event_id across retries, and the pipeline drops repeated event_ids.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ListRecord:
    """One record of the recommendations topic, decoded: the key's user and their list (None for a tombstone or a
    record that is skipped); `skipped` says why a record is not a list (a missing or non-UTF-8 key, a value that
    is not a JSON object with a string user_id)."""

    user_id: str | None
    message: dict[str, Any] | None
    skipped: str | None = None


def decode_list_record(key: bytes | None, value: bytes | None) -> ListRecord:
    """A record of the compacted recommendations topic as a ListRecord; never raises."""
    if key is None:
        return ListRecord(None, None, "no key")
    try:
        user_id = key.decode("utf-8")
    except UnicodeDecodeError:
        return ListRecord(None, None, "the key is not UTF-8")
    if value is None:
        return ListRecord(user_id, None)  # a tombstone: the user's list is withdrawn
    try:
        msg = json.loads(value)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        return ListRecord(user_id, None, f"not JSON ({type(e).__name__})")
    if not isinstance(msg, dict):
        return ListRecord(user_id, None, f"not a JSON object but a {type(msg).__name__}")
    if not isinstance(msg.get("user_id"), str):
        return ListRecord(user_id, None, "no string user_id")
    return ListRecord(user_id, msg)


class RecommendationsConsumer:
    """Follows the compacted recommendations topic from its start; keeps the newest list per user. Raises
    ValueError if the topic does not exist.

    A record that is not a list (see `decode_list_record`) is skipped, counted in `skipped` and logged with its
    partition and offset; if its key names a user, that user's older list is forgotten too, as a reader started
    after compaction would never see it."""

    def __init__(self, topic: str = "job-recommendations", **kafka_args: Any) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.topic = topic
        self._consumer = KafkaConsumer(enable_auto_commit=False, **kafka_args)
        parts = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or [])]
        if not parts:
            self._consumer.close()
            raise ValueError(f"topic {topic} has no partitions (does it exist?)")
        self._consumer.assign(parts)
        self._consumer.seek_to_beginning(*parts)
        self._parts = parts
        self._end_at_start = self._consumer.end_offsets(parts)
        self.lists: dict[str, dict] = {}
        self.skipped = 0

    def caught_up(self) -> bool:
        """Whether everything that was on the topic when this consumer started has been read."""
        return all(self._consumer.position(tp) >= self._end_at_start[tp] for tp in self._parts)

    def poll(self, timeout_ms: int = 1000) -> int:
        """Read what is new; returns how many messages were read (skipped ones included)."""
        n = 0
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for rec in records:
                n += 1
                record = decode_list_record(rec.key, rec.value)
                if record.user_id is not None and record.message is None:
                    self.lists.pop(record.user_id, None)
                elif record.user_id is not None and record.message is not None:
                    self.lists[record.user_id] = record.message
                if record.skipped is not None:
                    self.skipped += 1
                    log.warning(
                        "skipped a record of %s partition %d offset %d (key %r): %s",
                        rec.topic,
                        rec.partition,
                        rec.offset,
                        (rec.key or b"")[:64],
                        record.skipped,
                    )
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


class ApiError(RuntimeError):
    """The API answered with an error: `status` (404 unknown job, 400 bad request, 503 no model yet, ...) and
    its message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class ApiClient:
    """The HTTP API's read side for services: similar jobs and lists for anonymous visitors (stdlib HTTP)."""

    def __init__(self, base_url: str, token: str = "", timeout_seconds: float = 10.0) -> None:
        self.base_url, self.token, self.timeout_seconds = base_url.rstrip("/"), token, timeout_seconds

    def similar_jobs(self, job_id: str, k: int = 10) -> dict[str, Any]:
        """The k open jobs nearest to `job_id` (schemas/similar_jobs.v1.json); ApiError 404 if the serving
        model does not know the job."""
        path = f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}/similar?k={int(k)}"
        return self._call("GET", path)

    def recommend_session(
        self,
        job_ids: Sequence[str] = (),
        events: Sequence[tuple[str, str]] | None = None,
        k: int | None = None,
    ) -> dict[str, Any]:
        """A list for a visitor who is not signed in (schemas/anonymous_recommendation.v1.json): from the jobs
        they touched (`job_ids`, each a click) or from (job_id, event_type) `events`; nothing is stored."""
        body: dict[str, Any] = (
            {"events": [{"job_id": job, "event_type": kind} for job, kind in events]}
            if events is not None
            else {"job_ids": list(job_ids)}
        )
        if k is not None:
            body["k"] = k
        return self._call("POST", "/v1/recommendations", json.dumps(body).encode())

    def _call(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                message = str(json.loads(payload).get("error", ""))
            except (ValueError, AttributeError):
                message = payload[:200].decode("utf-8", "replace")
            raise ApiError(e.code, message) from None
