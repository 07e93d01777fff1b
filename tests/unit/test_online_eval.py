"""The online evaluation's rule without a JVM: spans, hits, the rank of a hit, pending lists, and how hit rate and
MRR add up. Every expected answer is worked out by hand in a comment."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrec.batch.core.online_eval import (
    Interaction,
    OutcomeGroup,
    ServedList,
    attribute_list,
    attribute_lists,
    count_outcomes,
    format_counts_table,
    group_outcomes,
    shown_until,
)
from jobrec.schemas import tables as t

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
DAY = timedelta(hours=24)
AS_OF = T0 + 3 * DAY
ALL_TYPES = ("view", "click", "save", "apply")


def served(user: str, at: datetime, jobs: str, next_at: datetime | None = None, source: str = "batch") -> ServedList:
    return ServedList(user, at, source, "v1", tuple(jobs.split()), next_at)


def click(user: str, job: str, at: datetime, event_type: str = "click") -> Interaction:
    return Interaction(user, job, event_type, at)


def test_the_span_ends_at_the_next_list_or_the_window_whichever_is_first() -> None:
    assert shown_until(T0, None, DAY) == T0 + DAY
    assert shown_until(T0, T0 + 2 * H, DAY) == T0 + 2 * H
    assert shown_until(T0, T0 + 30 * H, DAY) == T0 + DAY


def test_the_rank_of_a_hit_is_the_best_rank_among_the_jobs_used_in_the_span() -> None:
    listed = served("u", T0, "j1 j2 j3")
    # j3 (rank 3) first, then j2 (rank 2): the hit's rank is 2, whatever came first
    o = attribute_list(listed, [click("u", "j3", T0 + H), click("u", "j2", T0 + 2 * H)], DAY, AS_OF, ALL_TYPES)
    assert (o.outcome, o.hit_rank, o.hit_job_id, o.shown_until) == (t.OUTCOME_HIT, 2, "j2", T0 + DAY)


def test_interactions_outside_the_span_or_off_the_list_are_no_hit() -> None:
    listed = served("u", T0, "j1 j2", next_at=T0 + 5 * H)
    misses = [
        click("u", "j1", T0 - timedelta(microseconds=1)),  # before the list was generated
        click("u", "j1", T0 + 5 * H),  # at the next list's generated_at: the span is half-open
        click("u", "j2", T0 + 6 * H),  # after the next list
        click("u", "j9", T0 + H),  # a job the list did not have
        click("other", "j1", T0 + H),  # another user
    ]
    o = attribute_list(listed, misses, DAY, AS_OF, ALL_TYPES)
    assert (o.outcome, o.hit_rank, o.hit_job_id) == (t.OUTCOME_MISS, None, None)
    # the first instant of the span counts
    assert attribute_list(listed, [click("u", "j2", T0)], DAY, AS_OF, ALL_TYPES).hit_rank == 2


def test_only_the_counted_event_types_make_a_hit() -> None:
    listed = served("u", T0, "j1 j2")
    seen = [click("u", "j1", T0 + H, "view"), click("u", "j2", T0 + 2 * H, "apply")]
    assert attribute_list(listed, seen, DAY, AS_OF, ALL_TYPES).hit_rank == 1
    assert attribute_list(listed, seen, DAY, AS_OF, ("click", "save", "apply")).hit_rank == 2
    assert attribute_list(listed, seen, DAY, AS_OF, ("click",)).outcome == t.OUTCOME_MISS


def test_a_list_whose_span_has_not_closed_is_pending_even_with_a_click() -> None:
    listed = served("u", AS_OF - H, "j1")
    o = attribute_list(listed, [click("u", "j1", AS_OF - H / 2)], DAY, AS_OF, ALL_TYPES)
    assert (o.outcome, o.hit_rank, o.shown_until) == (t.OUTCOME_PENDING, None, AS_OF - H + DAY)
    # a newer list closes the span: decided, and the click inside it is a hit
    closed = served("u", AS_OF - H, "j1", next_at=AS_OF - H / 4)
    assert attribute_list(closed, [click("u", "j1", AS_OF - H / 2)], DAY, AS_OF, ALL_TYPES).hit_rank == 1
    # a span ending exactly at as_of is decided
    assert attribute_list(served("u", AS_OF - DAY, "j1"), [], DAY, AS_OF, ALL_TYPES).outcome == t.OUTCOME_MISS


def test_a_click_after_a_newer_list_counts_for_the_newer_one_only() -> None:
    old = served("u", T0, "j1 j2", next_at=T0 + 2 * H)
    new = served("u", T0 + 2 * H, "j3 j1", source="fold-in")
    outcomes = attribute_lists([old, new], [click("u", "j1", T0 + 3 * H)], DAY, AS_OF, ALL_TYPES)
    assert [(o.outcome, o.hit_rank) for o in outcomes] == [(t.OUTCOME_MISS, None), (t.OUTCOME_HIT, 2)]


def test_hit_rate_and_mrr_per_source_model_version_and_bucket() -> None:
    lists = [
        served("a", T0, "j1 j2 j3"),  # hit at rank 1 -> 1
        served("b", T0 + H, "j1 j2 j3"),  # hit at rank 3 -> 1/3
        served("c", T0 + 2 * H, "j1 j2 j3"),  # miss -> 0
        served("d", T0 + DAY, "j1 j2"),  # the next day: miss
        served("e", T0, "j1 j2", source="fold-in"),  # hit at rank 2 -> 1/2
        served("f", AS_OF - H, "j1"),  # pending
    ]
    interactions = [click("a", "j1", T0 + H), click("b", "j3", T0 + 2 * H), click("e", "j2", T0 + H)]
    groups = group_outcomes(attribute_lists(lists, interactions, DAY, AS_OF, ALL_TYPES), bucket_hours=24)
    per_model = {(c.source, c.model_version): c for c in count_outcomes(groups, per_bucket=False)}
    batch = per_model[("batch", "v1")]
    # batch: 2 hits of 5 lists, 4 of them decided -> hit rate 2/4; MRR (1 + 1/3 + 0 + 0) / 4 = 1/3
    assert (batch.hits, batch.misses, batch.pending, batch.decided) == (2, 2, 1, 4)
    assert batch.hit_rate == pytest.approx(0.5) and batch.mrr == pytest.approx(1 / 3)
    fold_in = per_model[("fold-in", "v1")]
    assert (fold_in.hit_rate, fold_in.mrr) == (1.0, 0.5)
    # by day (buckets of 24 h from the epoch: T0 is noon, so T0 - 12 h starts its bucket); the pending list was
    # generated 3 days later
    buckets = {
        (c.source, c.bucket_start): (c.hits, c.misses, c.pending) for c in count_outcomes(groups) if c.source == "batch"
    }
    first_day = T0 - 12 * H
    assert buckets == {
        ("batch", first_day): (2, 1, 0),
        ("batch", first_day + DAY): (0, 1, 0),
        ("batch", first_day + 3 * DAY): (0, 0, 1),
    }
    # over all sources: 3 hits of 5 decided, MRR (1 + 1/3 + 1/2) / 5
    [everything] = count_outcomes(
        [OutcomeGroup("all", g.model_version, g.bucket_start, g.outcome, g.hit_rank, g.lists) for g in groups],
        per_bucket=False,
    )
    assert everything.hit_rate == pytest.approx(3 / 5) and everything.mrr == pytest.approx((1 + 1 / 3 + 1 / 2) / 5)


def test_nothing_decided_has_no_rate_and_the_table_says_so() -> None:
    [c] = count_outcomes([OutcomeGroup("batch", "v1", T0, t.OUTCOME_PENDING, None, 3)])
    assert (c.decided, c.pending, c.hit_rate, c.mrr) == (0, 3, None, None)
    table = format_counts_table([c])
    assert table.splitlines()[-1] == "| batch | v1 | 0 | 0 | - | - | 3 |"
    with pytest.raises(ValueError, match="a hit needs a rank"):
        count_outcomes([OutcomeGroup("batch", "v1", T0, t.OUTCOME_HIT, None, 1)])


_USERS = st.sampled_from(["u1", "u2", "u3"])
_JOBS = st.sampled_from(["j1", "j2", "j3", "j4"])
_HOURS = st.integers(min_value=0, max_value=96)


@st.composite
def _served_lists(draw: st.DrawFn) -> list[ServedList]:
    # a user's lists in time order, each closed by the next one
    lists = []
    for user in ("u1", "u2", "u3"):
        starts = sorted(set(draw(st.lists(_HOURS, max_size=4))))
        for i, hour in enumerate(starts):
            jobs = draw(st.lists(_JOBS, min_size=1, max_size=3, unique=True))
            next_at = T0 + starts[i + 1] * H if i + 1 < len(starts) else None
            lists.append(ServedList(user, T0 + hour * H, "batch", "v1", tuple(jobs), next_at))
    return lists


@settings(max_examples=200, deadline=None)
@given(
    lists=_served_lists(),
    interactions=st.lists(st.builds(click, _USERS, _JOBS, st.builds(lambda h: T0 + h * H, _HOURS)), max_size=12),
    user=_USERS,
    job=_JOBS,
    offset_hours=st.integers(min_value=1, max_value=1000),
    after=st.booleans(),
)
def test_an_interaction_outside_every_span_changes_nothing(
    lists: list[ServedList],
    interactions: list[Interaction],
    user: str,
    job: str,
    offset_hours: int,
    after: bool,
) -> None:
    as_of = T0 + 200 * H
    # before every list, or after every span of this user has closed (the window is 24 h)
    outside = T0 - offset_hours * H if not after else as_of + offset_hours * H
    before = attribute_lists(lists, interactions, DAY, as_of, ALL_TYPES)
    with_extra = attribute_lists(lists, [*interactions, click(user, job, outside)], DAY, as_of, ALL_TYPES)
    assert with_extra == before
