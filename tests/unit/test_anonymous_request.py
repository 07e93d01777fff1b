"""The anonymous list request (anonymous_request.v1.json) in code: what it accepts, what it refuses and why, and
that the JSON Schema says the same on the same bodies."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from jobrec.schemas.anonymous_request import MAX_K, AnonymousRequest, parse_anonymous_request
from jobrec.schemas.click_event import EVENT_TYPES, Rejection

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
REQUEST_SCHEMA = json.loads((SCHEMAS / "anonymous_request.v1.json").read_text())
# the request refers to click event v1's id rules
REGISTRY = Registry().with_resources(
    (s["$id"], Resource.from_contents(s))
    for s in (REQUEST_SCHEMA, json.loads((SCHEMAS / "click_event.v1.json").read_text()))
)


def schema_accepts(doc: object) -> bool:
    validator = jsonschema.Draft202012Validator(REQUEST_SCHEMA, registry=REGISTRY)
    return validator.is_valid(doc)


def parse(doc: object, max_events: int = 5) -> AnonymousRequest | Rejection:
    return parse_anonymous_request(json.dumps(doc).encode(), 10_000, max_events)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"job_ids": ["j1", "j2", "j1"]}, AnonymousRequest((("j1", "click"), ("j2", "click"), ("j1", "click")))),
        (
            {"events": [{"job_id": "j1", "event_type": "apply"}, {"job_id": "j2"}], "k": 3},
            AnonymousRequest((("j1", "apply"), ("j2", "click")), 3),
        ),
        ({"schema_version": 1, "job_ids": [], "k": MAX_K}, AnonymousRequest((), MAX_K)),
        ({"job_ids": ["j1"], "k": 4.0}, AnonymousRequest((("j1", "click"),), 4)),
    ],
)
def test_accepted_requests(doc: dict, expected: AnonymousRequest) -> None:
    assert parse(doc) == expected
    assert schema_accepts(doc)


@pytest.mark.parametrize(
    ("doc", "code", "field"),
    [
        ({}, "missing_field", "job_ids"),
        ({"job_ids": ["j1"], "events": []}, "missing_field", "job_ids"),
        ({"job_ids": "j1"}, "bad_type", "job_ids"),
        ({"job_ids": ["j1", 7]}, "bad_type", "job_ids[1]"),
        ({"job_ids": ["j1", ""]}, "empty_field", "job_ids[1]"),
        ({"job_ids": ["x" * 129]}, "too_long", "job_ids[0]"),
        ({"job_ids": ["a\u200bb"]}, "format_char", "job_ids[0]"),
        ({"job_ids": ["j"] * 6}, "too_many", "job_ids"),
        ({"job_ids": ["j1"], "k": 0}, "out_of_range", "k"),
        ({"job_ids": ["j1"], "k": MAX_K + 1}, "out_of_range", "k"),
        ({"job_ids": ["j1"], "k": 2.5}, "bad_type", "k"),
        ({"job_ids": ["j1"], "k": True}, "bad_type", "k"),
        ({"job_ids": ["j1"], "user_id": "u1"}, "unknown_field", "user_id"),
        ({"events": ["j1"]}, "bad_type", "events[0]"),
        ({"events": [{"event_type": "view"}]}, "missing_field", "events[0].job_id"),
        ({"events": [{"job_id": "j1", "event_type": "like"}]}, "bad_event_type", "events[0].event_type"),
        ({"events": [{"job_id": "j1", "at": 1}]}, "unknown_field", "events[0]"),
        ({"schema_version": 2, "job_ids": []}, "unsupported_version", "schema_version"),
    ],
)
def test_refused_requests_name_the_field(doc: dict, code: str, field: str) -> None:
    verdict = parse(doc)
    assert isinstance(verdict, Rejection) and (verdict.code, verdict.field) == (code, field), verdict
    # the schema refuses them too (the length limit is the config's, not the schema's)
    if code != "too_many":
        assert not schema_accepts(doc)


def test_a_body_that_is_not_one_json_object_is_refused() -> None:
    for raw, code in [(b"[1]", "not_object"), (b"{", "invalid_json"), (b'{"k": 1, "k": 2}', "duplicate_key")]:
        verdict = parse_anonymous_request(raw, 10_000, 5)
        assert isinstance(verdict, Rejection) and verdict.code == code


# --- fuzzing: any body, and JSON built to hit the corners, gets a verdict, never an exception (a raise is a 500) ----

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_numbers = st.sampled_from([b"1e999", b"-1e999", b"1e308", b"0", b"-0.0", b"10.0", b"100", b"101", b"1" * 400])


def _check_verdict(verdict: AnonymousRequest | Rejection) -> None:
    if isinstance(verdict, Rejection):
        assert verdict.code and len(verdict.detail) < 500
        return
    assert isinstance(verdict, AnonymousRequest)
    assert verdict.k is None or 1 <= verdict.k <= 100
    for job_id, event_type in verdict.events:
        assert isinstance(job_id, str) and job_id and event_type in EVENT_TYPES


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_get_a_verdict(raw: bytes) -> None:
    _check_verdict(parse_anonymous_request(raw, 10_000, 5))


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "job_ids": st.lists(_json_values, max_size=6) | _json_values,
            "events": st.lists(
                st.fixed_dictionaries({}, optional={"job_id": _json_values, "event_type": _json_values}), max_size=6
            )
            | _json_values,
            "k": _json_values,
            "schema_version": _json_values,
        },
    ),
    _numbers,
)
def test_json_bodies_get_a_verdict(doc: dict, k_literal: bytes) -> None:
    _check_verdict(parse_anonymous_request(json.dumps(doc).encode(), 10_000, 5))
    # a k JSON cannot write through json.dumps: overflowing numbers (1e999 is infinity to Python's parser)
    body = json.dumps({"job_ids": ["a"]}).encode()[:-1] + b', "k": ' + k_literal + b"}"
    _check_verdict(parse_anonymous_request(body, 10_000, 5))
