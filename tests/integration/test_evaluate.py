"""`jobrec evaluate --tune` as a user runs it, on planted data (20 taste groups, heavy-tailed counts): the report
has the search's trials table and plot, the model beats popularity on the test split, and the search never saw
the test split. Once on the single-machine engine, once on Spark (the search's trials fitted by Spark's ALS)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jobrec.batch.bench.synthetic import planted_interactions, write_counts_csv
from tests.integration.conftest import write_config


@pytest.mark.parametrize("engine", ["implicit", "spark"])
def test_evaluate_tune_writes_a_report_with_the_search(tmp_path, engine: str) -> None:
    data = tmp_path / "planted.csv"
    write_counts_csv(data, planted_interactions(600, 1200, 9000, seed=3))
    config = write_config(tmp_path / "cfg", "unused:9092", "evaluate", als={"engine": engine})
    out = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobrec.streaming.cli",
            "--config",
            str(config),
            "evaluate",
            "--interactions",
            str(data),
            "--out",
            str(out),
            "--tune",
            "--budget",
            "6" if engine == "spark" else "3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    trials = results["tuning"]
    assert trials and all(trial["state"] in ("complete", "pruned", "stopped") for trial in trials)
    assert any(trial["state"] == "complete" for trial in trials)
    assert results["params"]["engine"] == engine
    if engine == "spark":
        assert all(trial["state"] != "pruned" for trial in trials)  # one whole Spark fit per trial
    test10 = results["test"]["10"]
    assert test10["model"]["ndcg"] > 1.5 * test10["popularity"]["ndcg"], test10
    report = (out / "report.md").read_text()
    assert "## Search (validation NDCG@10)" in report and "| trial | state | confidence |" in report
    assert (out / "tuning.png").stat().st_size > 1000
