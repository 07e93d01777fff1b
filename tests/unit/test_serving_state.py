"""The API's serving snapshot without a JVM or a broker: anonymous lists against an independent fold-in, similar
jobs through the snapshot, the messages against their schemas, the background thread following job events and
new models, and the model assembled the same from rows in any order."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest

from jobrec.batch.core.catalog import CatalogState, CategoryNormaliser
from jobrec.schemas.anonymous_request import AnonymousRequest
from jobrec.schemas.recommendation import POPULARITY_MODEL_VERSION
from jobrec.streaming.http_api import anonymous_message, serving_unavailable, similar_jobs_message
from jobrec.streaming.producer import encode_event, make_job_event
from jobrec.streaming.serving_model import assemble_serving_model
from jobrec.streaming.serving_state import ServingState, session_history
from jobrec.streaming.serving_tables import delta_storage_options
from jobrec.streaming.speed import ServingModel, popularity_model
from tests.unit.test_fold_in import normal_equations_solution

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
WEIGHTS = {"view": 1.0, "click": 2.0, "save": 3.0, "apply": 5.0}
N_JOBS, RANK, ALPHA, REG = 30, 4, 5.0, 0.1
CAP = 2


def model(version: str = "v1") -> ServingModel:
    rng = np.random.default_rng(11)
    y = rng.normal(scale=0.5, size=(N_JOBS, RANK))
    rows = [(f"j{i:02d}", y[i]) for i in range(N_JOBS)]
    # users per job: j00 most, then j01, ...
    return assemble_serving_model(
        version, {"alpha": ALPHA, "reg_param": REG}, rows, [(j, 100 - i) for i, (j, _) in enumerate(rows)]
    )


def catalog(closed: tuple[str, ...] = (), it_jobs: tuple[str, ...] = ()) -> CatalogState:
    state = CatalogState(CategoryNormaliser(["IT", "HR"], {}))
    state.load(
        (
            f"j{i:02d}",
            "IT" if f"j{i:02d}" in it_jobs else None,
            "closed" if f"j{i:02d}" in closed else "open",
            None,
            None,
            None,
        )
        for i in range(N_JOBS)
    )
    return state


class FakeJobsConsumer:
    """Hands out the job-event records put into it, one poll at a time."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.lock = threading.Lock()
        self.closed = False

    def send(self, event: dict) -> None:
        with self.lock:
            self.pending.append(encode_event(event))

    def poll(self, timeout_ms: int) -> dict:
        with self.lock:
            records, self.pending = self.pending, []
        if not records:
            time.sleep(timeout_ms / 1000 / 10)
            return {}
        now_ms = int(time.time() * 1000)
        return {"jobs-0": [SimpleNamespace(value=r, timestamp=now_ms) for r in records]}

    def close(self) -> None:
        self.closed = True


def started(
    load_model: Callable[[str | None], ServingModel | None], state: CatalogState, consumer: FakeJobsConsumer | None
) -> ServingState:
    serving = ServingState(
        load_model,
        lambda: state.rows(),
        CatalogState(CategoryNormaliser(["IT", "HR"], {})),
        (lambda: consumer) if consumer else None,
        weights=WEIGHTS,
        top_n=5,
        max_per_category=CAP,
        check_seconds=0.05,
        retry_seconds=0.05,
    ).start()
    wait_for(lambda: serving.snapshot is not None, "a first snapshot")
    return serving


def wait_for(check: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.01)


