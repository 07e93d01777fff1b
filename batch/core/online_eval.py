"""Online evaluation without a JVM: did a user interact with a job of a list served to them while that list was
theirs, and how hit rate and mean reciprocal rank add up per source and model version.

The attribution rule (README, "Online evaluation"):
- a list is *shown* from its generated_at until the user's next list (of any source) or until generated_at plus the
  window, whichever comes first: the span [generated_at, shown_until);
- it is a *hit* when the user has an interaction of a counted type with one of its jobs whose occurred_at falls in
  that span; the rank of the hit is the best (lowest) rank among those jobs;
- it is a *miss* when its span has closed (shown_until <= as_of, the time up to which the events are taken as
  complete) without one, and *pending* while the span is open: a pending list is neither a hit nor a miss, and no
  hit is recorded for it yet (a later interaction with a better-ranked job could still change its rank).

Hit rate = hits / decided lists (hits + misses); MRR = the mean over decided lists of 1 / rank of the hit, a miss
counting 0.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from jobrec.schemas import tables as t


@dataclass(frozen=True)
class ServedList:
    """One list published for a user; the job at rank r is job_ids[r - 1]. next_generated_at: the user's next list,
    None while there is none."""

    user_id: str
    generated_at: datetime
    source: str
    model_version: str | None
    job_ids: tuple[str, ...]
    next_generated_at: datetime | None = None


@dataclass(frozen=True)
class Interaction:
    user_id: str
    job_id: str
    event_type: str
    occurred_at: datetime


@dataclass(frozen=True)
class ListOutcome:
    """A served list's span and outcome (hit, miss or pending); the hit's rank and job for a hit only."""

    served: ServedList
    shown_until: datetime
    outcome: str
    hit_rank: int | None = None
    hit_job_id: str | None = None


def shown_until(generated_at: datetime, next_generated_at: datetime | None, window: timedelta) -> datetime:
    """The end (exclusive) of the span a list counts as shown: the user's next list or the window's end."""
    end = generated_at + window
    return end if next_generated_at is None else min(end, next_generated_at)


def attribute_list(
    served: ServedList,
    interactions: Iterable[Interaction],
    window: timedelta,
    as_of: datetime,
    event_types: Collection[str],
) -> ListOutcome:
    """The outcome of one list, from interactions that include at least the user's own within its span (others
    are ignored)."""
    until = shown_until(served.generated_at, served.next_generated_at, window)
    if until > as_of:
        return ListOutcome(served, until, t.OUTCOME_PENDING)
    rank_of: dict[str, int] = {}
    for rank, job_id in enumerate(served.job_ids, 1):
        rank_of.setdefault(job_id, rank)
    best: int | None = None
    for i in interactions:
        if i.user_id != served.user_id or i.event_type not in event_types:
            continue
        if not served.generated_at <= i.occurred_at < until:
            continue
        listed_at = rank_of.get(i.job_id)
        if listed_at is not None and (best is None or listed_at < best):
            best = listed_at
    if best is None:
        return ListOutcome(served, until, t.OUTCOME_MISS)
    return ListOutcome(served, until, t.OUTCOME_HIT, best, served.job_ids[best - 1])


def attribute_lists(
    lists: Iterable[ServedList],
    interactions: Iterable[Interaction],
    window: timedelta,
    as_of: datetime,
    event_types: Collection[str],
) -> list[ListOutcome]:
    """`attribute_list` for many lists, each seeing only its own user's interactions."""
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for i in interactions:
        by_user[i.user_id].append(i)
    return [attribute_list(s, by_user.get(s.user_id, ()), window, as_of, event_types) for s in lists]


@dataclass(frozen=True)
class OutcomeGroup:
    """`lists` lists of one source and model version, generated in the time bucket starting at bucket_start, with
    the same outcome and rank of the hit (None but for hits): what the evaluation job counts in Spark."""

    source: str
    model_version: str | None
    bucket_start: datetime
    outcome: str
    hit_rank: int | None
    lists: int


@dataclass(frozen=True)
class OutcomeCounts:
    """How the lists of one source and model version fared, in one time bucket (by generated_at, starting at
    bucket_start) or over the whole period (bucket_start None). reciprocal_rank_sum: the sum of 1 / rank of the hit
    over the hits."""

    source: str
    model_version: str | None
    bucket_start: datetime | None
    hits: int
    misses: int
    pending: int
    reciprocal_rank_sum: float

    @property
    def decided(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float | None:
        """Hits per decided list; None before any list is decided."""
        return self.hits / self.decided if self.decided else None

    @property
    def mrr(self) -> float | None:
        """Mean reciprocal rank over decided lists (a miss counts 0); None before any list is decided."""
        return self.reciprocal_rank_sum / self.decided if self.decided else None


def group_outcomes(outcomes: Iterable[ListOutcome], bucket_hours: float) -> list[OutcomeGroup]:
    """Outcomes of single lists grouped as the evaluation job groups its table's rows (buckets of bucket_hours
    from the Unix epoch, UTC)."""
    width = bucket_hours * 3600.0
    groups: Counter[tuple[str, str | None, datetime, str, int | None]] = Counter()
    for o in outcomes:
        s = o.served
        start = datetime.fromtimestamp(s.generated_at.timestamp() // width * width, timezone.utc)
        groups[(s.source, s.model_version, start, o.outcome, o.hit_rank)] += 1
    return [OutcomeGroup(*key, lists=n) for key, n in groups.items()]


def count_outcomes(
    groups: Iterable[OutcomeGroup], per_bucket: bool = True, per_model_version: bool = True
) -> list[OutcomeCounts]:
    """Hits, misses, pending lists and reciprocal ranks summed per (source, model_version, bucket); over all buckets
    when not `per_bucket` (bucket_start None), over all model versions when not `per_model_version` (model_version
    None). Sorted by source, model version, bucket."""
    sums: dict[tuple[str, str | None, datetime | None], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for g in groups:
        key = (g.source, g.model_version if per_model_version else None, g.bucket_start if per_bucket else None)
        acc = sums[key]
        if g.outcome == t.OUTCOME_HIT:
            if not g.hit_rank or g.hit_rank < 1:
                raise ValueError(f"a hit needs a rank >= 1: {g}")
            acc[0] += g.lists
            acc[3] += g.lists / g.hit_rank
        elif g.outcome == t.OUTCOME_MISS:
            acc[1] += g.lists
        elif g.outcome == t.OUTCOME_PENDING:
            acc[2] += g.lists
        else:
            raise ValueError(f"unknown outcome {g.outcome!r}")
    ordered = sorted(sums.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2] or datetime.min))
    return [OutcomeCounts(*key, int(h), int(m), int(p), rr) for key, (h, m, p, rr) in ordered]


def format_counts_table(rows: Sequence[OutcomeCounts], per_model_version: bool = True) -> str:
    """A Markdown table of counts per (source, model_version): lists decided, hits, hit rate, MRR, pending; the
    model version column says "all" for rows summed over model versions (not `per_model_version`)."""
    lines = [
        "| source | model version | decided | hits | hit rate | MRR | pending |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        rate = "-" if c.hit_rate is None else f"{c.hit_rate:.4f}"
        mrr = "-" if c.mrr is None else f"{c.mrr:.4f}"
        version = "all" if not per_model_version else "-" if c.model_version is None else c.model_version
        lines.append(f"| {c.source} | {version} | {c.decided} | {c.hits} | {rate} | {mrr} | {c.pending} |")
    return "\n".join(lines)
