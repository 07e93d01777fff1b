"""`jobrec bench api --mode similar`: the latency of the API's answers computed from the serving model.

GET /v1/jobs/{job_id}/similar (k = 10, a random job each time) and POST /v1/recommendations (a session of 1 to 10
random jobs) against a synthetic model of `model_jobs` jobs at `rank` (`serving_model.write_bench_model`: 100,000
at 32 by default, the size the API's 1 GiB is planned for), served by `jobrec api` in its own process exactly as in
production: it reads the model from Delta without a JVM. The load is `api.py`'s: keep-alive connections in a
closed loop, a warm-up, then p50/p95/p99 over `seconds`. The reference is the same as for the ingest: GET /healthz
through the same client and concurrency, an HTTP round trip through uvicorn and FastAPI that computes nothing;
each figure is printed beside it as a ratio, since a millisecond alone says little on a busy 2-core machine. The
API's resident memory with the model loaded is printed too. Exits non-zero when either endpoint answered nothing.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from jobrec.schemas.config import Config
from jobrec.streaming.bench.api import HEALTHZ_S, HOST, RequestMaker, _drive, _say, _start_api, _wait_ready
from jobrec.streaming.bench.serving_model import bench_job_ids, write_bench_model

SIMILAR_K = 10
SESSION_JOBS = (1, 10)


def _similar_requests(n_jobs: int) -> Any:
    def for_worker(worker: int) -> RequestMaker:
        rng = random.Random(1000 + worker)
        return lambda: ("GET", f"/v1/jobs/job-{rng.randrange(n_jobs)}/similar?k={SIMILAR_K}", None)

    return for_worker


def _session_requests(n_jobs: int) -> Any:
    def for_worker(worker: int) -> RequestMaker:
        rng = random.Random(2000 + worker)

        def next_request() -> tuple[str, str, bytes | None]:
            jobs = [f"job-{rng.randrange(n_jobs)}" for _ in range(rng.randint(*SESSION_JOBS))]
            return "POST", "/v1/recommendations", json.dumps({"job_ids": jobs}).encode()

        return next_request

    return for_worker


def _rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return round(int(status.split("VmRSS:")[1].split()[0]) / 1024, 1)


def _wait_for_model(port: int, headers: dict[str, str], job: str, timeout_s: float = 180) -> None:
    """Until the API answers a similar-jobs request (it reads the model after it is ready for events)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            conn.request("GET", f"/v1/jobs/{job}/similar", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"the API did not serve the model within {timeout_s:.0f} s")


def run_api_serving_bench(
    cfg: Config, seconds: float, concurrency: int, model_jobs: int, rank: int, as_json: bool
) -> int:
    from jobrec.batch.bench.verdict import measured_something
    from jobrec.streaming.bench.stack import temporary_stack
    from jobrec.streaming.local.embedded_kafka import free_port

    _say("starting the Kafka broker")
    proc = None
    with temporary_stack(cfg, "jobrec-bench-api-similar-") as stack:
        cfg, state, folder = stack.cfg, stack.broker, stack.folder
        try:
            started = time.perf_counter()
            write_bench_model(Path(cfg.storage.tables_root), model_jobs, rank, list(cfg.catalog.categories))
            took = time.perf_counter() - started
            _say(f"a synthetic model of {model_jobs:,} jobs at rank {rank} in Delta ({took:.1f} s)")
            port = free_port()
            proc = _start_api(cfg, folder, port)
            _wait_ready(proc, port, folder / "api.log")
            headers = {"Content-Type": "application/json"}
            if cfg.api.token:
                headers["Authorization"] = f"Bearer {cfg.api.token}"
            started = time.perf_counter()
            _wait_for_model(port, headers, bench_job_ids(1)[0])
            loaded_s = time.perf_counter() - started
            _say(f"API at http://{HOST}:{port} (pid {proc.pid}) serves the model ({loaded_s:.1f} s after ready)")
            pids = {"api": proc.pid, "load_generator": os.getpid(), "broker": state.pid}
            _say(f"reference: GET /healthz, {concurrency} connections, {HEALTHZ_S:.0f} s")
            healthz, _ = _drive(port, headers, concurrency, "/healthz", 0, HEALTHZ_S, pids)
            runs = {}
            for name, requests in (
                ("similar", _similar_requests(model_jobs)),
                ("anonymous", _session_requests(model_jobs)),
            ):
                _say(f"{name}, {concurrency} connections, {seconds:.0f} s")
                runs[name], _ = _drive(port, headers, concurrency, name, 0, seconds, pids, requests=requests)
            rss = _rss_mb(proc.pid)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    for r in runs.values():
        r["answered"] = r["requests"] - sum(r["errors"].values())
        r["p50_vs_healthz_p50_ratio"] = round(r["p50_ms"] / healthz["p50_ms"], 2)
        r["p99_vs_healthz_p99_ratio"] = round(r["p99_ms"] / healthz["p99_ms"], 2)
        del r["batch_size"], r["events_accepted"], r["events_per_s"]
    result = {
        "seconds": seconds,
        "concurrency": concurrency,
        "model_jobs": model_jobs,
        "rank": rank,
        "model_loaded_s": round(loaded_s, 2),
        "api_rss_mb": rss,
        "similar": runs["similar"],
        "anonymous": runs["anonymous"],
        "reference_healthz": healthz,
    }
    if as_json:
        print(json.dumps(result))
    else:
        _print_summary(result)
    return measured_something(
        "api --mode similar", {f"{name}_answered": runs[name]["answered"] for name in ("similar", "anonymous")}
    )


def _print_summary(result: dict[str, Any]) -> None:
    healthz = result["reference_healthz"]
    print(
        f"\nHTTP API answers from the serving model ({result['model_jobs']:,} jobs, rank {result['rank']}) on "
        f"loopback, {result['concurrency']} keep-alive connections, {result['seconds']:.0f} s each, closed loop"
    )
    for name, what in (
        ("similar", f"GET /v1/jobs/ID/similar?k={SIMILAR_K}"),
        ("anonymous", "POST /v1/recommendations (1-10 jobs)"),
    ):
        r = result[name]
        print(
            f"  {what}: {r['requests_per_s']:,.0f} requests/s, {r['answered']:,} answered, errors "
            f"{r['errors'] or 'none'}\n"
            f"      latency ms p50 {r['p50_ms']}  p95 {r['p95_ms']}  p99 {r['p99_ms']}  max {r['max_ms']}"
            f"  (p50 = {r['p50_vs_healthz_p50_ratio']} x, p99 = {r['p99_vs_healthz_p99_ratio']} x /healthz's)\n"
            f"      API CPU {r['api_cpu_ms_per_request']} ms a request"
        )
    print(
        f"  reference, GET /healthz: {healthz['requests_per_s']:,.0f} requests/s, latency ms p50 {healthz['p50_ms']}"
        f"  p99 {healthz['p99_ms']}  max {healthz['max_ms']}\n"
        f"  the API's resident memory with the model loaded: {result['api_rss_mb']} MB; model served "
        f"{result['model_loaded_s']} s after /readyz"
    )
