"""`jobrec offline` on a file with string ids and another layout: every user gets K unseen jobs, as CSV. Run as a
user of the built wheel would, from a folder outside the checkout, with a relative path in the config resolved
against --data-dir."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.integration.conftest import write_config


@pytest.mark.parametrize("engine", ["implicit", "spark"])
def test_offline_writes_top_k_unseen_for_every_user(tmp_path, installed_elsewhere, engine: str) -> None:
    rng = random.Random(5)
    # two taste groups with string ids: group a clicks jobs a-*, group b clicks jobs b-*
    seen = defaultdict(set)
    with (tmp_path / "in.tsv").open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["member", "posting", "n"])
        for u in range(60):
            group = "a" if u < 30 else "b"
            for j in rng.sample(range(40), 12):
                w.writerow([f"user {group}{u}", f"{group}-job-{j}", rng.randint(1, 5)])
                seen[f"user {group}{u}"].add(f"{group}-job-{j}")
        w.writerow(["user a0", "b-job-1", 0])  # a zero count is no interaction
    config = write_config(
        tmp_path / "cfg",
        "unused:9092",
        "offline",
        als={"rank": 8, "max_iter": 8, "engine": engine, "reg_param": 0.2 if engine == "spark" else 1.0},
        spark={"checkpoint_dir": "ckpt"},
    )
    out = tmp_path / "out" / "recs.csv"
    elsewhere, data_dir = tmp_path / "elsewhere", tmp_path / "data"
    elsewhere.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobrec.streaming.cli",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "offline",
            "--interactions",
            str(tmp_path / "in.tsv"),
            "--out",
            str(out),
            "--k",
            "5",
            "--sep",
            "\t",
            "--user-col",
            "member",
            "--job-col",
            "posting",
            "--count-col",
            "n",
            # the Spark engine's search: one or two Spark fits in three seconds
            *(["--tune", "--budget", "3"] if engine == "spark" else []),
        ],
        cwd=elsewhere,
        env=installed_elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if engine == "spark":
        # the relative spark.checkpoint_dir went under --data-dir, not under the working folder
        assert (data_dir / "ckpt").is_dir() and not (elsewhere / "ckpt").exists()
        assert "| trial | state | confidence |" in done.stdout and "chosen on validation: " in done.stdout
    else:
        # the single-machine engine starts no JVM: nothing of Spark's is left anywhere
        assert not (data_dir / "ckpt").exists() and not (elsewhere / "ckpt").exists()
        assert "validation NDCG@5" in done.stdout
    rows = list(csv.DictReader(out.open()))
    assert set(rows[0]) == {"user_id", "job_id", "rank", "score"}
    by_user = defaultdict(list)
    for r in rows:
        by_user[r["user_id"]].append(r)
    assert set(by_user) == set(seen)
    own_group = 0
    for user, recs in by_user.items():
        jobs = [r["job_id"] for r in sorted(recs, key=lambda r: int(r["rank"]))]
        assert len(jobs) == 5 == len(set(jobs)) and not set(jobs) & seen[user]
        own_group += sum(j.startswith(user.split(" ")[1][0]) for j in jobs)
    # the taste is learnt: most recommendations come from the user's own group (chance would be about half)
    assert own_group / (5 * len(by_user)) > 0.8


def test_decimal_counts_are_kept_as_strength(spark, tmp_path) -> None:
    from jobrec.batch.backfill import CsvLayout
    from jobrec.batch.offline import read_interactions_file
    from jobrec.schemas import tables as t

    # hours played, as people have them: fractions, a trailing .0, a repeated pair, a zero and a word
    rows = [("a", "x", "0.5"), ("a", "y", "3.0"), ("b", "x", "2.25"), ("b", "x", "1"), ("c", "z", "0"), ("c", "y", "?")]
    path = tmp_path / "hours.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("user", "item", "hours"), *rows])
    weights = {"view": 1.0, "click": 2.0, "save": 3.0, "apply": 5.0}
    got = read_interactions_file(spark, str(path), CsvLayout(",", "user", "item", "hours"), weights)
    strengths = {(r[t.USER_ID], r[t.JOB_ID]): r[t.STRENGTH] for r in got.collect()}
    # r = hours x the click weight (2.0), a repeated pair adding up; zero and non-numbers are no interaction
    assert strengths == {("a", "x"): 1.0, ("a", "y"): 6.0, ("b", "x"): 6.5}
    clicks = {(r[t.USER_ID], r[t.JOB_ID]): r[t.count_column("click")] for r in got.collect()}
    assert clicks == {("a", "x"): 1, ("a", "y"): 3, ("b", "x"): 3}  # at least one event for any positive count


def test_a_file_without_a_usable_count_names_the_column(spark, tmp_path) -> None:
    import pytest

    from jobrec.batch.backfill import CsvLayout
    from jobrec.batch.offline import NoUsableRows, read_interactions_file

    path = tmp_path / "words.csv"
    path.write_text("userId,jobId,Clicks\nu1,j1,many\nu2,j2,few\n")
    with pytest.raises(NoUsableRows, match=r"no row has a positive number in column 'Clicks' \(for example 'many'\)"):
        read_interactions_file(spark, str(path), CsvLayout(), {"view": 1.0, "click": 1.0, "save": 1.0, "apply": 1.0})
