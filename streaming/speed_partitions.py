"""Which partitions of the clicks topic this speed instance owns, and their histories loaded before any record of
theirs is scored.

Speed instances share one consumer group on the clicks topic; Kafka gives each some partitions and moves them when
an instance joins, leaves or dies. Producers key clicks by user id, so a partition's users are known in advance
(`key_partitions`): an instance holds only their histories. On an assignment, partitions it no longer owns are
dropped with their users; new ones are paused (no record of theirs is returned by a poll) until the loop has
loaded their histories, then resumed from where the previous owner stopped: its last committed offset, but not
earlier than `replay_seconds` ago (an owner that died mid-poll leaves clicks unanswered; an instance down for a
day should not replay a day). A partition nobody has committed starts where the topic ended when this instance
started: what came before is in the snapshot, give or take the ingest's lag.

The consumer calls the listener inside `poll`; loading happens in `settle`, called by the loop after each poll,
so a failed load is retried (partitions stay paused) instead of vanishing into the client's listener logging.

A rebalance that never ends is ended here. kafka-python 3.0.12 can drop the result of a group join that completes
between two short polls (a rejoin the leader starts on a metadata update: its own assignment makes the client
think no rejoin is needed any more, so the finished join is never applied), and the instance then owns nothing,
silently, for good. Seen in the suite as an instance that revoked its partitions, logged "Elected group leader",
and never had them assigned again. When partitions were revoked and nothing was assigned for `stall_seconds`
(longer than a legitimate rebalance, which waits at most a session timeout for a dead member), the consumer leaves
the group and subscribes again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition

from jobrec.streaming.histories import Histories

log = logging.getLogger(__name__)


class ClickPartitions(ConsumerRebalanceListener):
    def __init__(
        self,
        consumer: Any,
        topic: str,
        histories: Histories,
        load: Callable[[Collection[int], int], int],
        replay_seconds: float,
        stall_seconds: float = 30.0,
    ):
        self.consumer = consumer
        self.topic = topic
        self.histories = histories
        self._load = load
        self.replay_seconds = replay_seconds
        self.held: set[int] = set()  # partitions whose histories are loaded and whose records are processed
        self.pending: set[int] = set()  # assigned, paused, histories not loaded yet
        self.unpositioned: set[int] = set()  # held through a rebalance, paused until positioned again
        self.settled = 0  # assignments fully loaded (the first one makes the instance ready)
        self._retry_at = 0.0
        self.stall_seconds = stall_seconds
        self.revoked_at: float | None = None  # a rebalance in progress since then (monotonic clock)
        self.rejoins = 0  # stalled rebalances ended by subscribing again
        # the topic's ends when this instance started, before any snapshot: where a partition nobody has committed
        # starts (its clicks since are not in a snapshot this instance loads, or may not be). Asking for them also
        # fetches the topic's metadata, without which the group's first assignment gives this instance nothing.
        self.initial_ends: dict[TopicPartition, int] = consumer.end_offsets(
            self._tps(consumer.partitions_for_topic(topic) or ())
        )

    @property
    def of_partitions(self) -> int:
        return len(self.consumer.partitions_for_topic(self.topic) or ())

    # --- called by the consumer inside poll() ---------------------------------------------------------------
    def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        # nothing to do yet: an eager rebalance revokes everything and may give the same partitions back
        log.info("clicks partitions revoked: %s", sorted(tp.partition for tp in revoked))
        self.revoked_at = time.monotonic()

    def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        # the whole assignment, whatever the protocol passes (eager: all; cooperative: only the new ones)
        self.revoked_at = None
        owned = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
        lost = self.held - owned
        if lost:
            users = self.histories.drop_partitions(lost, self.of_partitions)
            log.info("clicks partitions %s moved to another instance: %d users' histories dropped", sorted(lost), users)
        self.held &= owned
        self.pending = owned - self.held
        # partitions kept through the rebalance keep their histories but not their fetch positions: the client
        # restarts them at the committed offset, or at the topic's end when none was committed (clicks sent during
        # the rebalance would be skipped); they are positioned by this instance's rule too
        self.unpositioned = set(self.held)
        if self.pending or self.unpositioned:
            self.consumer.pause(*self._tps(self.pending | self.unpositioned))
        self._retry_at = 0.0
        log.info("clicks partitions now owned: %s (to load: %s)", sorted(owned), sorted(self.pending))
        if not self.pending and not self.unpositioned:
            self.settled += 1  # nothing to load or position (an instance the group gave no partition)

    # --- called by the loop after each poll -----------------------------------------------------------------
    def settle(self) -> bool:
        """Load the histories of newly assigned partitions, position them and the kept ones, and resume them; True
        when something was loaded."""
        self._rejoin_if_stalled()
        if not (self.pending or self.unpositioned) or time.monotonic() < self._retry_at:
            return False
        new = sorted(self.pending)
        tps = self._tps(self.pending | self.unpositioned)
        started = time.monotonic()
        try:
            ends = self.consumer.end_offsets(tps)
            floor_ms = int((time.time() - self.replay_seconds) * 1000)
            floors = self.consumer.offsets_for_times({tp: floor_ms for tp in tps})
            committed = {tp: self.consumer.committed(tp) for tp in tps}
            rows = self._load(new, self.of_partitions) if new else 0
        except Exception:  # noqa: BLE001 - the partitions stay paused; try again shortly
            self._retry_at = time.monotonic() + 5
            log.exception("could not load the histories of clicks partitions %s; retrying in 5 s", new)
            return False
        for tp in tps:
            floor = floors.get(tp)
            replay_from = floor.offset if floor is not None else ends[tp]
            # a partition added to the topic since this instance started begins at 0
            done = committed[tp] if committed[tp] is not None else self.initial_ends.get(tp, 0)
            start = max(done, replay_from)
            self.consumer.seek(tp, start)
            log.info(
                "clicks partition %d: from offset %d (end %d, committed %s)",
                tp.partition,
                start,
                ends[tp],
                committed[tp],
            )
        self.consumer.resume(*tps)
        kept = sorted(self.held)
        self.held |= set(new)
        self.pending.clear()
        self.unpositioned.clear()
        self.settled += 1
        # after every assignment, also one that only gave back what the instance held (a rejoin after a stalled
        # rebalance, say): what it serves now
        log.info(
            "speed layer owns clicks partitions %s: loaded %s in %.1f s (%d interactions), kept %s; %d users held",
            sorted(self.held),
            new,
            time.monotonic() - started,
            rows,
            kept,
            self.histories.user_count,
        )
        return bool(new)

    def _rejoin_if_stalled(self) -> None:
        if self.revoked_at is None or time.monotonic() - self.revoked_at < self.stall_seconds:
            return
        log.warning(
            "the consumer group's rebalance has not assigned any clicks partition %.0f s after the last revocation; "
            "leaving the group and joining it again",
            time.monotonic() - self.revoked_at,
        )
        self.rejoins += 1
        self.revoked_at = time.monotonic()
        self.consumer.unsubscribe()
        self.consumer.subscribe([self.topic], listener=self)

    def _tps(self, partitions: Collection[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(partitions)]
