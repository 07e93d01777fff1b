"""The recommendation message v1 in code: build the JSON a consumer of the recommendations topic reads.

Same contract as `recommendation.v1.json` (the tests validate built messages against it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone

# the key of the list for users who have none of their own (no history yet): popular open jobs, source fallback.
# Published with every batch publish; the read API and RecommendationsConsumer.latest answer it for unknown users.
NEW_USER_KEY = "*"

# the model_version of the fallback lists published while no model has passed the quality gate: popularity only
POPULARITY_MODEL_VERSION = "popularity"


def format_timestamp(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds, the form both schemas use."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def recommendation_message(
    user_id: str,
    model_version: str | None,
    generated_at: datetime,
    newest_event_at: datetime | None,
    source: str,
    items: list[dict[str, object]],
) -> str:
    """The recommendation message v1 as JSON text; items are {job_id, score, rank}, best first."""
    return json.dumps(
        {
            "schema_version": 1,
            "user_id": user_id,
            "model_version": model_version,
            "generated_at": format_timestamp(generated_at),
            "newest_event_at": format_timestamp(newest_event_at) if newest_event_at else None,
            "source": source,
            "items": items,
        },
        separators=(",", ":"),
    )


def recommendation_messages(
    user_ids: Sequence[str],
    model_version: str | None,
    generated_at: datetime,
    newest_event_at: Sequence[datetime | None],
    source: str,
    job_ids: Sequence[str],
    picked: Sequence[Sequence[int]],
    scores: Sequence[Sequence[float]],
) -> list[str]:
    """`recommendation_message` for many users at once, the same text character for character (a test holds the
    two together): user i's items are job_ids[picked[i][r]] with scores[i][r] at rank r + 1. Each job id is
    quoted once and the shared fields once, which makes a publish of many users' lists about three times
    cheaper than a dict and json.dumps per user."""
    quoted = [json.dumps(job) for job in job_ids]
    version = json.dumps(model_version)
    head = '{"schema_version":1,"user_id":'
    shared = f',"model_version":{version},"generated_at":"{format_timestamp(generated_at)}","newest_event_at":'
    tail = f',"source":{json.dumps(source)},"items":['
    messages = []
    for user, newest, jobs, values in zip(user_ids, newest_event_at, picked, scores, strict=True):
        items = ",".join(
            f'{{"job_id":{quoted[j]},"score":{float(s)!r},"rank":{r}}}'
            for r, (j, s) in enumerate(zip(jobs, values, strict=True), 1)
        )
        newest_text = f'"{format_timestamp(newest)}"' if newest else "null"
        messages.append(f"{head}{json.dumps(user)}{shared}{newest_text}{tail}{items}]}}")
    return messages


def list_for_new_user(lists: dict[str, dict], user_id: str) -> dict | None:
    """The NEW_USER_KEY list (from user_id -> newest message) addressed to `user_id`, or None if there is none."""
    generic = lists.get(NEW_USER_KEY)
    return None if generic is None else {**generic, "user_id": user_id}
