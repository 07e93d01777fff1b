"""`jobrec bench speed-start`: how long one `jobrec speed` takes from launch to ready, and its resident memory then,
for synthetic interactions tables of growing size.

For each size N, on a throwaway stack (a real broker, tables in a temporary folder): Spark writes an interactions
table of exactly N distinct (user, job) pairs in the ingest's schema (N/10 users with heavy-tailed activity, each
user's jobs a contiguous run from a start skewed towards popular jobs, so a pair never repeats) and a catalog of
JOBS open jobs. `jobrec speed` then starts in its own interpreter, twice: before any model is published (it
serves the popularity model) and after a synthetic model (random job factors, published through the models table
as a retrain records one) is. Each start is timed from launch to the instance's ready log line (`READY`), which
also says how long its histories took to load; at that moment the resident memory (VmRSS) and its peak so far
(VmHWM) are read from /proc for the Python process and for any child processes (a JVM: the speed layer used to
start Spark to read its tables, and now reads them with delta-rs, so the JVM column should read 0), then it is
stopped with SIGTERM. The reference, measured in the same run on the same table, is a Spark scan in this process
of the four columns the speed layer loads: start time over that time is what to compare across noisy runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from jobrec.schemas.config import Config, to_data

log = logging.getLogger(__name__)

# the log line of a speed instance that follows its topics with its histories loaded: "speed layer ready: ..."
# before the speed layer joined a consumer group, "speed layer owns clicks partitions ...: loaded ..." since
READY = ("speed layer ready", "speed layer owns clicks partitions")
JOBS = 30_000
USERS_PER_ROW = 0.1
MB = 1024.0  # /proc reports kB


def _read_status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB ({} if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (of all its threads: the JVM is started from whichever thread asked)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _descendants(pid: int) -> list[int]:
    found, todo = [], _children(pid)
    while todo:
        found.append(todo.pop())
        todo += _children(found[-1])
    return found


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def read_memory(pid: int) -> dict[str, Any]:
    """Resident and peak memory (MB) of the process, of its JVM (descendants named java) and of any other
    descendants (a shell Spark runs, Python workers)."""
    own = _read_status_kb(pid)
    descendants = [(child, _name(child), _read_status_kb(child)) for child in _descendants(pid)]
    jvm = [status for _, name, status in descendants if name == "java"]
    other = [status for _, name, status in descendants if name != "java"]
    return {
        "python_rss_mb": round(own.get("VmRSS", 0) / MB, 1),
        "python_peak_mb": round(own.get("VmHWM", 0) / MB, 1),
        "jvm_rss_mb": round(sum(s.get("VmRSS", 0) for s in jvm) / MB, 1),
        "jvm_peak_mb": round(sum(s.get("VmHWM", 0) for s in jvm) / MB, 1),
        "other_children_rss_mb": round(sum(s.get("VmRSS", 0) for s in other) / MB, 1),
        "children": [name for _, name, _ in descendants],
    }


def write_synthetic_tables(spark: Any, cfg: Config, n: int) -> dict[str, Any]:
    """The interactions table with exactly `n` distinct pairs, as the ingest writes them (times set), and the jobs
    table with JOBS open jobs as a jobs.csv load leaves them; returns its rows, distinct pairs, users and jobs."""
    from pyspark.sql import functions as F

    from jobrec.batch.delta_tables import ensure_delta_table
    from jobrec.batch.interactions_table import strength_expr
    from jobrec.schemas import tables as t

    users = max(1, int(n * USERS_PER_ROW))
    # row i belongs to user floor(users * (i/n)^2): users are contiguous runs of rows, the first ones long (user 0
    # has about n / sqrt(users) rows, the last about 5). A user's jobs are (i + offset) mod JOBS over that run, so
    # they are distinct as long as no run is longer than JOBS.
    if n / users**0.5 + 2 > JOBS:
        raise ValueError(f"{n} interactions: the most active user would need more than {JOBS} distinct jobs")
    user = F.floor(F.lit(users) * F.pow(F.col("id") / F.lit(n), 2)).cast("long")
    run_start = F.ceil(F.lit(n) * F.sqrt(user / F.lit(users))).cast("long")
    # where a user's run of jobs begins: the cube of a uniform draw per user, so low job numbers are popular
    uniform = F.pmod(F.xxhash64(user), F.lit(1_000_003)) / F.lit(1_000_003.0)
    first_job = F.floor(F.lit(JOBS) * F.pow(uniform, 3)).cast("long")
    job = F.pmod(F.col("id") - run_start + first_job, F.lit(JOBS))

    def draw(salt: int, modulo: int) -> Any:
        return F.pmod(F.xxhash64(F.col("id"), F.lit(salt)), F.lit(modulo))

    now = int(time.time())
    last_s = F.lit(now) - draw(5, 90 * 86_400)
    counts = {"view": 1 + draw(1, 5), "click": draw(2, 3), "save": draw(3, 10) == 0, "apply": draw(4, 20) == 0}
    # the counts first, then the strength from them as the ingest computes it, in the table's column order
    rows = (
        spark.range(0, n, numPartitions=max(1, n // 1_000_000))
        .select(
            F.concat(F.lit("u"), user.cast("string")).alias(t.USER_ID),
            F.concat(F.lit("j"), job.cast("string")).alias(t.JOB_ID),
            *(counts[e].cast("long").alias(t.count_column(e)) for e in counts),
            F.timestamp_seconds(last_s - draw(6, 30 * 86_400)).alias(t.FIRST_AT),
            F.timestamp_seconds(last_s).alias(t.LAST_AT),
        )
        .select(
            t.USER_ID,
            t.JOB_ID,
            *t.COUNT_COLUMNS,
            strength_expr(cfg.ingest.weights).alias(t.STRENGTH),
            t.FIRST_AT,
            t.LAST_AT,
        )
    )
    path = ensure_delta_table(spark, cfg.storage.tables_root, t.INTERACTIONS)
    rows.write.format("delta").mode("append").save(path)
    categories = cfg.catalog.categories
    category = F.element_at(F.array(*map(F.lit, categories)), (F.col("id") % len(categories) + 1).cast("int"))
    none = F.lit(None).cast("timestamp")
    spark.range(JOBS).select(
        F.concat(F.lit("j"), F.col("id").cast("string")).alias(t.JOB_ID),
        category.alias(t.CATEGORY),
        category.alias(t.RAW_CATEGORY),
        F.lit(t.JOB_OPEN).alias(t.STATUS),
        *(none.alias(c) for c in (t.POSTED_AT, t.CLOSED_AT, t.EXPIRES_AT, t.UPDATED_AT, t.CATEGORY_AT)),
        F.lit(None).cast("string").alias(t.EVENT_ID),
    ).write.format("delta").mode("append").save(ensure_delta_table(spark, cfg.storage.tables_root, t.JOBS))
    table = spark.read.format("delta").load(path)
    check = table.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct(t.USER_ID).alias("users"),
        F.countDistinct(t.JOB_ID).alias("jobs"),
    ).collect()[0]
    pairs = table.select(t.USER_ID, t.JOB_ID).distinct().count()
    if check["rows"] != n or pairs != n:
        raise RuntimeError(f"the synthetic table has {check['rows']} rows and {pairs} distinct pairs, not {n}")
    return {
        "rows": int(check["rows"]),
        "pairs": pairs,
        "users": int(check["users"]),
        "jobs_touched": int(check["jobs"]),
    }


def publish_synthetic_model(spark: Any, cfg: Config, n: int, users: int) -> str:
    """A published model with random factors for the JOBS jobs, recorded as a retrain records one (the speed
    layer reads only job factors: the user factors table gets none). Returns its version."""
    from pyspark.sql import functions as F

    from jobrec.batch.processes import als_params
    from jobrec.batch.train import TrainedModel, new_model_version, write_model
    from jobrec.schemas import tables as t

    version, rank = new_model_version(), cfg.als.rank
    job_factors = spark.range(JOBS).select(
        F.lit(version).alias(t.MODEL_VERSION),
        F.concat(F.lit("j"), F.col("id").cast("string")).alias(t.JOB_ID),
        F.array(*(F.randn(seed=k).cast("float") for k in range(rank))).alias(t.FEATURES),
    )
    user_factors = spark.createDataFrame([], t.USER_FACTORS_DDL)
    model = TrainedModel(version, als_params(cfg), 0, users, JOBS, n, user_factors, job_factors)
    write_model(spark, cfg.storage.tables_root, model, t.STATUS_PUBLISHED)
    return version


def reference_scan_seconds(spark: Any, tables_root: str) -> float:
    """Seconds for Spark in this process to read every row of the four columns the speed layer loads."""
    from pyspark.sql import functions as F

    from jobrec.batch.delta_tables import table_path
    from jobrec.schemas import tables as t

    table = spark.read.format("delta").load(table_path(tables_root, t.INTERACTIONS))
    started = time.perf_counter()
    table.agg(
        F.sum(F.length(t.USER_ID) + F.length(t.JOB_ID)),
        F.sum(t.STRENGTH),
        F.max(F.unix_micros(t.LAST_AT)),
    ).collect()
    return time.perf_counter() - started


def _ready_line(text: str) -> str | None:
    """The first line of the log that says the instance is ready (its message, without time and logger)."""
    for line in text.splitlines():
        if any(marker in line for marker in READY):
            return line.split(": ", 1)[-1]
    return None


def measure_start(config_path: Path, log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Launch `jobrec speed` with the config, wait for its ready line, read its memory, stop it with SIGTERM.
    {"start_s", "ready_line", memory...} or {"error", "log_tail"}."""
    cmd = [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(config_path), "--log-level", "INFO", "speed"]
    result: dict[str, Any] = {}
    with log_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        with log_path.open("r", errors="replace") as reading:
            text = ""
            while "start_s" not in result and "error" not in result:
                text += reading.read()
                if (line := _ready_line(text)) is not None:
                    result["start_s"] = round(time.perf_counter() - started, 3)
                    result |= read_memory(proc.pid) | {"ready_line": line}
                    # the speed layer's own account of the histories' load, where its line gives one
                    if loaded := re.search(r"loaded .* in ([0-9.]+) s", line):
                        result["histories_load_s"] = float(loaded.group(1))
                elif proc.poll() is not None:
                    result["error"] = f"jobrec speed exited with {proc.returncode} before it was ready"
                elif time.perf_counter() - started > timeout_s:
                    result["error"] = f"jobrec speed was not ready after {timeout_s:.0f} s"
                else:
                    time.sleep(0.05)
    finally:
        _stop(proc, result)
    if "error" in result:
        result["log_tail"] = log_path.read_text(errors="replace")[-3000:]
    else:
        result["stop_exit_code"] = proc.returncode
    return result


