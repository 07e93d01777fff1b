"""Read the recommendations topic: the newest list per user, as a consuming service would keep it.

`read_latest_lists` reads the topic once to its end (`jobrec show`, the demo); `LatestLists` follows it for as
long as the read API runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jobrec.streaming.clients import RecommendationsConsumer

log = logging.getLogger(__name__)


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


class LatestLists:
    """user_id -> the newest recommendation message, kept up to date from the compacted topic by a thread that
    never gives up.

    Records that are not lists are skipped by the consumer (and counted in `skipped`). Any other failure (the
    consumer cannot be opened, a poll raises) is logged; the consumer is closed and a new one opened after
    `backoff_seconds`, which reads the topic again from its start. `lists` is served only while `status()` is
    ready: the thread runs, its consumer is open and has read everything that was on the topic when it opened.
    """

    def __init__(
        self,
        open_consumer: Callable[[], RecommendationsConsumer],
        backoff_seconds: float = 1.0,
        poll_timeout_ms: int = 200,
    ) -> None:
        self.lists: dict[str, dict] = {}
        self._open_consumer = open_consumer
        self._backoff_seconds = backoff_seconds
        self._poll_timeout_ms = poll_timeout_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: RecommendationsConsumer | None = None
        self._caught_up = False
        self._was_caught_up = False  # the current consumer had caught up (a failure after that starts a new run)
        self._problem = "not started"
        self._skipped_by_closed_consumers = 0
        self._lock = threading.Lock()  # the count of skipped records stays monotonic while consumers change
        self.restarts = 0  # consumers reopened after a failure

    @property
    def skipped(self) -> int:
        """Records skipped as not being lists, by every consumer this follower opened."""
        with self._lock:
            consumer = self._consumer
            return self._skipped_by_closed_consumers + (consumer.skipped if consumer is not None else 0)

    def start(self) -> LatestLists:
        self._thread = threading.Thread(target=self._run, name="recommendations-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_seconds: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)

    def status(self) -> tuple[bool, str]:
        """(ready, why or what): ready while the follower runs with an open consumer that has caught up."""
        if self._thread is None or not self._thread.is_alive():
            return False, "the recommendations follower is not running"
        if self._consumer is None or not self._caught_up:
            return False, self._problem
        return True, f"following {self._consumer.topic}: {len(self.lists)} lists"

    def _run(self) -> None:
        failures_in_a_row = 0
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as e:  # noqa: BLE001 - logged; the follower reopens its consumer after a backoff
                failures_in_a_row = 0 if self._was_caught_up else failures_in_a_row + 1
                # the traceback once, then a line per retry while the cause lasts (Kafka down at start, no topic)
                log.log(
                    logging.WARNING if failures_in_a_row > 1 else logging.ERROR,
                    "following the recommendations topic failed (%s: %s); reopening in %.1f s",
                    type(e).__name__,
                    e,
                    self._backoff_seconds,
                    exc_info=failures_in_a_row <= 1,
                )
                self._problem = f"reopening the recommendations consumer after {type(e).__name__}: {str(e)[:200]}"
                self.restarts += 1
                self._stop.wait(self._backoff_seconds)

    def _follow(self) -> None:
        self._caught_up = self._was_caught_up = False
        self._problem = "opening the recommendations consumer"
        consumer = self._open_consumer()
        try:
            with self._lock:
                self._consumer = consumer
            self._problem = f"reading {consumer.topic} from its start"
            while not self._stop.is_set():
                consumer.poll(timeout_ms=self._poll_timeout_ms)
                if not self._caught_up and consumer.caught_up():
                    # the new consumer's lists replace the old ones only when they are complete
                    self.lists = consumer.lists  # the consumer updates this dict in place from now on
                    self._caught_up = self._was_caught_up = True
        finally:
            self._caught_up = False
            with self._lock:
                if self._consumer is consumer:
                    self._skipped_by_closed_consumers += consumer.skipped
                self._consumer = None
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - a consumer that cannot close cleanly is dropped anyway
                log.warning("closing the recommendations consumer failed", exc_info=True)
