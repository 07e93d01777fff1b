"""The checkpoint guard's verdicts: which identity an ingest runs under, and when it must refuse to start."""

from __future__ import annotations

import json

import pytest

from jobrec.streaming.checkpoint_guard import (
    CheckpointMismatch,
    CheckpointState,
    ingest_versions,
    judge_checkpoint,
    legacy_app_id,
    recovery_offsets,
)

LOCATION = "/data/checkpoints/ingest"
MINE = "jobrec-ingest:1111"


def state(identity=None, committed=None, planned=None) -> CheckpointState:
    return CheckpointState(LOCATION, identity, committed, planned)


def test_a_new_checkpoint_on_tables_no_ingest_wrote_gets_a_new_identity() -> None:
    # a backfill's and the job-events query's writes are not an ingest's
    tables = {"events": {}, "interactions": {"jobrec-load:abc:click": 0}, "dead_letters": {"jobrec-jobs:x": 4}}
    assert judge_checkpoint(state(), tables) is None


def test_a_lost_checkpoint_is_refused_naming_what_the_tables_hold_and_the_way_out() -> None:
    tables = {"events": {MINE: 41}, "interactions": {MINE: 41}, "dead_letters": {MINE: 40}}
    with pytest.raises(CheckpointMismatch) as refused:
        judge_checkpoint(state(), tables)
    message = str(refused.value)
    assert LOCATION in message and "batch 41" in message and MINE in message
    assert "--recover-checkpoint" in message and "twice" in message


def test_a_checkpoint_keeps_its_identity_and_may_trail_its_planned_batch() -> None:
    tables = {"events": {MINE: 7, "jobrec-ingest:older": 90}, "interactions": {MINE: 7}}
    # batch 7 planned and written to the tables, the crash came before its commit: Spark replays it
    assert judge_checkpoint(state(MINE, committed=6, planned=7), tables) == MINE
    assert judge_checkpoint(state(MINE, committed=7, planned=7), tables) == MINE
    # a new checkpoint that crashed in its first batch: the identity file is there, nothing committed yet
    assert judge_checkpoint(state(MINE, committed=None, planned=0), {"events": {MINE: 0}}) == MINE
    # and one whose identity was written but whose query never planned a batch
    assert judge_checkpoint(state(MINE), {"events": {"jobrec-ingest:older": 3}}) == MINE


def test_a_stale_checkpoint_behind_the_tables_is_refused() -> None:
    tables = {"events": {MINE: 9}, "interactions": {MINE: 9}}
    with pytest.raises(CheckpointMismatch) as refused:
        judge_checkpoint(state(MINE, committed=5, planned=6), tables)
    assert "older than the tables" in str(refused.value) and "batch 9" in str(refused.value)


def test_a_checkpoint_from_before_the_identity_file_keeps_its_path_identity() -> None:
    legacy = legacy_app_id(LOCATION)
    assert legacy == f"jobrec-ingest:{LOCATION}"
    assert judge_checkpoint(state(None, committed=3, planned=3), {"events": {legacy: 3}}) == legacy
    with pytest.raises(CheckpointMismatch):
        judge_checkpoint(state(None, committed=1, planned=1), {"events": {legacy: 3}})


def test_ingest_versions_take_the_newest_batch_of_each_identity_across_tables() -> None:
    got = ingest_versions({"events": {MINE: 4, "x": 9}, "interactions": {MINE: 3}, "dead_letters": {MINE: 6}})
    assert got == {MINE: (6, "dead_letters")}


def test_recovery_starts_after_the_newest_offset_and_at_the_start_of_an_unseen_partition() -> None:
    offsets = json.loads(recovery_offsets("clicks", {2, 0, 1}, {0: 99, 2: 0}))
    assert offsets == {"clicks": {"0": 100, "1": -2, "2": 1}}