def _stop(proc: subprocess.Popen, result: dict[str, Any]) -> None:
    """SIGTERM, as a deployment stops it; if it has not ended 120 s later, SIGKILL to it and its JVM."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        for pid in (proc.pid, *_descendants(proc.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(30)
        result.setdefault("error", "jobrec speed did not stop within 120 s of SIGTERM")


def _speed_config(cfg: Config, folder: Path) -> Path:
    """This stack's config as a file for `jobrec speed`; no secret written (the stack's broker needs none)."""
    data = to_data(replace(cfg, api=replace(cfg.api, token="")))
    path = folder / "speed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def measure_size(spark: Any, cfg: Config, n: int) -> list[dict[str, Any]]:
    """Both starts (popularity model, then a published one) on a fresh stack with `n` interactions."""
    from jobrec.streaming.bench.stack import temporary_stack

    with temporary_stack(cfg, "jobrec-speed-start-") as stack:
        clock = time.perf_counter()
        table = write_synthetic_tables(spark, stack.cfg, n)
        generate_s = time.perf_counter() - clock
        reference_s = reference_scan_seconds(spark, stack.cfg.storage.tables_root)
        log.info("%d interactions written in %.1f s; reference scan %.2f s", n, generate_s, reference_s)
        config_path = _speed_config(stack.cfg, stack.folder)
        timeout_s = 180 + 90 * n / 1e6
        runs = []
        for model in ("popularity", "published"):
            if model == "published":
                publish_synthetic_model(spark, stack.cfg, n, table["users"])
            got = measure_start(config_path, stack.folder / f"speed-{model}.log", timeout_s)
            run = {"interactions": n, "model": model, **table, "generate_s": round(generate_s, 1)}
            run |= {"reference_scan_s": round(reference_s, 3), **got}
            if "start_s" in got:
                run["start_over_reference"] = round(got["start_s"] / reference_s, 2)
                run["total_rss_mb"] = round(got["python_rss_mb"] + got["jvm_rss_mb"] + got["other_children_rss_mb"], 1)
                run["python_mb_per_million"] = round(got["python_rss_mb"] / (n / 1e6), 1)
            else:
                print(f"jobrec bench speed-start: {n} interactions, {model}: {got['error']}", file=sys.stderr)
                print(got["log_tail"], file=sys.stderr)
            log.info("%s", {k: v for k, v in run.items() if k != "log_tail"})
            runs.append(run)
        return runs


def growth(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: the largest measured size's figures over the smallest's."""
    out: dict[str, Any] = {}
    for model in ("popularity", "published"):
        done = sorted((r for r in runs if r["model"] == model and "start_s" in r), key=lambda r: r["interactions"])
        if len(done) < 2 or done[0]["interactions"] == done[-1]["interactions"]:
            continue
        small, large = done[0], done[-1]
        keys = ("interactions", "start_s", "start_over_reference", "python_rss_mb", "jvm_rss_mb", "total_rss_mb")
        out[model] = {f"{k}_ratio": round(large[k] / small[k], 2) if small[k] else None for k in keys}
        out[model]["of"] = f"{large['interactions']:,} vs {small['interactions']:,}"
        added = (large["interactions"] - small["interactions"]) / 1e6
        out[model]["python_mb_per_million_added"] = round((large["python_rss_mb"] - small["python_rss_mb"]) / added, 1)
        out[model]["jvm_mb_per_million_added"] = round((large["jvm_rss_mb"] - small["jvm_rss_mb"]) / added, 1)
    return out