def test_an_anonymous_list_is_the_independent_fold_in_of_that_history() -> None:
    m = model()
    serving = started(lambda current: m if current is None else None, catalog(closed=("j05",)), None)
    try:
        snapshot = serving.snapshot
        assert snapshot is not None
        # j03 applied to and viewed (5 + 1), j07 clicked (2): the strengths a user with these clicks has
        request = AnonymousRequest((("j03", "apply"), ("j07", "click"), ("j03", "view")), 8)
        msg = anonymous_message(snapshot, serving, request)
    finally:
        serving.stop()
    assert msg["source"] == "fold-in" and msg["model_version"] == "v1"
    r_row = np.zeros(N_JOBS)
    r_row[[3, 7]] = [6.0, 2.0]
    # Spark's lambda scaling (the default of a model without reg_scaling): regParam times the history's length
    x = normal_equations_solution(m.job_matrix, r_row, ALPHA, REG * 2)
    scores = m.job_matrix @ x
    order = [i for i in np.argsort(-scores, kind="stable") if i not in (3, 7, 5)][:8]
    assert [it["job_id"] for it in msg["items"]] == [f"j{i:02d}" for i in order]
    assert all(abs(it["score"] - scores[i]) < 1e-6 for it, i in zip(msg["items"], order, strict=True))
    jsonschema.validate(msg, json.loads((SCHEMAS / "anonymous_recommendation.v1.json").read_text()))


def test_a_session_of_unknown_jobs_gets_the_fallback_list_of_its_categories() -> None:
    m = model()
    state = catalog(it_jobs=("j10", "j11", "j12", "new-it-job"))
    state.load([("new-it-job", "IT", "open", None, None, None)])
    serving = started(lambda current: m if current is None else None, state, None)
    try:
        assert serving.snapshot is not None
        msg = anonymous_message(serving.snapshot, serving, AnonymousRequest((("new-it-job", "click"),), 5))
    finally:
        serving.stop()
    # the model knows no job of the session: popular IT jobs first (at most CAP), then the most popular others
    assert msg["source"] == "fallback"
    assert [it["job_id"] for it in msg["items"]] == ["j10", "j11", "j00", "j01", "j02"]


def test_similar_jobs_through_the_snapshot_leave_out_closed_jobs_and_the_job_itself() -> None:
    m = model()
    y = m.job_matrix
    cosines = y @ y[4] / (np.linalg.norm(y, axis=1) * np.linalg.norm(y[4]))
    nearest = [int(i) for i in np.argsort(-cosines) if i != 4]
    state = catalog(closed=(f"j{nearest[0]:02d}",))
    serving = started(lambda current: m if current is None else None, state, None)
    try:
        assert serving.snapshot is not None
        msg = similar_jobs_message(serving.snapshot, "j04", 3)
        assert similar_jobs_message(serving.snapshot, "no-such-job", 3) is None
    finally:
        serving.stop()
    assert msg is not None
    assert [it["job_id"] for it in msg["items"]] == [f"j{i:02d}" for i in nearest[1:4]]
    assert [it["score"] for it in msg["items"]] == [round(float(cosines[i]), 6) for i in nearest[1:4]]
    jsonschema.validate(msg, json.loads((SCHEMAS / "similar_jobs.v1.json").read_text()))


def test_the_thread_applies_job_events_and_switches_to_a_new_model() -> None:
    first, second = model("v1"), model("v2")
    published = {"version": "v1"}

    def load(current: str | None) -> ServingModel | None:
        wanted = first if published["version"] == "v1" else second
        return None if wanted.model_version == current else wanted

    consumer = FakeJobsConsumer()
    serving = started(load, catalog(), consumer)
    try:
        snapshot = serving.snapshot
        assert snapshot is not None and not snapshot.allowed.excluded.any()
        consumer.send(make_job_event("j09", "closed", occurred_at=datetime.now(timezone.utc)))
        wait_for(lambda: bool(serving.snapshot and serving.snapshot.allowed.excluded[9]), "j09 hidden")
        published["version"] = "v2"
        wait_for(lambda: bool(serving.snapshot and serving.snapshot.model is second), "the switch to v2")
        assert serving.snapshot.allowed.excluded[9]  # the catalog stays with the new model
    finally:
        serving.stop()
    assert consumer.closed


