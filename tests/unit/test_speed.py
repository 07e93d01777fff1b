"""The speed layer's pure logic: fold-in lists, fallback lists, repeats, messages valid against the schema."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np

from jobrec.schemas.click_event import EventLimits
from jobrec.streaming.speed import Histories, RecentIds, ServingModel, SpeedStats, process_records, recommend_for_user
from tests.unit.test_fold_in import normal_equations_solution

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "recommendation.v1.json").read_text())
WEIGHTS = {"view": 1.0, "click": 2.0, "save": 3.0, "apply": 5.0}


def model(n_jobs: int = 30, rank: int = 4) -> ServingModel:
    rng = np.random.default_rng(7)
    return ServingModel(
        "v1",
        [f"j{i}" for i in range(n_jobs)],
        rng.normal(scale=0.5, size=(n_jobs, rank)),
        5.0,
        0.1,
        popular=list(range(n_jobs)),
    )


def event(event_id: str, user: str, job: str, event_type: str = "click", minute: int = 0) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "user_id": user,
            "job_id": job,
            "event_type": event_type,
            "occurred_at": f"2026-11-26T12:{minute:02d}:00Z",
        }
    ).encode()


RECEIVED_MS = 1795694400000 + 3600_000  # 2026-11-26T13:00:00Z


def test_fold_in_list_is_the_independent_ranking_without_seen_jobs() -> None:
    m = model()
    histories = Histories(WEIGHTS)
    histories.load([("u", "j3", 2.0, None), ("u", "j7", 5.0, None), ("u", "unknown-job", 1.0, None)])
    source, items = recommend_for_user(m, histories.users["u"], 5)
    assert source == "fold-in"
    r_row = np.zeros(30)
    r_row[[3, 7]] = [2.0, 5.0]
    x = normal_equations_solution(m.job_matrix, r_row, 5.0, 0.1 * 2)
    expected = [f"j{i}" for i in np.argsort(-(m.job_matrix @ x)) if i not in (3, 7)][:5]
    assert [it["job_id"] for it in items] == expected


def test_user_with_only_unknown_jobs_gets_popularity_without_seen() -> None:
    m = model()
    histories = Histories(WEIGHTS)
    histories.load([("new", "brand-new-job", 1.0, None), ("new", "j0", 0.0, None)])
    source, items = recommend_for_user(m, histories.users["new"], 3)
    assert source == "fallback"
    assert [it["job_id"] for it in items] == ["j1", "j2", "j3"]  # j0 is in the history (strength 0 still seen)


def test_process_records_one_list_per_user_repeats_and_bad_records_skipped() -> None:
    m = model()
    histories, stats = Histories(WEIGHTS), SpeedStats()
    records = [
        (event("e1", "alice", "j1", minute=1), RECEIVED_MS),
        (event("e2", "alice", "j2", "apply", minute=5), RECEIVED_MS),
        (event("e1", "alice", "j1", minute=1), RECEIVED_MS),  # a retry
        (b"not json", RECEIVED_MS),
        (event("e3", "bob", "nope", minute=2), RECEIVED_MS),
    ]
    out = dict(process_records(records, histories, RecentIds(), m, 10, EventLimits(), stats))
    assert set(out) == {"alice", "bob"}
    assert (stats.events, stats.repeats, stats.rejected, stats.lists) == (3, 1, 1, 2)
    assert histories.users["alice"].strengths == {"j1": 2.0, "j2": 5.0}
    alice = json.loads(out["alice"])
    jsonschema.validate(alice, SCHEMA)
    assert alice["newest_event_at"] == "2026-11-26T12:05:00.000Z"
    assert alice["source"] == "fold-in" and alice["model_version"] == "v1"
    assert not {"j1", "j2"} & {it["job_id"] for it in alice["items"]}
    bob = json.loads(out["bob"])
    jsonschema.validate(bob, SCHEMA)
    assert bob["source"] == "fallback"


def test_recent_ids_forget_the_oldest_beyond_capacity() -> None:
    recent = RecentIds(capacity=2)
    assert not recent.seen_before("a") and not recent.seen_before("b") and recent.seen_before("a")
    assert not recent.seen_before("c")  # evicts a, the first added
    assert recent.seen_before("b") and not recent.seen_before("a")


def test_histories_keep_the_newest_time() -> None:
    h = Histories(WEIGHTS)
    h.load(
        [
            ("u", "j", 1.0, datetime(2026, 1, 2, tzinfo=timezone.utc)),
            ("u", "k", 1.0, datetime(2026, 1, 1, tzinfo=timezone.utc)),
        ]
    )
    assert h.users["u"].newest_event_at == datetime(2026, 1, 2, tzinfo=timezone.utc)


def test_model_holder_switches_to_a_new_version_without_a_restart() -> None:
    import time

    from jobrec.streaming.speed import ModelHolder

    versions = iter(["v1", None, "v2"])  # first load, a check that finds nothing new, then a new version

    def load(current: str | None) -> ServingModel | None:
        v = next(versions, None)
        return None if v is None else ServingModel(v, ["j"], np.ones((1, 2)), 1.0, 0.1, [0])

    holder = ModelHolder(load, check_seconds=0.05).start()
    try:
        assert holder.model is not None and holder.model.model_version == "v1"
        deadline = time.monotonic() + 5
        while holder.model.model_version != "v2" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert holder.model.model_version == "v2"
    finally:
        holder.stop()


def test_a_record_that_makes_the_layer_raise_is_skipped_and_the_others_still_get_lists() -> None:
    # weights without "apply": adding an apply click raises KeyError inside the layer (a record the contract
    # accepts but the code cannot handle); the layer must skip it, count it and serve everyone else
    m = model()
    histories, stats = Histories({"view": 1.0, "click": 2.0, "save": 3.0}), SpeedStats()
    records = [
        (event("e1", "alice", "j1"), RECEIVED_MS),
        (event("e2", "mallory", "j2", "apply"), RECEIVED_MS),
        (event("e3", "bob", "j3"), RECEIVED_MS),
    ]
    out = dict(process_records(records, histories, RecentIds(), m, 5, EventLimits(), stats))
    assert set(out) == {"alice", "bob"}
    assert stats.internal_errors == 1 and stats.events == 2 and stats.lists == 2


def test_a_user_whose_list_cannot_be_scored_or_published_is_skipped(monkeypatch) -> None:
    # a user id that is not UTF-8 encodable cannot key a Kafka message; if one ever got past the contract,
    # only that user's list is dropped (the parser is replaced here because the contract refuses such ids)
    import jobrec.streaming.speed as speed
    from jobrec.schemas.click_event import ClickEvent, parse_click_events

    def lenient(records, limits):
        verdicts = parse_click_events(records, limits)
        return [
            ClickEvent(v.event_id, "\ud800", v.job_id, v.event_type, v.occurred_at)
            if isinstance(v, ClickEvent) and v.user_id == "lone"
            else v
            for v in verdicts
        ]

    monkeypatch.setattr(speed, "parse_click_events", lenient)
    stats = SpeedStats()
    records = [(event("e1", "lone", "j1"), RECEIVED_MS), (event("e2", "bob", "j2"), RECEIVED_MS)]
    out = dict(process_records(records, Histories(WEIGHTS), RecentIds(), model(), 5, EventLimits(), stats))
    assert set(out) == {"bob"} and stats.internal_errors == 1
    for message in out.values():
        message.encode()  # what is published is always publishable


def test_a_job_record_that_makes_the_layer_raise_is_skipped() -> None:
    from jobrec.batch.core.catalog import CatalogState, CategoryNormaliser
    from jobrec.streaming.speed import apply_job_records

    class Exploding(CatalogState):
        def apply(self, event):  # the catalog copy raising on one event must not stop the layer
            if event.job_id == "boom":
                raise RuntimeError("boom")
            return super().apply(event)

    catalog, stats = Exploding(CategoryNormaliser(["IT"], {}), 0.0), SpeedStats()

    def job(event_id: str, job_id: str) -> bytes:
        doc = {"event_id": event_id, "job_id": job_id, "action": "closed", "occurred_at": "2026-11-26T12:00:00Z"}
        return json.dumps(doc).encode()

    changed = apply_job_records(
        [(job("a", "boom"), RECEIVED_MS), (job("b", "j1"), RECEIVED_MS)], catalog, EventLimits(), stats
    )
    assert changed == 1 and stats.internal_errors == 1 and stats.job_events == 1


def test_fallback_scores_are_popularity_shares() -> None:
    # 4, 2 and 1 users: shares of the most popular job's users are 1, 0.5 and 0.25, the scale of every fallback list
    from jobrec.batch.publish import popular_items

    items = popular_items({"a": 4, "b": 2, "c": 1}, ["a", "b", "c", "d"], None, 3, 0)
    assert [(i["job_id"], i["score"]) for i in items] == [("a", 1.0), ("b", 0.5), ("c", 0.25)]
    assert all(type(i["score"]) is float for i in items)  # plain floats: Spark refuses numpy scalars in a row

    m = model()
    m.popularity = np.linspace(1.0, 0.0, 30, endpoint=False)  # j0 most popular, as model().popular says
    histories = Histories(WEIGHTS)
    histories.load([("new", "brand-new-job", 1.0, None)])
    source, listed = recommend_for_user(m, histories.users["new"], 3)
    assert source == "fallback"
    assert [(i["job_id"], i["score"]) for i in listed] == [(f"j{k}", round(1.0 - k / 30, 6)) for k in range(3)]


def test_a_poll_the_batch_decoder_raises_on_is_judged_record_by_record(monkeypatch) -> None:
    # the fast decoder is a second implementation of the contract: if it ever raises, the poll is not lost
    import jobrec.streaming.speed as speed

    def broken(records, limits):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(speed, "parse_click_events", broken)
    stats = SpeedStats()
    records = [
        (event("e1", "alice", "j1"), RECEIVED_MS),
        (b"{not json", RECEIVED_MS),
        (event("e2", "bob", "j2"), RECEIVED_MS),
    ]
    out = dict(process_records(records, Histories(WEIGHTS), RecentIds(), model(), 5, EventLimits(), stats))
    assert set(out) == {"alice", "bob"}
    assert (stats.records, stats.events, stats.rejected, stats.internal_errors) == (3, 2, 1, 0)
