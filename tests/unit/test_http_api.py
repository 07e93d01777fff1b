"""The HTTP API's pure helpers: splitting a body into the bytes of its events, content types, the bearer check,
per-event verdicts that never raise, Kafka's readiness verdict, and the follower's decoding of a list record."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from jobrec.schemas.click_event import ClickEvent, EventLimits, Rejection, parse_click_event
from jobrec.streaming.clients import decode_list_record
from jobrec.streaming.http_api import bearer_token_ok, body_format, judge_events, split_body, split_json_array
from jobrec.streaming.readiness import ProbeState, judge_kafka, topic_metadata_problem

NOW_MS = 1_790_000_000_000  # 2026-09-21


def click(user_id: str = "u1", job_id: str = "j1") -> bytes:
    return json.dumps(
        {
            "event_id": f"e-{user_id}-{job_id}",
            "user_id": user_id,
            "job_id": job_id,
            "event_type": "click",
            "occurred_at": "2026-09-20T10:00:00Z",
        }
    ).encode()


def test_array_elements_are_the_bytes_they_were_sent_as() -> None:
    # spacing, key order, number spelling and escapes as written: nothing is parsed and re-serialised
    body = b' [ {"b": 1.0, "a": 1e2} ,\n\t"x\\u0041",  [1, [2]] , null ]\r\n'
    assert split_json_array(body) == [b'{"b": 1.0, "a": 1e2}', b'"x\\u0041"', b"[1, [2]]", b"null"]


def test_a_repeated_key_inside_an_element_reaches_the_parser() -> None:
    repeated = b'{"event_id": "e", "user_id": "a", "user_id": "b", "job_id": "j", "event_type": "click", '
    repeated += b'"occurred_at": "2026-09-20T10:00:00Z"}'
    [element] = split_json_array(b"[" + repeated + b"]") or []
    assert element == repeated
    verdict = parse_click_event(element, NOW_MS)
    assert isinstance(verdict, Rejection) and (verdict.code, verdict.field) == ("duplicate_key", "user_id")


def test_brackets_commas_and_quotes_inside_strings_do_not_split() -> None:
    tricky = b'{"user_id": "a,]}[{\\"\\\\", "job_id": "\\\\"}'
    assert split_json_array(b"[" + tricky + b", 2]") == [tricky, b"2"]


def test_any_depth_splits_without_recursion() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert split_json_array(b"[" + deep + b"]") == [deep]
    [only] = split_body(b"[" * 5000 + b"]" * 5000, "json")
    assert only == b"[" * 4999 + b"]" * 4999


@pytest.mark.parametrize(
    "body",
    [
        b"[1,]",  # a comma before the end
        b"[,1]",  # a comma before the first element
        b"[1,,2]",
        b"[1, 2",  # never closes
        b'["never closes]',
        b"[{]}",  # brackets that do not pair
        b"[1]]",
        b"[1] [2]",  # something after the end
        b"[1] x",
        b"{}",  # not an array
        b"",
    ],
)
def test_a_body_that_is_not_one_well_formed_array_is_none(body: bytes) -> None:
    assert split_json_array(body) is None
    # as a body it is then one (bad) event, which the parser rejects with its reason
    assert split_body(body, "json") == [body]


def test_empty_array_has_no_events() -> None:
    assert split_json_array(b"[]") == [] and split_json_array(b" [ \n ] ") == []


def test_ndjson_lines_and_single_objects() -> None:
    assert split_body(b'{"a": 1}\r\n\n  \n{"b": 2}', "ndjson") == [b'{"a": 1}\r', b'{"b": 2}']
    assert split_body(b'[{"a": 1}]', "ndjson") == [b'[{"a": 1}]']  # NDJSON: a line is an event, whatever it is
    assert split_body(b'{"a": [1, 2]}', "json") == [b'{"a": [1, 2]}']


@pytest.mark.parametrize(
    "content_type,expected",
    [
        (None, "json"),
        ("", "json"),
        ("application/json", "json"),
        ("Application/JSON; charset=UTF-8", "json"),
        ('application/json; charset="utf-8"', "json"),
        ("application/x-ndjson", "ndjson"),
        ("application/jsonlines", "ndjson"),
        ("application/json-lines; charset=utf-8", "ndjson"),
        ("text/plain", None),
        ("application/x-www-form-urlencoded", None),
        ("application/json; charset=latin-1", None),
        ("application/jsonx", None),
        ("multipart/form-data; boundary=x", None),
    ],
)
def test_content_types(content_type: str | None, expected: str | None) -> None:
    assert body_format(content_type) == expected


@pytest.mark.parametrize(
    "header,ok",
    [
        (b"Bearer s3cret", True),
        (b"bearer s3cret", True),  # the scheme is case-insensitive (RFC 7235)
        (b"Bearer  s3cret ", True),
        (b"Bearer s3cre", False),
        (b"Bearer s3cret2", False),
        (b"Bearer S3CRET", False),
        (b"Basic s3cret", False),
        (b"s3cret", False),
        (b"Bearer", False),
        (b"", False),
        (None, False),
    ],
)
def test_bearer_token(header: bytes | None, ok: bool) -> None:
    assert bearer_token_ok(header, "s3cret") is ok


def test_a_non_ascii_token_is_compared_as_utf8() -> None:
    assert bearer_token_ok("Bearer clé".encode(), "clé")
    assert not bearer_token_ok(b"Bearer cl\xe9", "clé")  # latin-1 bytes are not the token


def test_judge_events_never_raises_and_keeps_each_verdict_to_its_event() -> None:
    good = click("u1")

    def parse(raw: bytes, now_ms: int, limits: EventLimits) -> Any:
        if raw == b"overflow":
            raise OverflowError("date value out of range")  # a fault of the parser, as issue 11 found one
        if raw == b"surrogate":
            # an event the parser let through whose key UTF-8 cannot encode
            return ClickEvent("e", "\ud800", "j", "click", datetime(2026, 9, 20, tzinfo=timezone.utc))
        return parse_click_event(raw, now_ms, limits)

    verdicts = judge_events([good, b"overflow", b"surrogate", b"{", good], parse, EventLimits(), "user_id", NOW_MS)
    assert len(verdicts) == 5
    event, key = verdicts[0]  # type: ignore[misc]
    assert isinstance(event, ClickEvent) and key == b"u1"
    assert isinstance(verdicts[1], Rejection) and verdicts[1].code == "internal_error"
    assert isinstance(verdicts[2], Rejection) and (verdicts[2].code, verdicts[2].field) == ("bad_unicode", "user_id")
    assert isinstance(verdicts[3], Rejection) and verdicts[3].code == "invalid_json"
    assert verdicts[4] == verdicts[0]


INTERVAL, TIMEOUT = 2.0, 0.8


@pytest.mark.parametrize(
    "state,now,ready,says",
    [
        (ProbeState(last_ok_at=100.0), 100.5, True, "0.5 s ago"),
        # a round trip in flight but not yet overdue: the last answer still counts
        (ProbeState(last_ok_at=100.0, running_since=102.0), 102.5, True, "ago"),
        # in flight longer than the timeout: not ready before it even fails (a frozen broker)
        (ProbeState(last_ok_at=100.0, running_since=102.0), 102.9, False, "no answer for 0.9 s"),
        (ProbeState(last_ok_at=100.0, last_error="RequestTimedOutError: x"), 100.1, False, "failed"),
        (ProbeState(), 1.0, False, "no Kafka metadata request answered yet"),
        # the checker itself stuck: its last answer gets too old (2 intervals + the timeout)
        (ProbeState(last_ok_at=100.0), 104.7, True, "ago"),
        (ProbeState(last_ok_at=100.0), 104.9, False, "no Kafka metadata answer for 4.9 s"),
    ],
)
def test_kafka_readiness_verdict(state: ProbeState, now: float, ready: bool, says: str) -> None:
    ok, why = judge_kafka(state, now, INTERVAL, TIMEOUT)
    assert ok is ready and says in why


def test_topic_metadata_problems() -> None:
    def topic(name: str, error: int = 0, leaders: tuple[int, ...] = (1, 1)) -> dict[str, Any]:
        parts = [{"partition_index": i, "leader_id": leader} for i, leader in enumerate(leaders)]
        return {"name": name, "error_code": error, "partitions": parts}

    topics = ("clicks", "jobs")
    assert topic_metadata_problem([topic("clicks"), topic("jobs", leaders=(1,))], topics) is None
    assert "jobs: not in the answer" in (topic_metadata_problem([topic("clicks")], topics) or "")
    assert "error code 3" in (
        topic_metadata_problem([topic("clicks", error=3, leaders=()), topic("jobs")], topics) or ""
    )
    assert "[1] have no leader" in (
        topic_metadata_problem([topic("clicks", leaders=(1, -1)), topic("jobs")], topics) or ""
    )
    assert "no partitions" in (topic_metadata_problem([topic("clicks", leaders=()), topic("jobs")], topics) or "")


@pytest.mark.parametrize(
    "key,value,user_id,has_message,skipped",
    [
        (b"u1", b'{"user_id": "u1", "items": []}', "u1", True, None),
        (b"u1", None, "u1", False, None),  # a tombstone: not skipped, the list goes
        (b"u1", b"\xff not JSON {", "u1", False, "not JSON"),
        (b"u1", b"[1, 2]", "u1", False, "not a JSON object"),
        (b"u1", b'"u1"', "u1", False, "not a JSON object"),
        (b"u1", b'{"items": []}', "u1", False, "no string user_id"),
        (b"u1", b'{"user_id": 7}', "u1", False, "no string user_id"),
        (b"u1", b"[" * 100_000, "u1", False, "not JSON"),  # too deep for json: skipped, not raised
        (b"\xff", b'{"user_id": "u1"}', None, False, "not UTF-8"),
        (None, b'{"user_id": "u1"}', None, False, "no key"),
    ],
)
def test_decode_list_record(
    key: bytes | None, value: bytes | None, user_id: str | None, has_message: bool, skipped: str | None
) -> None:
    record = decode_list_record(key, value)
    assert record.user_id == user_id and (record.message is not None) is has_message
    assert (record.skipped is None) if skipped is None else (skipped in (record.skipped or ""))
