"""The speed layer's users' histories: what each user did to which job, kept current click by click.

A speed instance holds the histories of the users whose clicks arrive on the clicks-topic partitions it owns. The
snapshot loaded from the interactions table is kept in columns (`HistorySegment`: per user a slice of job codes,
strengths and last-interaction times: 20 bytes per interaction, plus a dict entry and an id string per user).
Measured with tracemalloc on 1M interactions of 100k users, ids already in memory: 31 MB held where dicts per
user took 156 MB; `jobrec bench speed-start` saw 44-49 MB of process memory per million interactions. A user
becomes a `UserHistory` of dicts only when a click of theirs arrives. Partitions a rebalance takes away are
dropped with their users. Pure: no Spark, no Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from jobrec.schemas.click_event import ClickEvent, from_epoch_micros
from jobrec.streaming.key_partitions import key_partitions

# a last_at the table does not have (a backfilled pair): no time, so no decay for it
NO_TIME = np.iinfo(np.int64).min


@dataclass
class UserHistory:
    strengths: dict[str, float] = field(default_factory=dict)
    last_at: dict[str, datetime] = field(default_factory=dict)  # per job, for the decay
    newest_event_at: datetime | None = None


def _record(h: UserHistory, job: str, strength: float, at: datetime | None) -> None:
    """Strength added to the user's job; its last time and the user's newest time moved forward to `at`."""
    h.strengths[job] = h.strengths.get(job, 0.0) + strength
    if at:
        if job not in h.last_at or at > h.last_at[job]:
            h.last_at[job] = at
        if h.newest_event_at is None or at > h.newest_event_at:
            h.newest_event_at = at


class IdCodes:
    """id <-> a small int, in order of first sight: the job ids shared by every segment (a job id is stored once,
    not once per interaction), and the user ids of a load (`speed_sources.HistoryLoader`)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.code: dict[str, int] = {}

    def codes_of(self, job_ids: Sequence[str]) -> np.ndarray:
        out = np.empty(len(job_ids), dtype=np.int32)
        for i, job in enumerate(job_ids):
            c = self.code.get(job)
            if c is None:
                c = self.code[job] = len(self.ids)
                self.ids.append(job)
            out[i] = c
        return out


@dataclass
class HistorySegment:
    """Loaded histories in columns: user `users[u]`'s interactions are rows starts[slot]:starts[slot + 1]."""

    users: dict[str, int]
    starts: np.ndarray  # int64, one more than users
    jobs: np.ndarray  # int32 job codes
    strengths: np.ndarray  # float64
    last_us: np.ndarray  # int64 epoch microseconds, NO_TIME where unknown

    @property
    def rows(self) -> int:
        return int(self.jobs.size)


def build_segment(
    user_codes: np.ndarray, user_ids: Sequence[str], job_codes: np.ndarray, strengths: np.ndarray, last_us: np.ndarray
) -> HistorySegment:
    """A segment from rows whose user is `user_ids[user_codes[row]]` (the codes need not be sorted or dense)."""
    order = np.argsort(user_codes, kind="stable")
    sorted_codes = user_codes[order]
    present, starts = np.unique(sorted_codes, return_index=True)
    return HistorySegment(
        users={user_ids[c]: slot for slot, c in enumerate(present.tolist())},
        starts=np.append(starts, sorted_codes.size).astype(np.int64),
        jobs=job_codes[order],
        strengths=strengths[order].astype(np.float64, copy=False),
        last_us=last_us[order].astype(np.int64, copy=False),
    )


class Histories:
    """user -> history, for the users of the partitions this instance owns; current click by click.

    `users` holds the users whose clicks arrived since the load (and rows given to `load`); the loaded snapshot
    stays in columnar segments per partition until a user's first click moves them to `users`.
    """

    def __init__(self, weights: dict[str, float]):
        self.weights = weights
        self.users: dict[str, UserHistory] = {}
        self.jobs = IdCodes()
        self.segments: dict[int, list[HistorySegment]] = {}

    # --- loading and dropping --------------------------------------------------------------------------------
    def load(self, rows: Iterable[tuple[str, str, float, datetime | None]]) -> None:
        """Rows of (user, job, strength, last_at) added to the users' histories (small loads and tests)."""
        for user, job, strength, last_at in rows:
            _record(self._history(user), job, strength, last_at)

    def add_segment(self, partition: int, segment: HistorySegment) -> None:
        self.segments.setdefault(partition, []).append(segment)

    def drop_partitions(self, partitions: Iterable[int], of_partitions: int) -> int:
        """Forget the users of `partitions` (out of `of_partitions`); returns how many users were dropped."""
        gone = set(partitions)
        popped = [s for p in gone for s in self.segments.pop(p, [])]
        dropped = sum(len(s.users) for s in popped)
        if self.users and gone:
            keys = list(self.users)
            owned = key_partitions(keys, of_partitions)
            for user, p in zip(keys, owned.tolist(), strict=True):
                if p in gone:
                    del self.users[user]
                    # a user moved out of a dropped segment by a click is counted there already
                    dropped += not any(user in s.users for s in popped)
        return dropped

    # --- reading and updating ---------------------------------------------------------------------------------
    def _history(self, user: str) -> UserHistory:
        """The user's history for updating: from `users`, else moved there from a segment, else a new one."""
        h = self.users.get(user)
        if h is None:
            h = self.users[user] = self._from_segments(user) or UserHistory()
        return h

    def _from_segments(self, user: str) -> UserHistory | None:
        found = self._from_segments_slot(user)
        if found is None:
            return None
        s, slot = found
        lo, hi = int(s.starts[slot]), int(s.starts[slot + 1])
        job_ids = [self.jobs.ids[c] for c in s.jobs[lo:hi].tolist()]
        h = UserHistory(strengths=dict(zip(job_ids, s.strengths[lo:hi].tolist(), strict=True)))
        times = s.last_us[lo:hi]
        for job, us in zip(job_ids, times.tolist(), strict=True):
            if us != NO_TIME:
                h.last_at[job] = from_epoch_micros(us)  # type: ignore[assignment]
        known = times[times != NO_TIME]
        if known.size:
            h.newest_event_at = from_epoch_micros(int(known.max()))
        return h

    def get(self, user: str) -> UserHistory | None:
        """The user's history (None: no click and nothing loaded)."""
        h = self.users.get(user)
        if h is None:
            h = self._from_segments(user)
            if h is not None:
                self.users[user] = h
        return h

    def add(self, event: ClickEvent) -> None:
        _record(self._history(event.user_id), event.job_id, self.weights[event.event_type], event.occurred_at)

    @property
    def user_count(self) -> int:
        """Users held (a user moved out of a segment by a click counts once)."""
        loaded = sum(len(s.users) for segments in self.segments.values() for s in segments)
        return loaded + sum(1 for u in self.users if self._from_segments_slot(u) is None)

    def _from_segments_slot(self, user: str) -> tuple[HistorySegment, int] | None:
        for segments in self.segments.values():
            for s in segments:
                slot = s.users.get(user)
                if slot is not None:
                    return s, slot
        return None

    @property
    def loaded_rows(self) -> int:
        return sum(s.rows for segments in self.segments.values() for s in segments)
