"""The job catalog's pure rules: the job-event contract (against its JSON Schema), category normalisation, the
newest-wins rule in any arrival order, which jobs are hidden, and the speed layer's use of them."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pytest

from jobrec.batch.core.catalog import CatalogState, CategoryNormaliser, serving_filter, wins
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import EventLimits
from jobrec.schemas.job_event import JobEvent, parse_job_event
from jobrec.streaming.speed import (
    FilterCache,
    Histories,
    RecentIds,
    ServingModel,
    SpeedStats,
    apply_job_records,
    process_records,
    recommend_for_users,
)

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "job_event.v1.json").read_text())
CATEGORIES = ["IT", "Finance", "Retail", "Business Intelligence"]
RECEIVED_MS = 1795694400000 + 3600_000  # 2026-11-26T13:00:00Z
UTC = timezone.utc


def job_event(**fields) -> bytes:
    doc = {"event_id": "e1", "job_id": "j1", "action": "posted", "occurred_at": "2026-11-26T12:00:00Z"}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


BAD_JOB_EVENTS = {
    "unknown action": (job_event(action="reopened"), "unknown_action"),
    "missing job_id": (job_event(job_id=...), "missing_field"),
    "category on a close": (job_event(action="closed", category="IT"), "field_not_allowed"),
    "expiry on a close": (job_event(action="closed", expires_at="2027-01-01T00:00:00Z"), "field_not_allowed"),
    "expiry before posting": (job_event(expires_at="2026-11-26T11:00:00Z"), "bad_expiry"),
    "bad expiry time": (job_event(expires_at="tomorrow"), "bad_timestamp"),
    "category not a string": (job_event(category=7), "wrong_type"),
    "empty category": (job_event(category=""), "empty_field"),
    "unknown field": (job_event(user_id="u1"), "unknown_field"),
    "null action": (job_event(action=None), "null_field"),
    "not json": (b"{job", "invalid_json"),
    "future": (job_event(occurred_at="2027-11-26T12:00:00Z"), "future_timestamp"),
    # issue 11's inputs in job events: ids and the category follow the id rules, times the range
    "lone surrogate in job_id": (job_event(job_id="pj\ud800"), "bad_unicode"),
    "lone surrogate in category": (job_event(category="IT\udfff"), "bad_unicode"),
    "C1 control in event_id": (job_event(event_id="e\u009b1"), "control_char"),
    "bidi override in category": (job_event(category="\u202eTI"), "format_char"),
    "zero-width space in job_id": (job_event(job_id="j\u200b1"), "format_char"),
    "occurred in year 1 with an offset": (job_event(occurred_at="0001-01-01T00:00:00+00:01"), "timestamp_out_of_range"),
    "never-expires sentinel": (job_event(expires_at="9999-12-31T23:59:59Z"), "timestamp_out_of_range"),
    "expiry a leap second after 9999": (job_event(expires_at="9999-12-31T23:59:60Z"), "timestamp_out_of_range"),
}
# judged against the broker's receive time, or beyond what a JSON Schema can say (calendar, range, raw text)
SCHEMA_BLIND = {
    "not json",
    "future",
    "expiry before posting",
    "occurred in year 1 with an offset",
    "never-expires sentinel",
    "expiry a leap second after 9999",
}


@pytest.mark.parametrize("label", sorted(BAD_JOB_EVENTS))
def test_bad_job_event_is_rejected_with_its_reason(label: str) -> None:
    raw, code = BAD_JOB_EVENTS[label]
    verdict = parse_job_event(raw, RECEIVED_MS)
    assert not isinstance(verdict, JobEvent) and verdict.code == code


def test_parser_agrees_with_the_published_json_schema() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    good = [
        job_event(),
        job_event(category="Retial", expires_at="2027-01-01T00:00:00+01:00", schema_version=1),
        job_event(action="closed"),
        job_event(job_id="Łódź-\U0001f600", category="Retail \u00b7 Łódź"),
        job_event(expires_at="2999-12-31T23:59:59.999999Z"),
    ]
    for raw in good:
        assert isinstance(parse_job_event(raw, RECEIVED_MS), JobEvent)
        assert validator.is_valid(json.loads(raw))
    # every bad case the schema can judge (not the time-relative ones) is invalid there too
    for label, (raw, _) in BAD_JOB_EVENTS.items():
        if label in SCHEMA_BLIND:
            continue
        assert not validator.is_valid(json.loads(raw)), label


def test_job_and_click_schemas_share_the_id_rules() -> None:
    click_schema = json.loads((Path(__file__).parents[2] / "schemas" / "click_event.v1.json").read_text())
    assert SCHEMA["$defs"]["id"] == click_schema["$defs"]["id"]


def test_valid_posted_event() -> None:
    e = parse_job_event(job_event(category=" retial ", expires_at="2027-01-01T01:00:00+01:00"), RECEIVED_MS)
    assert isinstance(e, JobEvent)
    assert (e.action, e.category) == ("posted", " retial ")  # normalised by the catalog, not the contract
    assert e.expires_at == datetime(2027, 1, 1, tzinfo=UTC)


def test_category_normalisation_fixes_and_counts() -> None:
    n = CategoryNormaliser(CATEGORIES, {"Retial": "Retail", "BI": "Business Intelligence"})
    raws = ["IT", "Retial", "Retial", " retail", "RETIAL", "business  intelligence", "bi", "Sales ", None, ""]
    got = [n.normalise(r) for r in raws]
    assert got == [
        "IT",
        "Retail",
        "Retail",
        "Retail",
        "Retail",
        "Business Intelligence",
        "Business Intelligence",
        "Sales",
        None,
        None,
    ]
    assert n.n_fixed == 6  # all but "IT" (as is), "Sales" (unknown) and the two empty ones
    assert n.fixed[("Retial", "Retail")] == 2
    assert n.unrecognised == {"Sales": 1}
    assert "2 'Retial' -> 'Retail'" in n.summary() and "'Sales'" in n.summary()


def at(hour: int) -> datetime:
    return datetime(2026, 11, 26, hour, tzinfo=UTC)


def test_newest_event_wins_and_a_close_wins_a_tie() -> None:
    assert wins(at(10), "posted", None, t.JOB_OPEN)  # a CSV row has no time: any event replaces it
    assert wins(at(11), "closed", at(10), t.JOB_OPEN)
    assert not wins(at(9), "posted", at(10), t.JOB_CLOSED)  # a late post does not reopen
    assert wins(at(12), "posted", at(10), t.JOB_CLOSED)  # a newer post does
    assert wins(at(10), "closed", at(10), t.JOB_OPEN)
    assert not wins(at(10), "posted", at(10), t.JOB_CLOSED)
    assert not wins(at(10), "closed", at(10), t.JOB_CLOSED)  # the same event again changes nothing


def test_catalog_state_is_the_same_in_any_arrival_order() -> None:
    events = [
        JobEvent("a", "j1", "posted", at(8), "Retial"),
        JobEvent("b", "j1", "closed", at(10)),
        JobEvent("c", "j1", "posted", at(9), "IT"),
        JobEvent("d", "j2", "posted", at(8), "IT", expires_at=at(11)),
        JobEvent("e", "j2", "posted", at(9)),  # no category: keeps IT; no expiry: never expires
        JobEvent("f", "j3", "closed", at(7)),
        JobEvent("f", "j3", "closed", at(7)),  # a repeat
    ]
    results = set()
    for order in itertools.permutations(events):
        state = CatalogState(CategoryNormaliser(CATEGORIES, {"Retial": "Retail"}))
        state.load([("j1", "Finance", t.JOB_OPEN, None, None, None), ("j4", "Retail", t.JOB_OPEN, None, None, None)])
        for e in order:
            state.apply(e)
        results.add(tuple(sorted((j, s.category, s.status, s.expires_at) for j, s in state.jobs.items())))
    # worked out by hand: j1 closed at 10 (category from the post at 9); j2 open, IT, no expiry; j3 closed
    assert results == {
        (
            ("j1", "IT", t.JOB_CLOSED, None),
            ("j2", "IT", t.JOB_OPEN, None),
            ("j3", None, t.JOB_CLOSED, None),
            ("j4", "Retail", t.JOB_OPEN, None),
        )
    }


def test_serving_filter_hides_closed_and_expired_jobs_only() -> None:
    rows = [
        ("j0", "IT", t.JOB_OPEN, None, None, None),
        ("j1", "IT", t.JOB_CLOSED, None, at(9), None),
        ("j2", "Retail", t.JOB_OPEN, at(12), at(9), None),
        ("j3", "Retail", t.JOB_OPEN, at(14), at(9), None),
    ]
    f = serving_filter(["j0", "j1", "j2", "j3", "unlisted"], rows, now=at(13))
    assert f.excluded.tolist() == [False, True, True, False, False]
    assert [f.category_names[c] if c >= 0 else None for c in f.categories] == ["IT", "IT", "Retail", "Retail", None]


def model(n_jobs: int = 12, rank: int = 3) -> ServingModel:
    rng = np.random.default_rng(3)
    return ServingModel(
        "v1", [f"j{i}" for i in range(n_jobs)], rng.normal(size=(n_jobs, rank)), 5.0, 0.1, popular=list(range(n_jobs))
    )


def catalog_of(m: ServingModel) -> CatalogState:
    state = CatalogState(CategoryNormaliser(CATEGORIES, {}))
    # j0..j5 IT, j6..j11 Finance; "new" is a job posted after the model was trained
    state.load([(j, "IT" if i < 6 else "Finance", t.JOB_OPEN, None, None, None) for i, j in enumerate(m.job_ids)])
    state.load([("new", "Finance", t.JOB_OPEN, None, None, None)])
    return state


def test_fallback_prefers_the_users_categories_then_popular_jobs() -> None:
    m = model()
    catalog = catalog_of(m)
    catalog.apply(JobEvent("x", "j7", "closed", at(9)))
    histories = Histories({"view": 1.0, "click": 1.0, "save": 1.0, "apply": 1.0})
    histories.load([("u", "new", 1.0, None)])
    user = histories.users["u"]
    assert catalog.categories_of(user.strengths) == {"Finance"}
    allowed = FilterCache().get(m, catalog, at(10))
    [(source, items)] = recommend_for_users(m, [user], 8, allowed, catalog=catalog)
    # popularity order is j0, j1, ...: Finance jobs first (j7 closed), then the most popular others
    assert source == t.SOURCE_FALLBACK
    assert [i[t.JOB_ID] for i in items] == ["j6", "j8", "j9", "j10", "j11", "j0", "j1", "j2"]
    [(_, items)] = recommend_for_users(m, [user], 8, allowed, max_per_category=2, catalog=catalog)
    assert [i[t.JOB_ID] for i in items] == ["j6", "j8", "j0", "j1"]


def test_speed_layer_drops_a_job_from_lists_once_its_close_event_arrived() -> None:
    m = model()
    catalog = catalog_of(m)
    histories = Histories({"view": 1.0, "click": 1.0, "save": 1.0, "apply": 1.0})
    filters, stats, limits = FilterCache(), SpeedStats(), EventLimits()

    def click(event_id: str) -> bytes:
        doc = {
            "event_id": event_id,
            "user_id": "u",
            "job_id": "j0",
            "event_type": "click",
            "occurred_at": "2026-11-26T12:00:00Z",
        }
        return json.dumps(doc).encode()

    def listed(event_id: str) -> list[str]:
        [(_, message)] = process_records(
            [(click(event_id), RECEIVED_MS)],
            histories,
            RecentIds(),
            m,
            5,
            limits,
            stats,
            catalog=catalog,
            filters=filters,
        )
        return [i["job_id"] for i in json.loads(message)["items"]]

    before = listed("c1")
    top = before[0]
    closing = job_event(job_id=top, action="closed", occurred_at="2026-11-26T12:30:00Z")
    assert apply_job_records([(closing, RECEIVED_MS)], catalog, limits, stats) == 1
    after = listed("c2")
    assert top not in after and len(after) == 5
    # the list is the old one without the closed job, the next job moving up
    assert after[:4] == before[1:]


def test_job_events_parse_with_normalised_category_and_default_expiry() -> None:
    import pyarrow as pa

    from jobrec.streaming import job_events, parse

    records = [
        job_event(event_id="a", category="retial"),  # posted at 12:00, no expiry: the default TTL applies
        job_event(event_id="b", action="closed"),
        b"{broken",
    ]
    batch = pa.RecordBatch.from_pydict(
        {
            parse.IN_VALUE: records,
            parse.IN_TOPIC: ["jobs"] * 3,
            parse.IN_PARTITION: [0] * 3,
            parse.IN_OFFSET: [10, 11, 12],
            parse.IN_RECEIVED_MS: [RECEIVED_MS] * 3,
        }
    )
    normaliser = CategoryNormaliser(CATEGORIES, {"Retial": "Retail"})
    out = job_events.parse_job_record_batch(batch, EventLimits(), normaliser, default_ttl_days=30).to_pydict()
    assert out["event_id"] == ["a", "b", None]
    assert out["category"] == ["Retail", None, None] and out["raw_category"] == ["retial", None, None]
    posted_us = int(datetime(2026, 11, 26, 12, tzinfo=UTC).timestamp()) * 1_000_000
    assert out[job_events.EXPIRES_AT_US] == [posted_us + 30 * 86_400 * 1_000_000, None, None]
    assert out["reason_code"] == [None, None, "invalid_json"] and out["raw"][2] == b"{broken"
    assert out["kafka_offset"] == [10, 11, 12]


def _job_batch(records: list[bytes | None]) -> pa.RecordBatch:
    from jobrec.streaming import parse

    n = len(records)
    return pa.RecordBatch.from_pydict(
        {
            parse.IN_VALUE: pa.array(records, pa.binary()),
            parse.IN_TOPIC: ["jobs"] * n,
            parse.IN_PARTITION: pa.array([0] * n, pa.int32()),
            parse.IN_OFFSET: pa.array(range(n), pa.int64()),
            parse.IN_RECEIVED_MS: pa.array([RECEIVED_MS] * n, pa.int64()),
        }
    )


def test_job_events_parse_turns_issue_11_inputs_into_dead_letters_not_a_failed_batch() -> None:
    from jobrec.streaming import job_events

    labels = ["lone surrogate in job_id", "lone surrogate in category", "expiry a leap second after 9999"]
    bad = [BAD_JOB_EVENTS[label] for label in labels]
    records = [job_event(event_id="ok")] + [raw for raw, _ in bad]
    normaliser = CategoryNormaliser(CATEGORIES, {})
    out = job_events.parse_job_record_batch(_job_batch(records), EventLimits(), normaliser, default_ttl_days=30)
    out.validate(full=True)  # every string column is valid UTF-8
    got = out.to_pydict()
    assert got["reason_code"] == [None] + [code for _, code in bad]
    assert got["event_id"] == ["ok"] + [None] * len(bad)
    assert got["raw"] == [None] + [raw for raw, _ in bad]


def test_job_events_parse_makes_a_record_that_raises_an_internal_error_dead_letter() -> None:
    from jobrec.streaming import job_events

    class Exploding(CategoryNormaliser):
        def normalise(self, raw: str | None) -> str | None:
            if raw == "boom":
                raise RuntimeError("normaliser broke on " + raw)
            return super().normalise(raw)

    records = [job_event(event_id="a", category="IT"), job_event(event_id="b", category="boom"), job_event()]
    out = job_events.parse_job_record_batch(
        _job_batch(records), EventLimits(), Exploding(CATEGORIES, {}), default_ttl_days=30
    ).to_pydict()
    assert out["event_id"] == ["a", None, "e1"]
    assert out["reason_code"] == [None, "internal_error", None]
    assert out["reason"][1] == "internal_error: RuntimeError: normaliser broke on boom"
    assert out["raw"][1] == records[1] and out["kafka_offset"] == [0, 1, 2]


def test_job_events_parse_dead_letters_an_expiry_datetime_cannot_hold() -> None:
    # a default TTL of a billion days (the config sets no upper bound) overflows timedelta for every posted
    # event without expires_at: each becomes a dead letter, the close in the same batch still goes through
    from jobrec.streaming import job_events

    records = [job_event(event_id="p"), job_event(event_id="c", action="closed")]
    normaliser = CategoryNormaliser(CATEGORIES, {})
    out = job_events.parse_job_record_batch(_job_batch(records), EventLimits(), normaliser, 1e9).to_pydict()
    assert out["event_id"] == [None, "c"] and out["reason_code"] == ["internal_error", None]
    assert out["reason"][0].startswith("internal_error: OverflowError: ")