def format_table(runs: list[dict[str, Any]], ratios: dict[str, Any]) -> str:
    head = (
        f"{'interactions':>12} {'model':<10} {'users':>9} {'start s':>8} {'load s':>6} {'ref s':>6} {'start/ref':>9} "
        f"{'Python MB':>9} {'JVM MB':>7} {'total MB':>8} {'Py peak':>8} {'JVM peak':>8} {'Py MB/M':>8}"
    )
    lines = [head]
    for r in runs:
        if "start_s" not in r:
            lines.append(f"{r['interactions']:>12,} {r['model']:<10} not measured: {r['error']}")
            continue
        lines.append(
            f"{r['interactions']:>12,} {r['model']:<10} {r['users']:>9,} {r['start_s']:>8.1f} "
            f"{r.get('histories_load_s', float('nan')):>6.1f} "
            f"{r['reference_scan_s']:>6.2f} {r['start_over_reference']:>9.1f} {r['python_rss_mb']:>9.0f} "
            f"{r['jvm_rss_mb']:>7.0f} {r['total_rss_mb']:>8.0f} {r['python_peak_mb']:>8.0f} "
            f"{r['jvm_peak_mb']:>8.0f} {r['python_mb_per_million']:>8.0f}"
        )
    for model, g in ratios.items():
        lines.append(
            f"growth, {model}, {g['of']}: interactions x{g['interactions_ratio']}, start x{g['start_s_ratio']} "
            f"(over the reference x{g['start_over_reference_ratio']}), Python RSS x{g['python_rss_mb_ratio']}, "
            f"JVM RSS x{g['jvm_rss_mb_ratio']}, total x{g['total_rss_mb_ratio']}; per million interactions added: "
            f"Python +{g['python_mb_per_million_added']:.0f} MB, JVM +{g['jvm_mb_per_million_added']:.0f} MB"
        )
    return "\n".join(lines)


