"""Similar jobs and anonymous lists on the real stack: a model trained by Spark on planted groups and written to
Delta, the API built as `jobrec api` builds it (its model and catalog read from Delta without a JVM, the jobs topic
followed on the session broker), asked over HTTP. The expected answers are computed here, with numpy, from the
factors Spark wrote and the clicks the test made."""

from __future__ import annotations

import csv
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from pyspark.sql import functions as F

from jobrec.batch.backfill import CsvLayout, load_counts_csv
from jobrec.batch.connections import ensure_topics
from jobrec.batch.core.catalog import CategoryNormaliser
from jobrec.batch.delta_tables import table_path
from jobrec.batch.jobs_table import load_jobs_csv
from jobrec.batch.processes import als_params
from jobrec.batch.train import train_model, write_model
from jobrec.schemas import tables as t
from jobrec.schemas.config import Config, load_config
from jobrec.streaming import serving_tables
from jobrec.streaming.clients import ApiClient, ApiError
from jobrec.streaming.histories import Histories
from jobrec.streaming.key_partitions import key_partitions
from jobrec.streaming.processes import build_api
from jobrec.streaming.producer import make_job_event
from jobrec.streaming.speed_sources import load_histories
from tests.integration.conftest import REPO, serving, write_config

SCHEMAS = REPO / "schemas"
TOKEN = "similar-token"
CAP = 3
# Four planted groups of six jobs; each user clicks four to six jobs of one group only, so the interaction matrix is
# block diagonal and ALS gives each group its own direction: the five nearest jobs of a job are its group. Within a
# group three jobs are IT and three HR, so a cap of 3 never has to drop a group-mate (k = 5 holds at most 3 of each).
GROUPS, PER_GROUP, USERS_PER_GROUP = 4, 6, 20
JOBS = [f"g{g}-j{i}" for g in range(GROUPS) for i in range(PER_GROUP)]
CLOSED = "g1-j0"  # closed by a job event through the API once the API is serving


def group(job: str) -> str:
    return job.split("-")[0]


def category(job: str) -> str:
    return "IT" if int(job.split("-j")[1]) < PER_GROUP // 2 else "HR"


def planted_clicks() -> dict[tuple[str, str], int]:
    """(user, job) -> clicks: users of group g click 4 to 6 of its jobs, 1 to 3 times each."""
    rng = random.Random(16)
    clicks = {}
    for g in range(GROUPS):
        for u in range(USERS_PER_GROUP):
            for job in rng.sample([j for j in JOBS if group(j) == f"g{g}"], rng.randint(4, PER_GROUP)):
                clicks[(f"u{g}-{u}", job)] = rng.randint(1, 3)
    return clicks


def write_csv(path: Path, header: list[str], rows: list[tuple[Any, ...]]) -> str:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.v1.json").read_text())


