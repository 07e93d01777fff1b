"""The speed instance's partition bookkeeping (`speed_partitions.ClickPartitions`) without a broker: the consumer
is a plain record of what was asked of it (assignment, pauses, seeks, subscriptions), the offsets it answers are
fixed numbers, and the expected positions are worked out by hand from the documented rule. The real consumer
group is exercised by tests/integration/test_speed_group.py."""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import TopicPartition
from kafka.structs import OffsetAndTimestamp

from jobrec.streaming.histories import Histories
from jobrec.streaming.speed_partitions import ClickPartitions

TOPIC = "clicks"


class RecordingConsumer:
    def __init__(self, ends: dict[int, int], committed: dict[int, int | None]):
        self.ends, self.committed_at = ends, committed
        self.floors = {p: 0 for p in ends}  # the first offset within the replay window
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.positions: dict[int, int] = {}
        self.subscriptions: list[tuple[list[str], Any]] = []
        self.unsubscribed = 0

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.ends)

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp.partition] for tp in tps}

    def offsets_for_times(self, query: dict[TopicPartition, int]) -> dict[TopicPartition, OffsetAndTimestamp]:
        return {tp: OffsetAndTimestamp(self.floors[tp.partition], query[tp], -1) for tp in query}

    def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_at[tp.partition]

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp.partition] = offset

    def unsubscribe(self) -> None:
        self.unsubscribed += 1

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.subscriptions.append((topics, listener))


def _tps(*partitions: int) -> set[TopicPartition]:
    return {TopicPartition(TOPIC, p) for p in partitions}


def _partitions(consumer: RecordingConsumer, stall_seconds: float = 30.0) -> tuple[ClickPartitions, list]:
    loads: list[tuple[list[int], int]] = []

    def load(wanted: Any, of: int) -> int:
        loads.append((sorted(wanted), of))
        return 0

    return ClickPartitions(consumer, TOPIC, Histories({}), load, 3600.0, stall_seconds=stall_seconds), loads


def test_new_partitions_are_loaded_then_kept_ones_are_positioned_again_without_a_load(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="jobrec.streaming.speed_partitions")
    consumer = RecordingConsumer(ends={0: 10, 1: 20}, committed={0: None, 1: None})
    partitions, loads = _partitions(consumer)
    consumer.ends = {0: 15, 1: 25}  # clicks arrived since the instance started
    consumer.assigned = _tps(0, 1)
    partitions.on_partitions_assigned(consumer.assigned)
    assert consumer.paused == _tps(0, 1) and partitions.settled == 0
    partitions.settle()
    # nobody committed: from the topic's end when the instance started (10 and 20), not the end now
    assert loads == [([0, 1], 2)] and consumer.positions == {0: 10, 1: 20} and consumer.paused == set()
    assert partitions.settled == 1

    # an eager rebalance gives both back: the client would restart them at the topic's end (the clicks sent during
    # the rebalance skipped); they are positioned by the rule again, and nothing is loaded twice
    consumer.committed_at = {0: 12, 1: None}
    consumer.ends = {0: 18, 1: 30}
    consumer.floors = {0: 14, 1: 5}  # partition 0's commit is older than the replay window: from the window's start
    partitions.on_partitions_revoked(consumer.assigned)
    partitions.on_partitions_assigned(consumer.assigned)
    assert consumer.paused == _tps(0, 1)
    caplog.clear()
    assert partitions.settle() is False  # nothing loaded
    assert loads == [([0, 1], 2)] and consumer.positions == {0: 14, 1: 20} and consumer.paused == set()
    # still says what it serves: an operator (and the group test) reads it after every rebalance
    assert "speed layer owns clicks partitions [0, 1]: loaded [] in" in caplog.text
    assert "kept [0, 1]" in caplog.text


def test_a_rebalance_that_assigns_nothing_for_too_long_is_joined_again() -> None:
    consumer = RecordingConsumer(ends={0: 0}, committed={0: None})
    partitions, _ = _partitions(consumer, stall_seconds=0.2)
    consumer.assigned = _tps(0)
    partitions.on_partitions_assigned(consumer.assigned)
    partitions.settle()
    partitions.on_partitions_revoked(consumer.assigned)
    partitions.settle()  # within the stall bound: nothing done
    assert consumer.unsubscribed == 0 and consumer.subscriptions == []
    time.sleep(0.25)
    partitions.settle()
    assert consumer.unsubscribed == 1 and consumer.subscriptions == [([TOPIC], partitions)]
    assert partitions.rejoins == 1
    # an assignment ends the watch: no second rejoin however long it is kept
    partitions.on_partitions_assigned(consumer.assigned)
    time.sleep(0.25)
    partitions.settle()
    assert consumer.unsubscribed == 1


def test_an_instance_given_no_partition_is_ready() -> None:
    consumer = RecordingConsumer(ends={0: 0, 1: 0}, committed={0: None, 1: None})
    partitions, loads = _partitions(consumer)
    partitions.on_partitions_assigned(set())
    assert partitions.settled == 1 and loads == []
