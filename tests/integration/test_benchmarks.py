"""Every benchmark runs once at a tiny size and must measure something: a benchmark that silently measures
nothing (no event ingested, no probe answered) would otherwise pass for a fast one. The figures themselves are
not judged here: speed is reported by `make bench`, not asserted in tests."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import SPARK_JARS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(seed dir with a small job_clicks.csv, config file): 80 users in two taste groups over 40 jobs, numeric ids
    as in the seed; the gate is off so that the freshness benchmark always has a model to fold in against."""
    folder = tmp_path_factory.mktemp("bench")
    rng = random.Random(11)
    with (folder / "job_clicks.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "jobId", "Clicks"])
        for u in range(1, 81):
            first = 1 if u <= 40 else 21
            for j in rng.sample(range(first, first + 20), 8):
                w.writerow([u, j, rng.randint(1, 4)])
    with (folder / "jobs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["jobID", "job_category"])
        w.writerows((j, "IT" if j % 2 else "Finance") for j in range(1, 41))
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "als": {"rank": 4, "max_iter": 3},
                "gate": {"enabled": False},
                "spark": {"jars_dir": SPARK_JARS, "driver_memory": "2g", "shuffle_partitions": 2, "log_level": "ERROR"},
            }
        )
    )
    return folder, config


def _bench(config: Path, *args: str, timeout: int = 600) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobrec.streaming.cli",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
            "bench",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # the figures are the JSON object the benchmark prints last: from its last line that opens an object
    lines = done.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.loads("\n".join(lines[start:]))


def test_bench_ingest_ingests_every_event_it_sent(tiny: tuple[Path, Path]) -> None:
    _, config = tiny
    figures = _bench(config, "ingest", "--events", "300")
    # 300 valid events with distinct ids were sent: all of them must be in the events table
    assert figures["events_ingested"] == 300
    assert figures["ingest_events_per_s"] > 0 and figures["reference_spark_read_events_per_s"] > 0
    # the run's split: its start and its micro-batches each took some time, and together no more than the run
    # (the first batch may begin a moment before the start is timed as done: 0.1 s of slack)
    assert figures["ingest_start_seconds"] > 0 and figures["ingest_batches_seconds"] > 0
    assert figures["ingest_start_seconds"] + figures["ingest_batches_seconds"] <= figures["ingest_seconds"] + 0.1
    # the small batch section timed a micro-batch that read something
    assert figures["small_batch_events"] > 0 and figures["small_batch_seconds"] > 0
    # and a running query's whole batch of 1,000 was timed at least once (rounds whose send a trigger split are
    # retried)
    assert figures["running_small_batches"] >= 1 and figures["running_small_batch_seconds"] > 0
    # the fold counted them into interactions: at least one (user, job) pair, at most one per event
    assert 0 < figures["fold_pairs"] <= 300
    # the steady section ran full micro-batches on a running query and read their offsets back
    assert figures["steady_batches"] >= 1 and figures["steady_batch_events"] >= 150
    assert figures["steady_batch_vs_plain_read_time_ratio"] > 0


def test_bench_retrain_trains_on_the_file(tiny: tuple[Path, Path]) -> None:
    seed, config = tiny
    figures = _bench(config, "retrain", "--seed-dir", str(seed))
    assert figures["interactions"] == 640  # 80 users x 8 distinct jobs, all with clicks > 0
    assert figures["retrain_seconds"] > 0 and figures["reference_one_iteration_seconds"] > 0


def test_bench_implicit_compares_both_libraries(tiny: tuple[Path, Path]) -> None:
    seed, config = tiny
    figures = _bench(config, "implicit", "--seed-dir", str(seed))
    assert figures["interactions_train"] > 0
    assert figures["spark_train_seconds"] > 0 and figures["implicit_train_seconds"] > 0