@pytest.fixture(scope="module")
def stack(spark, broker, tmp_path_factory) -> Any:
    """(config, API base URL, the model's version and params, its job factors by job id, the clicks): a model of
    the planted groups published in Delta (a second clicks file updates some pairs, so the interactions table has
    deletion vectors), and the API serving it."""
    folder: Path = tmp_path_factory.mktemp("similar")
    name = f"similar-{int(time.time())}"
    cfg: Config = load_config(
        write_config(
            folder,
            broker.bootstrap,
            name,
            kafka={"jobs_topic": f"{name}-jobs"},
            publish={"top_n": 10, "max_per_category": CAP},
            als={"rank": 8, "max_iter": 5, "engine": "spark"},
            fold_in={"model_check_seconds": 1},
            api={"token": TOKEN},
        ),
        env={},
    )
    ensure_topics(cfg.kafka, broker.bootstrap)
    root = cfg.storage.tables_root
    clicks = planted_clicks()
    pairs = sorted(clicks)
    first = write_csv(folder / "clicks.csv", ["userId", "jobId", "Clicks"], [(u, j, clicks[(u, j)]) for u, j in pairs])
    load_counts_csv(spark, first, CsvLayout(), root, "click", cfg.ingest.weights)
    # one more click on every fifth pair: a MERGE that updates rows, which Delta marks deleted in deletion vectors
    more = pairs[::5]
    second = write_csv(folder / "more.csv", ["userId", "jobId", "Clicks"], [(u, j, 1) for u, j in more])
    load_counts_csv(spark, second, CsvLayout(), root, "click", cfg.ingest.weights)
    for pair in more:
        clicks[pair] += 1
    jobs_csv = write_csv(folder / "jobs.csv", ["jobID", "job_category"], [(j, category(j)) for j in JOBS])
    load_jobs_csv(spark, jobs_csv, root, CategoryNormaliser(cfg.catalog.categories, cfg.catalog.aliases))
    model = train_model(spark, root, als_params(cfg))
    write_model(spark, root, model, t.STATUS_PUBLISHED)
    params = json.loads(
        spark.read.format("delta")
        .load(table_path(root, t.MODELS))
        .where(F.col(t.MODEL_VERSION) == model.model_version)
        .collect()[0][t.PARAMS]
    )
    factors = {
        r[t.JOB_ID]: np.array(r[t.FEATURES], dtype=np.float64)
        for r in spark.read.format("delta")
        .load(table_path(root, t.JOB_FACTORS))
        .where(F.col(t.MODEL_VERSION) == model.model_version)
        .collect()
    }
    app, stop = build_api(cfg, broker.bootstrap)
    with serving(app) as base:
        wait_for(lambda: call(base, "GET", "/v1/jobs/g0-j0/similar")[0] == 200, 120, "the API serves the model")
        yield cfg, base, model.model_version, params, factors, clicks
    stop()


def cosine_neighbours(factors: dict[str, np.ndarray], job: str, hidden: set[str]) -> list[tuple[str, float]]:
    """Every other open job by cosine, nearest first (ties by job_id), computed plainly."""
    y = factors[job]
    cos = {
        j: float(v @ y / (np.linalg.norm(v) * np.linalg.norm(y)))
        for j, v in factors.items()
        if j != job and j not in hidden
    }
    return sorted(cos.items(), key=lambda p: (-p[1], p[0]))


def test_the_model_and_histories_read_without_a_jvm_are_what_spark_wrote(stack) -> None:
    # the speed layer and the API both read through delta-rs: checked here against what Spark wrote and the clicks
    cfg, _, version, params, factors, clicks = stack
    root = cfg.storage.tables_root
    # users per job through the deletion vectors: the updated pairs are counted once
    expected = Counter(job for _, job in clicks)
    assert dict(serving_tables.read_users_per_job(root)) == dict(expected)
    model = serving_tables.read_serving_model(root)
    assert model is not None and model.model_version == version
    assert sorted(model.job_ids) == sorted(factors)
    for job, row in zip(model.job_ids, model.job_matrix, strict=True):
        np.testing.assert_allclose(row, factors[job], rtol=1e-6)
    assert (model.alpha, model.reg_param) == (params["alpha"], params["reg_param"])
    # the popularity order: most users first, ties by job id
    assert [model.job_ids[i] for i in model.popular[:5]] == sorted(expected, key=lambda j: (-expected[j], j))[:5]
    assert serving_tables.read_serving_model(root, version) is None  # nothing newer

    # the speed layer's histories: every pair's strength is its clicks times the click weight, updated pairs once
    weight = cfg.ingest.weights["click"]
    users = sorted({u for u, _ in clicks})
    partition_of = dict(zip(users, key_partitions(users, 4).tolist(), strict=True))
    for wanted in (None, [0, 2]):
        histories = Histories(dict(cfg.ingest.weights))
        kept = load_histories(root, histories, wanted, 4)
        owned = {u for u in users if wanted is None or partition_of[u] in wanted}
        mine = {pair: n for pair, n in clicks.items() if pair[0] in owned}
        assert kept == len(mine) > 0
        got = {(u, j): s for u in owned for j, s in histories.get(u).strengths.items()}
        assert got == pytest.approx({pair: n * weight for pair, n in mine.items()})
        # one segment per owned partition that has users, and nobody else's users
        assert set(histories.segments) == {partition_of[u] for u in owned}
        assert histories.user_count == len(owned)