def test_a_failed_first_read_is_retried_and_503_says_why_meanwhile() -> None:
    m = model()
    attempts = []

    def load(current: str | None) -> ServingModel | None:
        attempts.append(current)
        if len(attempts) < 3:
            raise OSError("the tables are not reachable")
        return m if current is None else None

    serving = ServingState(
        load,
        list,
        CatalogState(CategoryNormaliser([], {})),
        None,
        weights=WEIGHTS,
        top_n=5,
        max_per_category=0,
        check_seconds=60,
        retry_seconds=0.2,
    )
    unavailable = serving_unavailable(serving, needs_factors=False)
    assert unavailable is not None and unavailable.status_code == 503
    serving.start()
    try:
        wait_for(lambda: "not reachable" in serving.detail, "the failure in the detail")
        assert b"not reachable" in serving_unavailable(serving, needs_factors=True).body
        wait_for(lambda: serving.snapshot is not None, "the retried read")
        assert serving_unavailable(serving, needs_factors=True) is None
    finally:
        serving.stop()


def test_the_popularity_model_answers_anonymous_lists_but_not_similar_jobs() -> None:
    popular = popularity_model([("a", 5), ("b", 3), ("c", 1)])
    serving = started(lambda current: popular, catalog(), None)
    try:
        assert serving_unavailable(serving, needs_factors=False) is None
        refused = serving_unavailable(serving, needs_factors=True)
        assert refused is not None and refused.status_code == 503 and b"quality gate" in refused.body
        msg = anonymous_message(serving.snapshot, serving, AnonymousRequest((("a", "click"),), 5))
    finally:
        serving.stop()
    assert msg["model_version"] == POPULARITY_MODEL_VERSION and msg["source"] == "fallback"
    assert [(it["job_id"], it["score"]) for it in msg["items"]] == [("b", 0.6), ("c", 0.2)]


def test_session_history_sums_the_weights_as_a_users_clicks_do() -> None:
    history = session_history([("j1", "view"), ("j2", "apply"), ("j1", "save")], WEIGHTS)
    assert history.strengths == {"j1": 4.0, "j2": 5.0} and history.last_at == {} and history.newest_event_at is None
    assert session_history([], WEIGHTS).strengths == {}


def test_the_model_is_the_same_from_rows_in_any_order() -> None:
    rows = [("b", [0.0, 1.0]), ("a", [1.0, 0.0]), ("c", [1.0, 1.0])]
    users = [("c", 1), ("a", 4), ("x-not-in-model", 9), ("b", 4)]
    params = {"alpha": 3.0, "reg_param": 0.5, "reg_scaling": "none", "confidence": "log", "epsilon": 2.0}
    one = assemble_serving_model("v", params, rows, users)
    other = assemble_serving_model("v", params, reversed(rows), reversed(users))
    for m in (one, other):
        assert m.job_ids == ["a", "b", "c"] and m.job_matrix.tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
        # most users first, ties by job_id; shares of the most popular job's users (x counts for the scale only)
        assert m.popular == [0, 1, 2] and m.popularity.tolist() == [1.0, 1.0, 0.25]
        assert (m.alpha, m.reg_param, m.reg_scaling, m.confidence, m.epsilon) == (3.0, 0.5, "none", "log", 2.0)


@pytest.mark.parametrize(
    ("extra", "options"),
    [
        ({}, {}),
        (
            {
                "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
                "spark.hadoop.fs.s3a.path.style.access": "true",
            },
            {
                "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
                "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
                "AWS_ALLOW_HTTP": "true",
            },
        ),
        (
            {"spark.hadoop.fs.s3a.endpoint": "https://s3.example", "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1"},
            {"AWS_ENDPOINT_URL": "https://s3.example", "AWS_REGION": "eu-west-1"},
        ),
        (
            {"spark.hadoop.fs.s3a.access.key": "AK", "spark.hadoop.fs.s3a.secret.key": "SK"},
            {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"},
        ),
    ],
)
def test_delta_storage_options_follow_the_s3a_settings(extra: dict, options: dict) -> None:
    assert delta_storage_options(extra) == options
