"""The driver's publisher against lists worked out here by brute force: every job scored, the user's own jobs and
closed or expired jobs dropped, a category cap applied greedily, ties by job id; the new-user list by users per
job. No JVM: the tables are Arrow, as the driver receives them."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from jobrec.batch.driver_publish import factor_matrix, recommend_on_driver
from jobrec.schemas import tables as t
from jobrec.schemas.recommendation import NEW_USER_KEY, recommendation_message

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
RANK = 4


def _factors(id_col: str, ids: list[str], rng: np.random.Generator) -> tuple[pa.Table, dict[str, np.ndarray]]:
    vectors = {i: rng.normal(size=RANK).astype(np.float32) for i in ids}
    table = pa.table({id_col: ids, t.FEATURES: pa.array([vectors[i].tolist() for i in ids], pa.list_(pa.float32()))})
    return table, vectors


def _brute_force(user_vec, job_vecs, seen, hidden, category, n, cap) -> list[tuple[str, float]]:
    scored = sorted(
        ((float(np.float32(user_vec @ vec)), job) for job, vec in job_vecs.items()),
        key=lambda pair: (-pair[0], pair[1]),
    )
    taken, per_category = [], Counter()
    for score, job in scored:
        if job in seen or job in hidden:
            continue
        c = category.get(job)
        if cap and c is not None:
            if per_category[c] >= cap:
                continue
            per_category[c] += 1
        taken.append((job, round(score, 6)))
        if len(taken) == n:
            break
    return taken


@pytest.mark.parametrize("cap", [0, 2])
def test_lists_match_brute_force(cap: int) -> None:
    rng = np.random.default_rng(7 + cap)
    # ids out of order on purpose (the factors table has no order); a user without history; a history job the
    # model does not know
    user_ids = [f"u{i}" for i in rng.permutation(60)]
    job_ids = [f"j{i:03d}" for i in rng.permutation(45)]
    users, user_vecs = _factors(t.USER_ID, user_ids, rng)
    jobs, job_vecs = _factors(t.JOB_ID, job_ids, rng)
    history: dict[str, set[str]] = defaultdict(set)
    rows = []
    for u in user_ids[1:]:
        for j in rng.choice(job_ids, size=int(rng.integers(1, 30)), replace=False):
            history[u].add(str(j))
            rows.append((u, str(j), NOW - timedelta(minutes=int(rng.integers(0, 10_000)))))
    rows.append((user_ids[1], "j-unknown", NOW))
    # backfilled pairs have no time: one user has only those, another a mix
    rows += [(user_ids[2], j, None) for j in sorted(history[user_ids[2]])]
    rows = [r for r in rows if r[0] != user_ids[2] or r[2] is None]
    rows.append((user_ids[3], sorted(history[user_ids[3]])[0], None))
    histories = pa.table(
        {
            t.USER_ID: [r[0] for r in rows],
            t.JOB_ID: [r[1] for r in rows],
            t.LAST_AT: pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
        }
    )
    category = {j: f"c{int(j[1:]) % 3}" for j in job_ids}
    closed, expired = job_ids[0], job_ids[1]
    catalog = [
        (j, category[j], "closed" if j == closed else "open", NOW - timedelta(days=1) if j == expired else None)
        + (NOW, NOW)
        for j in job_ids
    ]

    table = recommend_on_driver(
        users, jobs, histories, 10, model_version="v1", generated_at=NOW, catalog=catalog, max_per_category=cap
    )

    got = {row[t.USER_ID]: row for row in table.to_pylist()}
    assert set(got) == set(user_ids) | {NEW_USER_KEY}
    for u in user_ids:
        expected = _brute_force(user_vecs[u], job_vecs, history[u], {closed, expired}, category, 10, cap)
        items = got[u][t.ITEMS]
        assert [i[t.JOB_ID] for i in items] == [job for job, _ in expected], u
        # float32 dot products summed in another order: the last digit may differ
        np.testing.assert_allclose([i[t.SCORE] for i in items], [s for _, s in expected], atol=2e-6)
        assert [i[t.RANK] for i in items] == list(range(1, len(expected) + 1))
        newest = max((r[2] for r in rows if r[0] == u and r[2] is not None), default=None)
        assert got[u][t.NEWEST_EVENT_AT] == newest
        assert got[u]["message"] == recommendation_message(u, "v1", NOW, newest, t.SOURCE_BATCH, items)
    # new users: the open jobs with most users among the model's jobs, ties by id, the cap applied
    users_per_job = Counter(r[1] for r in rows)
    by_popularity = sorted(job_vecs, key=lambda j: (-users_per_job[j], j))
    taken, per_category = [], Counter()
    for j in by_popularity:
        if j in (closed, expired) or users_per_job[j] == 0 or (cap and per_category[category[j]] >= cap):
            continue
        per_category[category[j]] += 1
        taken.append(j)
    new_user = json.loads(got[NEW_USER_KEY]["message"])
    assert [i["job_id"] for i in new_user["items"]] == taken[:10]
    assert new_user["source"] == "fallback" and got[NEW_USER_KEY][t.NEWEST_EVENT_AT] is None


def test_factors_of_unequal_rank_are_refused() -> None:
    table = pa.table({t.JOB_ID: ["a", "b"], t.FEATURES: pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match="unequal length"):
        factor_matrix(table, t.JOB_ID)
