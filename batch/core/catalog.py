"""The job catalog's rules, pure: category normalisation, which event wins, which jobs may be recommended.

Used by the Delta side (the CSV load and the job-events stream, `batch.jobs_table`) and by the speed layer's
in-memory copy of the catalog, so both decide alike. No Spark, no Kafka.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from jobrec.batch.core.top_n import NO_CATEGORY
from jobrec.schemas import tables as t
from jobrec.schemas.job_event import CLOSED, JobEvent

_SPACES = re.compile(r"\s+")


def _key(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


@dataclass
class CategoryNormaliser:
    """Raw category -> canonical name: trimmed, matched ignoring case and spaces, known misspellings fixed.

    A category that is neither canonical nor a known alias is kept (trimmed) and counted as unrecognised, so a
    new category shows up in the logs instead of being forced into a wrong one.
    """

    categories: Sequence[str]
    aliases: Mapping[str, str]
    fixed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (raw, canonical) -> rows
    unrecognised: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._canonical = {_key(c): c for c in self.categories}
        self._aliases = {_key(a): self._canonical[_key(c)] for a, c in self.aliases.items()}

    def normalise(self, raw: str | None) -> str | None:
        if raw is None or not raw.strip():
            return None
        key = _key(raw)
        if key in self._canonical:
            canonical = self._canonical[key]
        elif key in self._aliases:
            canonical = self._aliases[key]
        else:
            self.unrecognised[raw.strip()] += 1
            return _SPACES.sub(" ", raw).strip()
        if canonical != raw:
            self.fixed[(raw, canonical)] += 1
        return canonical

    @property
    def n_fixed(self) -> int:
        return sum(self.fixed.values())

    def summary(self) -> str:
        parts = [f"{n} {raw!r} -> {canonical!r}" for (raw, canonical), n in self.fixed.most_common()]
        text = f"{self.n_fixed} categories fixed" + (f" ({', '.join(parts)})" if parts else "")
        if self.unrecognised:
            text += "; unrecognised, kept as they are: " + ", ".join(
                f"{n} {raw!r}" for raw, n in self.unrecognised.most_common(10)
            )
        return text


def wins(occurred_at: datetime, action: str, updated_at: datetime | None, status: str | None) -> bool:
    """Does an event replace the state a job has? The newer event wins; at the same time a close wins.

    So job events may arrive late, twice or out of order and the state is the same; a jobs.csv row (no time)
    is replaced by any event.
    """
    if updated_at is None:
        return True
    return (occurred_at, action == CLOSED) > (updated_at, status == t.JOB_CLOSED)


def hidden(status: str, expires_at: datetime | None, now: datetime) -> bool:
    """May a job not be recommended at `now`? Closed, or past its expiry."""
    return status == t.JOB_CLOSED or (expires_at is not None and expires_at <= now)


def expiry(event: JobEvent, default_ttl_days: float) -> datetime | None:
    """When a posted job stops being recommended: its expires_at, else default_ttl_days after posting; a close
    has none."""
    if event.action == CLOSED:
        return None
    if event.expires_at is not None:
        return event.expires_at
    if default_ttl_days > 0:
        return event.occurred_at + timedelta(days=default_ttl_days)
    return None


@dataclass
class JobState:
    category: str | None
    status: str
    expires_at: datetime | None = None
    updated_at: datetime | None = None  # the time of the event that set the status
    category_at: datetime | None = None  # the time of the event that set the category; None: from a CSV


# (job_id, category, status, expires_at, updated_at, category_at): a row of the jobs table as the serving side
# reads it
CatalogRow = tuple[str, str | None, str, datetime | None, datetime | None, datetime | None]


class CatalogState:
    """job_id -> state, kept current event by event: the speed layer's copy of the jobs table.

    Status and category are decided apart: the status by `wins`, the category by the newest event that has one.
    So the state does not depend on the order events arrive in (a late post still brings its category).
    """

    def __init__(self, normaliser: CategoryNormaliser, default_ttl_days: float = 0.0):
        self.normaliser = normaliser
        self.default_ttl_days = default_ttl_days
        self.jobs: dict[str, JobState] = {}
        self.version = 0  # bumped on every change, so callers can cache what they derive from it

    def load(self, rows: Iterable[CatalogRow]) -> None:
        for job, category, status, expires_at, updated_at, category_at in rows:
            self.jobs[job] = JobState(category, status, expires_at, updated_at, category_at)
        self.version += 1

    def apply(self, event: JobEvent) -> bool:
        """Apply one event; True if it changed the state."""
        state = self.jobs.get(event.job_id)
        if state is None:
            state = self.jobs[event.job_id] = JobState(None, t.JOB_OPEN)
            changed = True
        else:
            changed = False
        if wins(event.occurred_at, event.action, state.updated_at, state.status):
            state.status = t.JOB_CLOSED if event.action == CLOSED else t.JOB_OPEN
            state.expires_at = None if event.action == CLOSED else expiry(event, self.default_ttl_days)
            state.updated_at = event.occurred_at
            changed = True
        if event.category and (state.category_at is None or event.occurred_at > state.category_at):
            state.category = self.normaliser.normalise(event.category)
            state.category_at = event.occurred_at
            changed = True
        if changed:
            self.version += 1
        return changed

    def category(self, job_id: str) -> str | None:
        state = self.jobs.get(job_id)
        return state.category if state else None

    def categories_of(self, jobs: Iterable[str]) -> set[str]:
        """The categories of these jobs, as the catalog says now (a job may have been posted since a retrain)."""
        return {c for c in map(self.category, jobs) if c}

    def unavailable(self, now: datetime) -> set[str]:
        """Jobs that must not be recommended at `now`: closed, or past their expiry. Unlisted jobs are allowed."""
        return {job for job, s in self.jobs.items() if hidden(s.status, s.expires_at, now)}

    def next_expiry_after(self, now: datetime) -> datetime | None:
        """When the set of unavailable jobs next changes by time alone (an open job's expiry)."""
        upcoming = [
            s.expires_at for s in self.jobs.values() if s.status == t.JOB_OPEN and s.expires_at and s.expires_at > now
        ]
        return min(upcoming) if upcoming else None

    def rows(self) -> list[CatalogRow]:
        return [(job, s.category, s.status, s.expires_at, s.updated_at, s.category_at) for job, s in self.jobs.items()]


@dataclass(frozen=True)
class ServingFilter:
    """What every list of one publish obeys, over a model's job order: hidden jobs and category codes."""

    excluded: np.ndarray  # bool per job
    categories: np.ndarray  # int code per job, NO_CATEGORY when the catalog does not know it
    category_names: list[str]

    @property
    def n_excluded(self) -> int:
        return int(self.excluded.sum())

    def category_code(self, name: str) -> int:
        return self.category_names.index(name) if name in self.category_names else NO_CATEGORY


def serving_filter(
    job_ids: list[str],
    rows: list[CatalogRow],
    now: datetime,
) -> ServingFilter:
    """Closed jobs and jobs expired at `now` are excluded; a job the catalog does not list is allowed (the
    catalog may lag the clicks)."""
    by_job = {r[0]: r for r in rows}
    names = sorted({r[1] for r in rows if r[1]})
    code = {name: i for i, name in enumerate(names)}
    excluded = np.zeros(len(job_ids), dtype=bool)
    categories = np.full(len(job_ids), NO_CATEGORY, dtype=np.int64)
    for i, job in enumerate(job_ids):
        row = by_job.get(job)
        if row is None:
            continue
        _, category, status, expires_at, _, _ = row
        excluded[i] = hidden(status, expires_at, now)
        if category:
            categories[i] = code[category]
    return ServingFilter(excluded, categories, names)