def test_the_neighbours_of_a_planted_job_are_its_group(stack) -> None:
    _, base, version, _, factors, _ = stack
    for job in JOBS:
        if group(job) == group(CLOSED):
            continue  # the closing test below changes this group's answers
        status, msg = call(base, "GET", f"/v1/jobs/{job}/similar?k=5")
        assert status == 200, msg
        jsonschema.validate(msg, schema("similar_jobs"))
        assert msg["job_id"] == job and msg["model_version"] == version
        got = [(i["job_id"], i["score"]) for i in msg["items"]]
        assert {group(j) for j, _ in got} == {group(job)} and len(got) == PER_GROUP - 1, got
        expected = cosine_neighbours(factors, job, set())[: PER_GROUP - 1]
        assert [j for j, _ in got] == [j for j, _ in expected]
        assert all(abs(s - e) < 1e-6 for (_, s), (_, e) in zip(got, expected, strict=True))


def test_a_closed_job_is_never_returned(stack) -> None:
    _, base, _, _, factors, _ = stack
    mate = "g1-j1"
    assert CLOSED in [i["job_id"] for i in call(base, "GET", f"/v1/jobs/{mate}/similar?k=5")[1]["items"]]
    session = {"job_ids": ["g1-j2", "g1-j3"], "k": 10}
    assert CLOSED in [i["job_id"] for i in call(base, "POST", "/v1/recommendations", session)[1]["items"]]
    status, _ = call(base, "POST", "/v1/jobs/events", make_job_event(CLOSED, "closed"))
    assert status == 200

    def hidden() -> bool:
        return CLOSED not in [i["job_id"] for i in call(base, "GET", f"/v1/jobs/{mate}/similar?k=5")[1]["items"]]

    wait_for(hidden, 30, f"{CLOSED} left the answers")
    for job in JOBS:
        status, msg = call(base, "GET", f"/v1/jobs/{job}/similar?k=100")
        assert status == 200 and CLOSED not in [i["job_id"] for i in msg["items"]], job
        # every other job, nearest first, the cap of 3 per category applied (IT first for an IT job, ...)
        expected = [j for j, _ in cosine_neighbours(factors, job, {CLOSED})]
        taken, per_category = [], Counter()
        for j in expected:
            if per_category[category(j)] < CAP:
                per_category[category(j)] += 1
                taken.append(j)
        assert [i["job_id"] for i in msg["items"]] == taken
    # the closed job itself still has neighbours: a page about it can show open jobs like it
    assert call(base, "GET", f"/v1/jobs/{CLOSED}/similar?k=5")[0] == 200
    status, msg = call(base, "POST", "/v1/recommendations", session)
    assert status == 200 and CLOSED not in [i["job_id"] for i in msg["items"]]


def expected_fold_in(
    factors: dict[str, np.ndarray], params: dict[str, Any], strengths: dict[str, float], k: int
) -> list[tuple[str, float]]:
    """The session's list from the paper's normal equations over every job, with the model's own lambda scaling:
    x = (Y^T C Y + lambda I)^-1 Y^T C p, scores Y x; the session's jobs and CLOSED left out, at most CAP of one
    category."""
    jobs = sorted(factors)
    y = np.array([factors[j] for j in jobs])
    r = np.array([strengths.get(j, 0.0) for j in jobs])
    assert params["confidence"] == "linear" and params.get("half_life_days", 0) == 0  # r is the strength itself
    c = np.diag(1.0 + params["alpha"] * r)
    p = (r > 0).astype(float)
    lam = params["reg_param"] * (np.count_nonzero(r) if params.get("reg_scaling", "count") == "count" else 1)
    x = np.linalg.solve(y.T @ c @ y + lam * np.eye(y.shape[1]), y.T @ c @ p)
    scores = y @ x
    order = sorted(range(len(jobs)), key=lambda i: (-scores[i], jobs[i]))
    out, per_category = [], Counter()
    for i in order:
        job = jobs[i]
        if job in strengths or job == CLOSED or per_category[category(job)] == CAP:
            continue
        per_category[category(job)] += 1
        out.append((job, float(scores[i])))
    return out[:k]


