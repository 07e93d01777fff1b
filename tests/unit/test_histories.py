"""Columnar history segments must give each user exactly the history the row-by-row load gives (the reference),
and a dropped partition must take exactly its users (by the producers' partitioner, computed independently)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import numpy as np
from kafka.partitioner.default import murmur2

from jobrec.schemas.click_event import ClickEvent, epoch_micros
from jobrec.streaming.histories import NO_TIME, Histories, HistorySegment, build_segment

WEIGHTS = {"view": 1.0, "click": 2.0, "save": 3.0, "apply": 5.0}
T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


def _rows(seed: int) -> list[tuple[str, str, float, datetime | None]]:
    rng = random.Random(seed)
    pairs = {(f"u{rng.randrange(60)}", f"j{rng.randrange(40)}") for _ in range(500)}
    return [
        (u, j, float(rng.randrange(1, 9)), None if rng.random() < 0.2 else T0 + timedelta(seconds=rng.randrange(10**6)))
        for u, j in sorted(pairs)
    ]


def _segment(h: Histories, rows: list[tuple[str, str, float, datetime | None]], users: list[str]) -> HistorySegment:
    code = {u: i for i, u in enumerate(users)}
    return build_segment(
        np.array([code[u] for u, *_ in rows], dtype=np.int64),
        users,
        h.jobs.codes_of([j for _, j, *_ in rows]),
        np.array([s for _, _, s, _ in rows]),
        np.array([epoch_micros(t) if t else NO_TIME for *_, t in rows], dtype=np.int64),
    )


def _segmented(rows: list[tuple[str, str, float, datetime | None]]) -> Histories:
    h = Histories(WEIGHTS)
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)  # the table's order is any order
    h.add_segment(0, _segment(h, shuffled, sorted({u for u, *_ in rows})))
    return h


def test_a_segment_gives_every_user_the_row_by_row_history() -> None:
    rows = _rows(1)
    reference = Histories(WEIGHTS)
    reference.load(rows)
    segmented = _segmented(rows)
    assert segmented.user_count == len(reference.users)
    assert segmented.loaded_rows == len(rows)
    for user, expected in reference.users.items():
        assert segmented.get(user) == expected
    assert segmented.get("nobody") is None


def test_a_click_adds_to_the_loaded_history() -> None:
    rows = _rows(2)
    reference, segmented = Histories(WEIGHTS), _segmented(rows)
    reference.load(rows)
    event = ClickEvent("e1", "u3", "j5", "apply", T0 + timedelta(days=30))
    reference.add(event)
    segmented.add(event)
    assert segmented.users["u3"] == reference.users["u3"]
    assert segmented.users["u3"].newest_event_at == event.occurred_at


def test_dropping_partitions_forgets_exactly_their_users() -> None:
    rows = _rows(3)
    h = Histories(WEIGHTS)
    users = sorted({u for u, *_ in rows})
    part = {u: (murmur2(u.encode()) & 0x7FFFFFFF) % 3 for u in users}
    for p in range(3):
        h.add_segment(p, _segment(h, [r for r in rows if part[r[0]] == p], users))
    clicked = [u for u in users if part[u] == 1][0]
    h.add(ClickEvent("e", clicked, "j1", "view", T0))  # moved out of its segment
    h.add(ClickEvent("f", "brand-new", "j1", "view", T0))
    dropped = h.drop_partitions([1], 3)
    part["brand-new"] = (murmur2(b"brand-new") & 0x7FFFFFFF) % 3
    gone = {u for u, p in part.items() if p == 1}
    assert dropped == len(gone)
    for u in part:
        assert (h.get(u) is None) == (u in gone)
