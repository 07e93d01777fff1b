"""Fallback lists before any model passes the gate, without a JVM: the batch publish's popularity lists, the speed
layer's popularity model, and the demo's verdict."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pytest

from jobrec.batch.core.catalog import CatalogState, CategoryNormaliser
from jobrec.batch.fallback import fallback_user_batches, popular_unseen, rank_popular_jobs
from jobrec.batch.publish import MESSAGE, SEEN
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import EventLimits
from jobrec.schemas.recommendation import POPULARITY_MODEL_VERSION
from jobrec.streaming.speed import (
    FilterCache,
    Histories,
    RecentIds,
    SpeedStats,
    popularity_model,
    process_records,
    recommend_for_users,
)

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "recommendation.v1.json").read_text())
NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)


def reference_list(
    users_per_job: dict[str, int], category: dict[str, str], hidden: set[str], seen: set[str], n: int, cap: int
) -> list[tuple[str, float]]:
    """The fallback list computed the plain way: every job by (users desc, job_id), hidden and seen jobs dropped,
    then greedily at most `cap` per category; score = users / the most users any job has."""
    top = max(users_per_job.values())
    taken: list[tuple[str, float]] = []
    per_category: dict[str, int] = {}
    for job in sorted(users_per_job, key=lambda j: (-users_per_job[j], j)):
        if job in hidden or job in seen:
            continue
        c = category.get(job)
        if cap and c is not None:
            if per_category.get(c, 0) >= cap:
                continue
            per_category[c] = per_category.get(c, 0) + 1
        taken.append((job, round(users_per_job[job] / top, 6)))
        if len(taken) == n:
            break
    return taken


def test_popular_unseen_is_popularity_without_seen_jobs() -> None:
    # b and c tie on 3 users: job_id order breaks the tie; the user has seen a, so b leads with 3/4
    popular, hidden = rank_popular_jobs({"a": 4, "c": 3, "b": 3, "d": 1}, None, NOW)
    assert hidden == 0 and popular.job_ids == ["a", "b", "c", "d"]
    items = popular_unseen(popular, ["a", "unknown-job"], 2)
    assert [(i["job_id"], i["score"], i["rank"]) for i in items] == [("b", 0.75, 1), ("c", 0.75, 2)]
    assert all(type(i["score"]) is float for i in items)  # plain floats: Spark refuses numpy scalars in a row
    # fewer jobs than n: all that are left
    assert [i["job_id"] for i in popular_unseen(popular, ["a", "b"], 10)] == ["c", "d"]


def test_closed_and_expired_jobs_are_hidden_but_still_set_the_scale() -> None:
    rows = [
        ("a", "IT", t.JOB_CLOSED, None, None, None),
        ("b", "IT", t.JOB_OPEN, NOW - timedelta(days=1), None, None),  # expired
        ("c", "IT", t.JOB_OPEN, NOW + timedelta(days=1), None, None),
    ]
    popular, hidden = rank_popular_jobs({"a": 10, "b": 8, "c": 5, "d": 2}, rows, NOW)
    assert hidden == 2 and popular.job_ids == ["c", "d"]
    # shares stay relative to the most popular job, closed or not (the speed layer's scale)
    assert [(i["job_id"], i["score"]) for i in popular_unseen(popular, [], 5)] == [("c", 0.5), ("d", 0.2)]


def test_the_category_cap_looks_past_the_first_jobs_when_it_must() -> None:
    # ten IT jobs are the most popular, one Finance job comes last: with a cap of 2 the list needs the 11th job
    counts = {f"it{i:02d}": 100 - i for i in range(10)} | {"fin": 1}
    rows = [(job, "Finance" if job == "fin" else "IT", t.JOB_OPEN, None, None, None) for job in counts]
    popular, _ = rank_popular_jobs(counts, rows, NOW)
    assert [i["job_id"] for i in popular_unseen(popular, ["it00"], 3, max_per_category=2)] == ["it01", "it02", "fin"]


@pytest.mark.parametrize("seed", range(20))
def test_popular_unseen_matches_the_plain_computation(seed: int) -> None:
    rng = random.Random(seed)
    jobs = [f"j{i}" for i in range(rng.randint(1, 60))]
    users_per_job = {j: rng.randint(1, 8) for j in jobs}  # many ties
    category = {j: rng.choice(["IT", "Finance", "Retail"]) for j in jobs if rng.random() < 0.8}
    hidden = {j for j in jobs if rng.random() < 0.2}
    rows = [(j, category.get(j), t.JOB_CLOSED if j in hidden else t.JOB_OPEN, None, None, None) for j in jobs]
    popular, n_hidden = rank_popular_jobs(users_per_job, rows, NOW)
    assert n_hidden == len(hidden)
    for _ in range(10):
        seen = set(rng.sample(jobs, rng.randint(0, len(jobs))))
        n, cap = rng.randint(1, 12), rng.choice([0, 1, 2, 3])
        got = [(i["job_id"], i["score"]) for i in popular_unseen(popular, seen, n, cap)]
        assert got == reference_list(users_per_job, category, hidden, seen, n, cap)


def test_fallback_batches_give_every_user_a_valid_popularity_message() -> None:
    popular, _ = rank_popular_jobs({"a": 4, "b": 2, "c": 1}, None, NOW)
    batch = pa.RecordBatch.from_pydict(
        {
            t.USER_ID: ["u1", "u2"],
            SEEN: [["a"], None],
            t.NEWEST_EVENT_AT: [NOW - timedelta(hours=1), None],
        },
        schema=pa.schema(
            [
                (t.USER_ID, pa.string()),
                (SEEN, pa.list_(pa.string())),
                (t.NEWEST_EVENT_AT, pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    [out] = list(fallback_user_batches(iter([batch]), popular, 2, generated_at=NOW))
    messages = {m["user_id"]: m for m in map(json.loads, out.column(MESSAGE).to_pylist())}
    for message in messages.values():
        jsonschema.validate(message, SCHEMA)
        assert message["source"] == "fallback" and message["model_version"] == POPULARITY_MODEL_VERSION
    assert [i["job_id"] for i in messages["u1"]["items"]] == ["b", "c"]
    assert messages["u1"]["newest_event_at"] == "2026-11-26T11:00:00.000Z"
    assert [i["job_id"] for i in messages["u2"]["items"]] == ["a", "b"] and messages["u2"]["newest_event_at"] is None


def test_popularity_model_answers_every_user_with_a_fallback_list() -> None:
    model = popularity_model([("c", 1), ("a", 4), ("b", 2)])
    assert model.model_version == POPULARITY_MODEL_VERSION and model.job_ids == ["a", "b", "c"]
    assert not model.fold_in and model.popularity is not None and model.popularity.tolist() == [1.0, 0.5, 0.25]
    histories = Histories({"view": 1.0, "click": 2.0, "save": 3.0, "apply": 5.0})
    # "a" is a job the popularity model knows: with factors it would be folded in; without, it is only seen
    histories.load([("u", "a", 2.0, None)])
    [(source, items)] = recommend_for_users(model, [histories.users["u"]], 5)
    assert source == t.SOURCE_FALLBACK
    assert [(i["job_id"], i["score"]) for i in items] == [("b", 0.5), ("c", 0.25)]
    assert len(popularity_model([(f"j{i}", 1) for i in range(30)], limit=10).job_ids) == 10
    assert popularity_model([]).job_ids == []


def test_speed_layer_without_a_model_publishes_valid_fallback_messages() -> None:
    model = popularity_model([("a", 4), ("b", 2), ("c", 1)])
    catalog = CatalogState(CategoryNormaliser(["IT"], {}))
    catalog.load([("b", "IT", t.JOB_CLOSED, None, None, None)])
    click = {
        "event_id": "e1",
        "user_id": "alice",
        "job_id": "a",
        "event_type": "click",
        "occurred_at": "2026-11-26T12:00:00Z",
    }
    stats = SpeedStats()
    [(user, message)] = process_records(
        [(json.dumps(click).encode(), 1795694400000 + 60_000)],
        Histories({"view": 1.0, "click": 2.0, "save": 3.0, "apply": 5.0}),
        RecentIds(),
        model,
        10,
        EventLimits(),
        stats,
        catalog=catalog,
        filters=FilterCache(),
    )
    doc = json.loads(message)
    jsonschema.validate(doc, SCHEMA)
    assert user == "alice" and doc["source"] == "fallback" and doc["model_version"] == POPULARITY_MODEL_VERSION
    assert [i["job_id"] for i in doc["items"]] == ["c"]  # a seen, b closed
    assert doc["newest_event_at"] == "2026-11-26T12:00:00.000Z" and stats.fallback_lists == 1


def test_filter_cache_follows_a_reloaded_model_of_the_same_version() -> None:
    catalog = CatalogState(CategoryNormaliser(["IT"], {}))
    catalog.load([("x", "IT", t.JOB_CLOSED, None, None, None)])
    filters = FilterCache()
    first = filters.get(popularity_model([("a", 2), ("x", 1)]), catalog, NOW)
    # the popularity model is reloaded at every check under the same name, with other jobs
    second = filters.get(popularity_model([("x", 5), ("a", 2), ("b", 1)]), catalog, NOW)
    assert first.excluded.tolist() == [False, True] and second.excluded.tolist() == [True, False, False]


def test_demo_exits_non_zero_with_what_was_missing_as_its_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    from jobrec.streaming.local.demo import demo_verdict

    assert demo_verdict([]) == 0 and capsys.readouterr().err == ""
    assert demo_verdict(["no refreshed list arrived within 30 s of user 1's click"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "jobrec demo failed: no refreshed list arrived within 30 s of user 1's click"


def test_speed_layer_switches_from_popularity_to_the_first_published_model() -> None:
    import time

    from jobrec.streaming.speed import ModelHolder, ServingModel

    # before any model passes, every check reloads popularity (same name, fresh counts); then a model is published
    loads = iter(
        [
            popularity_model([("a", 1)]),
            popularity_model([("a", 1), ("b", 2)]),
            ServingModel("v1", ["a", "b"], np.ones((2, 2)), 1.0, 0.1, [0, 1]),
        ]
    )
    holder = ModelHolder(lambda current: next(loads, None), check_seconds=0.05)
    assert holder.model is not None and not holder.model.fold_in
    holder.start()
    try:
        deadline = time.monotonic() + 5
        while holder.model.model_version != "v1" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert holder.model.model_version == "v1" and holder.model.fold_in
    finally:
        holder.stop()
