"""Kafka's part of the API's /readyz: a thread of its own (never the request threadpool) asks for the metadata
of the pipeline's topics every few seconds; the API answers /readyz at once from what it last saw."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeState:
    """What the readiness thread last saw: when a metadata round trip last answered in time (monotonic seconds),
    the newest round trip's failure if it failed, and when the one in flight started."""

    last_ok_at: float | None = None
    last_error: str | None = None
    running_since: float | None = None


def judge_kafka(state: ProbeState, now: float, interval: float, timeout: float) -> tuple[bool, str]:
    """(ready, why) for Kafka: the newest metadata round trip answered within `timeout`, recently enough that the
    checker (one round trip every `interval`) is not stuck, and none is overdue now."""
    if state.running_since is not None and now - state.running_since > timeout:
        return False, f"a Kafka metadata request has had no answer for {now - state.running_since:.1f} s"
    if state.last_error is not None:
        return False, f"the last Kafka metadata request failed: {state.last_error}"
    if state.last_ok_at is None:
        return False, "no Kafka metadata request answered yet"
    age = now - state.last_ok_at
    if age > 2 * interval + timeout:
        return False, f"no Kafka metadata answer for {age:.1f} s"
    return True, f"Kafka answered a metadata request {age:.1f} s ago"


def topic_metadata_problem(described: list[dict[str, Any]], topics: tuple[str, ...]) -> str | None:
    """What is wrong with the metadata of `topics` (kafka-python's describe_topics answer), or None: every topic
    is known and every partition has a leader."""
    by_name = {t.get("name"): t for t in described}
    for name in topics:
        topic = by_name.get(name)
        if topic is None:
            return f"topic {name}: not in the answer"
        if topic.get("error_code", 0) != 0:
            return f"topic {name}: error code {topic['error_code']}"
        if not topic.get("partitions"):
            return f"topic {name}: no partitions"
        leaderless = [p.get("partition_index") for p in topic["partitions"] if p.get("leader_id", -1) < 0]
        if leaderless:
            return f"topic {name}: partitions {leaderless} have no leader"
    return None


class KafkaReadiness:
    """Kafka's part of /readyz, kept by its own thread (never the request threadpool): every `interval_seconds`
    a metadata request for `topics` through an admin client that `open_admin` opens (and opens again after it
    failed to open); a round trip counts only if it answered within `timeout_seconds`."""

    def __init__(
        self, open_admin: Callable[[], Any], topics: tuple[str, ...], interval_seconds: float, timeout_seconds: float
    ) -> None:
        self.state = ProbeState()
        self._open_admin, self._topics = open_admin, topics
        self._interval, self._timeout = interval_seconds, timeout_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-readiness", daemon=True)

    def start(self) -> KafkaReadiness:
        self._thread.start()
        return self

    def stop(self, timeout_seconds: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_seconds)

    def status(self) -> tuple[bool, str]:
        if not self._thread.is_alive():
            return False, "the Kafka readiness check is not running"
        return judge_kafka(self.state, time.monotonic(), self._interval, self._timeout)

    def _run(self) -> None:
        admin = None
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self.state = ProbeState(self.state.last_ok_at, self.state.last_error, started)
                error: str | None
                try:
                    if admin is None:
                        admin = self._open_admin()
                    error = topic_metadata_problem(admin.describe_topics(list(self._topics)), self._topics)
                    took = time.monotonic() - started
                    if error is None and took > self._timeout:
                        error = f"it answered after {took:.2f} s, over {self._timeout:g} s"
                except Exception as e:  # noqa: BLE001 - any failure means not ready; the next round trip retries
                    error = f"{type(e).__name__}: {str(e)[:200]}"
                ok_at = time.monotonic() if error is None else self.state.last_ok_at
                self.state = ProbeState(ok_at, error, None)
                self._stop.wait(self._interval)
        finally:
            if admin is not None:
                try:
                    admin.close()
                except Exception:  # noqa: BLE001 - closing at shutdown; nothing more to do
                    log.warning("closing the readiness admin client failed", exc_info=True)
