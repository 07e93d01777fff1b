"""The speed layer's histories load (`speed_sources.gather_histories`) over Arrow batches as the interactions table
streams them: whatever the batching, each owned user must get exactly the row-by-row history (`Histories.load`,
the reference), the users of partitions not owned must be left out (the producers' partitioner, computed here with
kafka-python's own murmur2), and each owned partition must be one segment. No Delta, no JVM."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from jobrec.schemas import tables as t
from jobrec.schemas.click_event import epoch_micros
from jobrec.streaming.histories import Histories
from jobrec.streaming.speed_sources import LAST_US, gather_histories

WEIGHTS = {"view": 1.0, "click": 2.0, "save": 3.0, "apply": 5.0}
T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)
Row = tuple[str, str, float, "datetime | None"]


def _rows(seed: int, users: int = 60, jobs: int = 40, draws: int = 500) -> list[Row]:
    rng = random.Random(seed)
    pairs = {(f"u{rng.randrange(users)}", f"j{rng.randrange(jobs)}") for _ in range(draws)}
    return [
        (u, j, float(rng.randrange(1, 9)), None if rng.random() < 0.2 else T0 + timedelta(seconds=rng.randrange(10**6)))
        for u, j in sorted(pairs)
    ]


def _batches(rows: list[Row], cuts: list[int]) -> list[pa.RecordBatch]:
    """`rows` in the table's columns, cut into record batches at `cuts`."""
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(rows)), len(rows)]
    out = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        part = rows[lo:hi]
        out.append(
            pa.record_batch(
                {
                    t.USER_ID: pa.array([u for u, *_ in part], pa.string()),
                    t.JOB_ID: pa.array([j for _, j, *_ in part], pa.string()),
                    t.STRENGTH: pa.array([s for _, _, s, _ in part], pa.float64()),
                    LAST_US: pa.array([epoch_micros(x) if x else None for *_, x in part], pa.int64()),
                }
            )
        )
    return out


def _partition(user: str, of: int) -> int:
    return (murmur2(user.encode()) & 0x7FFFFFFF) % of


def _same_histories(got: Histories, rows: list[Row]) -> None:
    reference = Histories(WEIGHTS)
    reference.load(rows)
    assert got.user_count == len(reference.users)
    for user, want in reference.users.items():
        h = got.get(user)
        assert h is not None, user
        assert h.strengths == want.strengths and h.last_at == want.last_at, user
        assert h.newest_event_at == want.newest_event_at, user


def test_every_user_gets_the_row_by_row_history_whatever_the_batches() -> None:
    rows = _rows(1)
    shuffled = rows[:]
    random.Random(2).shuffle(shuffled)  # the table's order is any order: a user's rows are in several batches
    h = Histories(WEIGHTS)
    assert gather_histories(_batches(shuffled, [50, 51, 200, 333]), h) == len(rows)
    _same_histories(h, rows)
    assert list(h.segments) == [0] and len(h.segments[0]) == 1


def test_only_the_owned_partitions_users_are_kept_one_segment_each() -> None:
    rows = _rows(3, users=200, draws=1500)
    random.Random(4).shuffle(rows)
    owned = [1, 3]
    h = Histories(WEIGHTS)
    kept = gather_histories(_batches(rows, list(range(0, len(rows), 97))), h, owned, 4)
    mine = [r for r in rows if _partition(r[0], 4) in owned]
    assert kept == len(mine) > 0
    _same_histories(h, mine)
    assert {p: len(s) for p, s in h.segments.items()} == {1: 1, 3: 1}
    # the users of the other partitions are not there at all
    assert all(h.get(u) is None for u, *_ in rows if _partition(u, 4) not in owned)
    # and dropping a partition takes exactly its users
    h.drop_partitions([3], 4)
    _same_histories(h, [r for r in mine if _partition(r[0], 4) == 1])


def test_an_empty_table_or_no_owned_user_loads_nothing() -> None:
    h = Histories(WEIGHTS)
    assert gather_histories([], h) == 0 and h.user_count == 0 and h.segments == {}
    rows = [r for r in _rows(5) if _partition(r[0], 4) == 0]
    assert gather_histories(_batches(rows, [10]), h, [1, 2], 4) == 0 and h.segments == {}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    owned=st.sets(st.integers(0, 3), min_size=1),
)
def test_any_batching_and_any_owned_partitions_give_the_reference(seed: int, cuts: list[int], owned: set[int]) -> None:
    rows = _rows(seed, users=30, jobs=15, draws=400)
    random.Random(seed).shuffle(rows)
    h = Histories(WEIGHTS)
    mine = [r for r in rows if _partition(r[0], 4) in owned]
    assert gather_histories(_batches(rows, cuts), h, owned, 4) == len(mine)
    _same_histories(h, mine)