def run_speed_start_bench(cfg: Config, sizes: list[int], json_out: bool) -> int:
    """`jobrec bench speed-start`: a table (or one JSON line) of start time and memory per size and model, and
    the growth from the smallest size to the largest. Exits 1 when a start was not measured."""
    from jobrec.batch.bench.verdict import measured_something
    from jobrec.batch.processes import spark_session

    if not sizes or min(sizes) < 1:
        print("jobrec bench speed-start: --interactions needs sizes of at least 1", file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    # this process's session writes every size's tables; its checkpoints go in a folder of its own too
    with tempfile.TemporaryDirectory(prefix="jobrec-speed-start-spark-") as scratch:
        own = replace(cfg, spark=replace(cfg.spark, checkpoint_dir=scratch))
        with spark_session(own, "bench-speed-start") as spark:
            for n in sizes:
                runs += measure_size(spark, cfg, n)
    ratios = growth(runs)
    if json_out:
        shown = [{k: v for k, v in r.items() if k != "log_tail"} for r in runs]
        print(json.dumps({"jobs": JOBS, "runs": shown, "growth": ratios}))
    else:
        print(format_table(runs, ratios))
    rests_on: dict[str, float | int | None] = {}
    for r in runs:
        name = f"{r['interactions']}.{r['model']}"
        rests_on |= {f"{name}.start_s": r.get("start_s"), f"{name}.python_rss_mb": r.get("python_rss_mb")}
    return measured_something("speed-start", rests_on)
