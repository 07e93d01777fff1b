"""The recommendation message v1: built one at a time or many at once, the same text, valid against the schema,
whatever the ids hold (quotes, backslashes, non-ASCII, control characters)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrec.schemas.recommendation import recommendation_message, recommendation_messages

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "recommendation.v1.json").read_text())
NOW = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=timezone.utc)
ids = st.text(min_size=1, max_size=12)
scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: round(x, 6))


@settings(max_examples=200, deadline=None)
@given(
    users=st.lists(ids, min_size=1, max_size=5),
    jobs=st.lists(ids, min_size=1, max_size=8, unique=True),
    data=st.data(),
)
def test_many_at_once_equals_one_at_a_time(users, jobs, data) -> None:
    picked = [data.draw(st.lists(st.sampled_from(range(len(jobs))), max_size=5, unique=True)) for _ in users]
    values = [data.draw(st.lists(scores, min_size=len(p), max_size=len(p))) for p in picked]
    times = st.none() | st.integers(0, 10**12).map(lambda us: NOW - timedelta(microseconds=us))
    newest = [data.draw(times) for _ in users]
    many = recommendation_messages(users, "v1", NOW, newest, "batch", jobs, picked, values)
    for user, n, p, v, text in zip(users, newest, picked, values, many, strict=True):
        items = [{"job_id": jobs[j], "score": s, "rank": r + 1} for r, (j, s) in enumerate(zip(p, v, strict=True))]
        assert text == recommendation_message(user, "v1", NOW, n, "batch", items)
        jsonschema.validate(json.loads(text), SCHEMA)
