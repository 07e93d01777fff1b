"""What a newcomer sees at the end of each command: one last line that says what happened and what to do next,
and an exit code that scripts can act on (README, "Commands": 0 done, 1 failed, 2 bad config, 3 nothing there,
4 model rejected). Run through the real CLI on the real broker, Spark and Delta."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from jobrec.batch.connections import ensure_topics
from jobrec.schemas.config import load_config
from jobrec.streaming.process_metrics import RETRAIN_JOB, RETRAIN_OUTCOMES
from tests.integration.conftest import REPO, pushed_samples, unique_name, write_config


def jobrec(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), "--log-level", "WARNING", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def write_clicks(path: Path, rows: list[tuple[int, int, int]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "jobId", "Clicks"])
        w.writerows(rows)
    return path


@pytest.fixture
def pushing(tmp_path: Path, broker, pushgateway: str, request: pytest.FixtureRequest):
    """(config, its file) whose retrain pushes its metrics to the real pushgateway, emptied of earlier pushes."""
    config = write_config(tmp_path, broker.bootstrap, unique_name(request), metrics={"pushgateway_url": pushgateway})
    cfg = load_config(config, env={})
    ensure_topics(cfg.kafka, broker.bootstrap)
    delete = urllib.request.Request(f"{pushgateway}/metrics/job/{RETRAIN_JOB}", method="DELETE")
    urllib.request.urlopen(delete, timeout=5).close()
    return cfg, config


def outcome_pushed(pushgateway: str) -> str:
    """The one outcome the last run pushed as 1 (every other outcome pushed as 0)."""
    samples = pushed_samples(pushgateway, RETRAIN_JOB)
    outcomes = {dict(labels)["outcome"]: v for (name, labels), v in samples.items() if name == "jobrec_retrain_outcome"}
    assert set(outcomes) == set(RETRAIN_OUTCOMES) and sorted(outcomes.values()) == [0, 0, 0, 0, 1], outcomes
    assert samples[("jobrec_retrain_duration_seconds", ())] > 0
    return next(o for o, v in outcomes.items() if v == 1)


def test_a_rejected_first_model_says_rejected_and_why_and_exits_4(pushing, pushgateway: str, tmp_path: Path) -> None:
    cfg, config = pushing
    # every user clicks a prefix of one popularity order (jobs 1, 2, 3, ... in that order of popularity): any
    # held-out job of a user is more popular than every job beyond the user's prefix, so popularity ranks the
    # held-out jobs first (validation NDCG@10 exactly 1.0), no model can beat it, and the gate must reject it.
    # (Clicks drawn at random from a popularity skew were not enough: a tuned model tied popularity and passed by a
    # hair, 0.4197 against 0.4189.)
    rows = [(user, job, 1) for user in range(1, 301) for job in range(1, 4 + user % 12)]
    csv_path = write_clicks(tmp_path / "noise.csv", rows)

    done = jobrec(config, "load", str(csv_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert last_line(done.stdout).endswith("`jobrec retrain` trains on them")

    done = jobrec(config, "retrain")
    assert done.returncode == 4, done.stdout + done.stderr[-2000:]
    line = last_line(done.stdout)
    assert " rejected by the quality gate: validation NDCG@10 " in line and "does not beat popularity" in line
    assert "`jobrec status`" in line
    # and pushed so: popularity's validation NDCG is exactly 1 by construction; nothing published
    assert outcome_pushed(pushgateway) == "rejected"
    samples = pushed_samples(pushgateway, RETRAIN_JOB)
    assert samples[("jobrec_retrain_validation_ndcg", (("model", "popularity"),))] == 1.0
    # (a model can tie it at best: not beating popularity is what the gate rejects)
    assert samples[("jobrec_retrain_validation_ndcg", (("model", "candidate"),))] <= 1.0
    # a rejected candidate is not refit: it was trained on the pairs left after the validation holdout
    assert 0.7 * len(rows) < samples[("jobrec_retrain_data", (("what", "interactions"),))] < len(rows)
    assert not [name for name, _ in samples if name == "jobrec_retrain_last_published_timestamp_seconds"]

    # no model passed, yet something is served: the retrain published popularity lists (source fallback) to every
    # known user and new users, and `jobrec publish` does the same until a model passes
    topic = cfg.kafka.recommendations_topic
    done = jobrec(config, "publish")
    assert done.returncode == 0, done.stderr[-2000:]
    assert last_line(done.stdout).startswith(f"published 300 popularity lists (source fallback) to {topic}: no model")
    done = jobrec(config, "show", "--limit", "1")
    assert done.returncode == 0
    assert last_line(done.stdout) == f"300 users have a list on {topic}, and the list for new users (key *)"


def test_a_published_model_ends_with_where_its_lists_are(pushing, pushgateway: str, tmp_path: Path) -> None:
    cfg, config = pushing
    # two taste groups: half the users click only jobs 1-20, the others only 21-40; easy to beat popularity
    rng = random.Random(4)
    rows = [(u, j, 1) for u in range(1, 121) for j in rng.sample(range(1, 21) if u <= 60 else range(21, 41), 8)]
    assert jobrec(config, "load", str(write_clicks(tmp_path / "groups.csv", rows))).returncode == 0

    done = jobrec(config, "retrain")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    line = last_line(done.stdout)
    assert " published (120 users x 40 jobs, 960 interactions): validation NDCG@10 " in line
    assert f"its lists are on {cfg.kafka.recommendations_topic}" in line
    assert outcome_pushed(pushgateway) == "published"
    samples = pushed_samples(pushgateway, RETRAIN_JOB)
    data = {dict(labels)["what"]: v for (name, labels), v in samples.items() if name == "jobrec_retrain_data"}
    assert data == {"users": 120, "jobs": 40, "interactions": 960}
    ndcg = {
        dict(labels)["model"]: v for (name, labels), v in samples.items() if name == "jobrec_retrain_validation_ndcg"
    }
    assert ndcg["candidate"] > ndcg["popularity"]
    assert (
        samples[("jobrec_retrain_last_published_timestamp_seconds", ())]
        == samples[("jobrec_retrain_last_run_timestamp_seconds", ())]
    )

    done = jobrec(config, "show", "--limit", "1")
    assert done.returncode == 0
    assert (
        last_line(done.stdout) == f"120 users have a list on {cfg.kafka.recommendations_topic}, and the list for "
        "new users (key *)"
    )


def test_retrain_without_enough_data_is_skipped_with_exit_0_saying_why(pushing, pushgateway: str) -> None:
    # a fresh installation's scheduled retrain (a CronJob) has nothing to train on yet: that must not fail the Job
    _, config = pushing
    done = jobrec(config, "retrain")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    line = last_line(done.stdout)
    assert line.startswith("retrain skipped, nothing trained or published: not enough data to train: 0 interactions")
    assert "Traceback" not in done.stderr
    assert outcome_pushed(pushgateway) == "skipped"
    assert not [
        name for name, _ in pushed_samples(pushgateway, RETRAIN_JOB) if name == "jobrec_retrain_validation_ndcg"
    ]


def test_kafka_status_without_a_broker_exits_3(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"embedded_kafka:\n  dir: {tmp_path / 'kafka'}\n")
    done = jobrec(config, "kafka", "status")
    assert done.returncode == 3 and last_line(done.stdout) == "not running"