@pytest.mark.parametrize("processes", [1, 2])
def test_bench_freshness_answers_probes(tiny: tuple[Path, Path], processes: int) -> None:
    # 1: the speed layer in the benchmark's process; 2: `jobrec speed --processes 2`, counters summed from both
    seed, config = tiny
    figures = _bench(
        config,
        "freshness",
        "--rate",
        "50",
        "--seconds",
        "3",
        "--processes",
        str(processes),
        "--seed-dir",
        str(seed),
        "--json",
    )
    assert figures["probes_answered"] > 0 and figures["p50_ms"] is not None
    assert figures["speed_processes"] == processes and figures["speed_layer"]["lists"] > 0


def test_bench_api_accepts_and_delivers(tiny: tuple[Path, Path]) -> None:
    _, config = tiny
    figures = _bench(config, "api", "--seconds", "1", "--concurrency", "2", "--batch-size", "5", "--json")
    assert figures["delivery_check"]["missing"] == 0 and figures["delivery_check"]["accepted_checked"] > 0
    assert all(run["events_per_s"] > 0 for run in figures["runs"])


def test_bench_api_similar_answers_from_a_synthetic_model(tiny: tuple[Path, Path]) -> None:
    _, config = tiny
    figures = _bench(
        config,
        "api",
        "--mode",
        "similar",
        "--seconds",
        "1",
        "--concurrency",
        "2",
        "--model-jobs",
        "300",
        "--rank",
        "4",
        "--json",
    )
    for name in ("similar", "anonymous"):
        assert figures[name]["answered"] > 0 and not figures[name]["errors"], figures[name]
        assert figures[name]["p99_vs_healthz_p99_ratio"] > 0


def test_bench_category_cap_measures_every_cap(tiny: tuple[Path, Path]) -> None:
    seed, config = tiny
    done = subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config), "--log-level", "WARNING", "bench"]
        + ["category-cap", "--caps", "0,2", "--seed-dir", str(seed)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["max_per_category"] for r in rows] == [0, 2] and all(r["users"] > 0 for r in rows)
    # two categories and a cap of 2: no list of 10 can have more than 2 of one (so it is short), shares <= 1
    assert all(0 < r["largest_category_share"] <= 1 for r in rows)


def test_bench_engines_measures_both_sides_on_both_files(tiny: tuple[Path, Path]) -> None:
    seed, config = tiny
    figures = _bench(
        config,
        "engines",
        *("--pairs", "20000", "--users", "2000", "--jobs", "500", "--seed-dir", str(seed)),
    )
    # the tiny seed: 80 users x 8 distinct jobs with clicks > 0; the synthetic file: 20,000 distinct pairs of 2,000
    # users, every user with at least 2 pairs, so every user of either file gets a list from each side
    for name, pairs, users in (("seed", 640, 80), ("synthetic", 20_000, 2_000)):
        got = figures[name]
        assert got["pairs"] == pairs
        assert got["lists_published"] == got["offline_users"] == got["reference_users"] == users
        assert got["retrain_publish_ratio"] > 0 and got["offline_ratio"] > 0


def test_bench_speed_start_measures_start_and_memory(tiny: tuple[Path, Path]) -> None:
    _, config = tiny
    figures = _bench(config, "speed-start", "--interactions", "2000", "--json")
    # one start before a model is published, one after; each timed to its ready line, its memory read then
    assert [(r["interactions"], r["model"]) for r in figures["runs"]] == [(2000, "popularity"), (2000, "published")]
    for run in figures["runs"]:
        # 2,000 distinct pairs of 200 users (a tenth of the rows), each user with at least one pair
        assert run["rows"] == run["pairs"] == 2000 and run["users"] == 200
        assert run["start_s"] > 0 and run["reference_scan_s"] > 0
        assert run["python_rss_mb"] > 0 and run["python_peak_mb"] >= run["python_rss_mb"]
        # the speed layer reads its tables with delta-rs: no JVM under it
        assert run["jvm_rss_mb"] == 0 and "java" not in run["children"], run["children"]