def test_an_anonymous_list_is_the_fold_in_of_that_history(stack) -> None:
    cfg, base, version, params, factors, _ = stack
    assert params["reg_scaling"] == "count"  # Spark's engine: lambda times the history's length
    weights = cfg.ingest.weights
    events = [("g2-j0", "apply"), ("g2-j1", "view"), ("g3-j4", "click"), ("g2-j0", "view"), ("not-in-model", "save")]
    strengths: dict[str, float] = {}
    for job, kind in events:
        strengths[job] = strengths.get(job, 0.0) + weights[kind]
    status, msg = call(
        base,
        "POST",
        "/v1/recommendations",
        {"events": [{"job_id": j, "event_type": e} for j, e in events], "k": 8},
    )
    assert status == 200, msg
    jsonschema.validate(msg, schema("anonymous_recommendation"))
    assert msg["source"] == "fold-in" and msg["model_version"] == version
    known = {j: s for j, s in strengths.items() if j in factors}
    expected = expected_fold_in(factors, params, known, 8)
    got = [(i["job_id"], i["score"]) for i in msg["items"]]
    assert [j for j, _ in got] == [j for j, _ in expected]
    assert all(abs(s - e) < 1e-6 for (_, s), (_, e) in zip(got, expected, strict=True))
    # two categories and a cap of 3: six of the eight asked for
    assert [i["rank"] for i in msg["items"]] == list(range(1, 7))


def test_a_session_the_model_does_not_know_gets_the_popularity_fallback(stack) -> None:
    _, base, version, _, _, clicks = stack
    status, msg = call(base, "POST", "/v1/recommendations", {"job_ids": ["brand-new-job"], "k": 6})
    assert status == 200 and msg["source"] == "fallback" and msg["model_version"] == version
    jsonschema.validate(msg, schema("anonymous_recommendation"))
    users = Counter(job for _, job in clicks)
    order = sorted(users, key=lambda j: (-users[j], j))
    taken, per_category = [], Counter()
    for job in order:
        if job != CLOSED and per_category[category(job)] < CAP:
            per_category[category(job)] += 1
            taken.append((job, round(users[job] / users[order[0]], 6)))
    assert [(i["job_id"], i["score"]) for i in msg["items"]] == taken[:6]


def test_bad_requests_and_unknown_jobs_are_4xx_and_the_client_says_so(stack) -> None:
    cfg, base, _, _, _, _ = stack
    assert call(base, "GET", "/v1/jobs/no-such-job/similar")[0] == 404
    for k in ("0", "101", "x", "2.5"):
        status, msg = call(base, "GET", f"/v1/jobs/g0-j0/similar?k={k}")
        assert status == 400 and msg["field"] == "k", (k, msg)
    status, msg = call(base, "POST", "/v1/recommendations", {"job_ids": ["g0-j0"], "user_id": "u"})
    assert status == 400 and msg["field"] == "user_id"
    status, msg = call(base, "POST", "/v1/recommendations", {"events": [{"job_id": "g0-j0", "event_type": "like"}]})
    assert status == 400 and msg["field"] == "events[0].event_type"

    client = ApiClient(base, token=TOKEN)
    assert [i["job_id"] for i in client.similar_jobs("g0-j0", k=3)["items"]] == [
        i["job_id"] for i in call(base, "GET", "/v1/jobs/g0-j0/similar?k=3")[1]["items"]
    ]
    listed = client.recommend_session(["g0-j0", "g0-j1"], k=4)
    assert listed == {
        **call(base, "POST", "/v1/recommendations", {"job_ids": ["g0-j0", "g0-j1"], "k": 4})[1],
        "generated_at": listed["generated_at"],
    }
    assert client.recommend_session(events=[("g0-j0", "apply")])["source"] == "fold-in"
    with pytest.raises(ApiError) as unknown:
        client.similar_jobs("no-such-job")
    assert unknown.value.status == 404 and "not in the serving model" in unknown.value.message
    with pytest.raises(ApiError) as unauthorised:
        ApiClient(base, token="wrong").similar_jobs("g0-j0")
    assert unauthorised.value.status == 401
