"""`jobrec bench api`: how many click events per second the HTTP ingest API accepts, and at what latency.

It starts the embedded broker in a temporary folder and serves the API exactly as `jobrec api` does, in its own
process (`python -m streaming.cli api`) on a free loopback port. The load comes from this process, not the
API's: `concurrency` threads, each with one keep-alive HTTP/1.1 connection (stdlib http.client, so the client
adds as little as it can), post valid click events back to back, `batch_size` per request (1 = one JSON object,
more = a JSON array). A closed loop (each worker waits for its answer) measures what the API sustains without
piling up a queue. After a warm-up (imports, connections, Kafka metadata) it counts, for `seconds`, the events
the answers say were accepted (status 200 only) and times each request: p50/p95/p99/max, errors by status.
Batch size 1 runs first, then `batch_size` if it is larger: the per-request cost against the per-event cost.

A figure alone says little on a noisy 2-core machine, so each is reported beside a reference from the same run:
- events/s against a KafkaProducer in this process (the API's settings: acks=all, linger 2 ms) sending the same
  events as fast as it can, measured before and after the API runs (their mean is the reference): the ceiling
  of one Python process's Kafka client here, which the API cannot beat.
- p99 latency against GET /healthz through the same client and concurrency: an HTTP round trip through uvicorn
  and FastAPI that touches neither validation nor Kafka.
The CPU each process used (API, load generator, broker) is printed too: on 2 cores they compete.
Finally every accepted event_id is looked up on the clicks topic: an acknowledged event must never be lost.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jobrec.schemas.click_event import EVENT_TYPES
from jobrec.schemas.config import Config, to_data
from jobrec.streaming.producer import encode_event, make_click_event

HOST = "127.0.0.1"
WARMUP_S = 2.0
HEALTHZ_S = 5.0
DIRECT_S = 4.0
DIRECT_TOPIC = "bench-api-direct"
USERS, JOBS = 5000, 9000
TOKEN_ENV = "JOBREC_BENCH_API_TOKEN"


# a request of a worker: (method, path, body or None)
RequestMaker = Callable[[], tuple[str, str, bytes | None]]


def _say(msg: str) -> None:
    # progress on stderr: stdout carries only the result (one line of JSON with as_json)
    print(f"bench api: {msg}", file=sys.stderr, flush=True)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _body_maker(worker: int, batch_size: int, tag: str) -> Callable[[], bytes]:
    """A function returning the next request body of this worker: fresh event_ids, random users and jobs."""
    rng = random.Random(worker)
    n = 0

    def next_body() -> bytes:
        nonlocal n
        events = [
            make_click_event(
                f"u{rng.randrange(USERS)}",
                f"j{rng.randrange(JOBS)}",
                rng.choice(EVENT_TYPES),
                event_id=f"{tag}-{worker}-{i}",
            )
            for i in range(n, n + batch_size)
        ]
        n += batch_size
        return encode_event(events[0]) if batch_size == 1 else b"[" + b",".join(map(encode_event, events)) + b"]"

    return next_body


def _worker(
    port: int,
    headers: dict[str, str],
    path: str,
    next_body: Callable[[], bytes] | None,
    window: tuple[float, float],
    samples: list[tuple[float, float, str, int]],
    ids: list[str],
    next_request: RequestMaker | None = None,
) -> None:
    """POST the bodies `next_body` makes (GET without) back to back until the window ends; one sample per
    request started inside the window: (end time, latency s, status, events accepted). Accepted event_ids of
    every request, warm-up included, go to `ids`. With `next_request` each request is the (method, path, body)
    it makes instead, and no events are counted."""
    start, end = window
    method = "POST" if next_body else "GET"
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        while time.perf_counter() < end:
            if next_request is not None:
                method, path, body = next_request()
            else:
                body = next_body() if next_body else None
            t0 = time.perf_counter()  # the round trip only, not building the body
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                payload, status = resp.read(), str(resp.status)
            except (OSError, http.client.HTTPException) as e:
                payload, status = b"", type(e).__name__
                conn.close()  # the next request opens a new connection
            t1 = time.perf_counter()
            accepted = 0
            if status == "200" and body is not None and next_request is None:
                got = [r["event_id"] for r in json.loads(payload)["results"] if r["status"] == "accepted"]
                ids.extend(got)
                accepted = len(got)
            if t0 >= start:
                samples.append((t1, t1 - t0, status, accepted))
    finally:
        conn.close()


def _drive(
    port: int,
    headers: dict[str, str],
    concurrency: int,
    path: str,
    batch_size: int,
    seconds: float,
    pids: dict[str, int],
    requests: Callable[[int], RequestMaker] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Run `concurrency` workers on `path` (POST with events when batch_size > 0, else GET) for a warm-up and
    `seconds`; returns (figures, accepted event_ids). `requests` (worker -> its request maker) sends other
    requests than `path`'s."""
    start = time.perf_counter() + WARMUP_S
    end = start + seconds
    samples: list[list[tuple[float, float, str, int]]] = [[] for _ in range(concurrency)]
    ids: list[list[str]] = [[] for _ in range(concurrency)]
    makers = [_body_maker(w, batch_size, f"b{batch_size}") if batch_size else None for w in range(concurrency)]
    threads = [
        threading.Thread(
            target=_worker,
            args=(port, headers, path, makers[w], (start, end), samples[w], ids[w], requests(w) if requests else None),
            daemon=True,
        )
        for w in range(concurrency)
    ]
    for t in threads:
        t.start()
    time.sleep(max(0.0, start - time.perf_counter()))
    cpu0 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    while (now := time.perf_counter()) < end:
        time.sleep(min(5.0, end - now))
        done = [s for w in samples for s in w]
        count = sum(s[3] for s in done) if batch_size else len(done)
        unit = "events accepted" if batch_size else "requests"
        _say(f"  {time.perf_counter() - start:4.0f} s: {count / (time.perf_counter() - start):,.0f} {unit}/s so far")
    cpu1 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    for t in threads:
        t.join(120)
    done = [s for w in samples for s in w]
    elapsed = max(s[0] for s in done) - start if done else seconds
    lat = np.array([s[1] for s in done]) * 1000 if done else np.zeros(1)
    accepted = sum(s[3] for s in done)
    used: dict[str, float | None] = {}
    for name in pids:
        before, after = cpu0[name], cpu1[name]
        used[name] = after - before if before is not None and after is not None else None
    figures = {
        "batch_size": batch_size,
        "requests": len(done),
        "requests_per_s": round(len(done) / elapsed, 1),
        "events_accepted": accepted,
        "events_per_s": round(accepted / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "errors": dict(Counter(s[2] for s in done if s[2] != "200")),
        # cores busy over the window (1.0 = one core all the time): on 2 cores the processes compete
        "cpu_cores": {n: round(u / seconds, 2) if u is not None else None for n, u in used.items()},
        # the API's CPU cost of one request: steadier than wall-clock rates on a machine shared with others
        "api_cpu_ms_per_request": round(used["api"] / len(done) * 1000, 2) if used["api"] and done else None,
    }
    return figures, [i for w in ids for i in w]


def _direct_rate(client: dict[str, Any], topic: str, seconds: float) -> float:
    """Events per second a KafkaProducer with the API's settings gets acknowledged, sending as fast as it can."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**client, acks="all", linger_ms=2)
    failed: list[Exception] = []
    rng = random.Random(7)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            e = make_click_event(f"u{rng.randrange(USERS)}", f"j{rng.randrange(JOBS)}", rng.choice(EVENT_TYPES))
            producer.send(topic, key=e["user_id"].encode(), value=encode_event(e)).add_errback(failed.append)
        n += 100
    producer.flush()  # the rate counts acknowledged events, as the API's does
    elapsed = time.perf_counter() - t0
    producer.close()
    if failed:
        raise RuntimeError(f"the direct producer lost {len(failed)} events: {failed[0]}")
    return n / elapsed


def _check_delivered(client: dict[str, Any], topic: str, accepted: set[str]) -> dict[str, int]:
    """Read the whole topic: how many accepted event_ids are missing from it."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**client, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    end = consumer.end_offsets(parts)
    seen: set[str] = set()
    records = 0
    deadline = time.monotonic() + 120
    while any(consumer.position(p) < end[p] for p in parts) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records += len(batch)
            seen.update(json.loads(r.value)["event_id"] for r in batch)
    consumer.close()
    return {"accepted_checked": len(accepted), "missing": len(accepted - seen), "records_on_topic": records}


def _start_api(cfg: Config, folder: Path, port: int) -> subprocess.Popen:
    """`jobrec api` in its own interpreter, with this run's config written to a file it reads."""
    data = to_data(cfg)
    data["api"]["token"] = "${" + TOKEN_ENV + ":-}"  # through the environment, not written to disk
    path = folder / "api.yaml"
    path.write_text(yaml.safe_dump(data))
    log = open(folder / "api.log", "wb")
    cmd = [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(path), "--log-level", "WARNING"]
    return subprocess.Popen(
        [*cmd, "api", "--host", HOST, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, TOKEN_ENV: cfg.api.token},
    )


def _wait_ready(proc: subprocess.Popen, port: int, log_path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass  # not listening yet
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"the API did not get ready within {timeout_s:.0f} s: {log_path.read_text()[-2000:]}")


def run_api_bench(cfg: Config, seconds: float, concurrency: int, batch_size: int, as_json: bool) -> int:
    from jobrec.batch.bench.verdict import measured_something
    from jobrec.batch.connections import ensure_topics, python_client_args
    from jobrec.streaming.bench.stack import temporary_stack
    from jobrec.streaming.local.embedded_kafka import free_port

    _say("starting the Kafka broker")
    proc = None
    with temporary_stack(cfg, "jobrec-bench-api-") as stack:
        cfg, state, folder = stack.cfg, stack.broker, stack.folder
        try:
            ensure_topics(replace(cfg.kafka, clicks_topic=DIRECT_TOPIC), state.bootstrap)
            client = python_client_args(cfg.kafka, state.bootstrap)
            port = free_port()
            proc = _start_api(cfg, folder, port)
            _wait_ready(proc, port, folder / "api.log")
            _say(f"API ready at http://{HOST}:{port} (pid {proc.pid}), broker at {state.bootstrap}")
            headers = {"Content-Type": "application/json"}
            if cfg.api.token:
                headers["Authorization"] = f"Bearer {cfg.api.token}"
            pids = {"api": proc.pid, "load_generator": os.getpid(), "broker": state.pid}

            _say(f"reference: a direct KafkaProducer (acks=all), {DIRECT_S:.0f} s")
            direct = [_direct_rate(client, DIRECT_TOPIC, DIRECT_S)]
            _say(f"reference: GET /healthz, {concurrency} connections, {HEALTHZ_S:.0f} s")
            healthz, _ = _drive(port, headers, concurrency, "/healthz", 0, HEALTHZ_S, pids)
            runs, accepted_ids = [], set()
            for size in sorted({1, batch_size}):
                _say(f"POST /v1/events, {size} event(s) a request, {concurrency} connections, {seconds:.0f} s")
                figures, ids = _drive(port, headers, concurrency, "/v1/events", size, seconds, pids)
                runs.append(figures)
                accepted_ids.update(ids)
            _say(f"reference again: a direct KafkaProducer, {DIRECT_S:.0f} s")
            direct.append(_direct_rate(client, DIRECT_TOPIC, DIRECT_S))
            _say(f"checking that the {len(accepted_ids):,} accepted events are on {cfg.kafka.clicks_topic}")
            delivered = _check_delivered(client, cfg.kafka.clicks_topic, accepted_ids)
        finally:
            if proc is not None:
                proc.terminate()  # uvicorn shuts down on SIGTERM, then the producer closes
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    direct_rate = float(np.mean(direct))
    for r in runs:
        r["vs_direct_producer_events_ratio"] = round(r["events_per_s"] / direct_rate, 3)
        r["p99_vs_healthz_p99_ratio"] = round(r["p99_ms"] / healthz["p99_ms"], 2)
    result = {
        "seconds": seconds,
        "concurrency": concurrency,
        "runs": runs,
        "reference_direct_producer_events_per_s": [round(d, 1) for d in direct],
        "reference_healthz": healthz,
        "delivery_check": delivered,
    }
    if as_json:
        print(json.dumps(result))
    else:
        _print_summary(result)
    if delivered["missing"]:
        return 1  # an acknowledged event lost is a failure, not a figure
    return measured_something("api", {f"events_accepted_batch_{r['batch_size']}": r["events_per_s"] for r in runs})


def _cores(figures: dict[str, Any]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {c}" for name, c in figures["cpu_cores"].items())


def _print_summary(result: dict[str, Any]) -> None:
    runs, healthz, delivered = result["runs"], result["reference_healthz"], result["delivery_check"]
    direct, concurrency, seconds = (
        result["reference_direct_producer_events_per_s"],
        result["concurrency"],
        result["seconds"],
    )
    print(f"\nHTTP ingest API on loopback, {concurrency} keep-alive connections, {seconds:.0f} s each, closed loop")
    for r in runs:
        print(
            f"  batch {r['batch_size']:>4}: {r['events_per_s']:>9,.0f} events/s accepted ({r['requests_per_s']:,.0f} "
            f"requests/s) = {r['vs_direct_producer_events_ratio']:.3f} x the direct producer\n"
            f"              latency ms p50 {r['p50_ms']}  p95 {r['p95_ms']}  p99 {r['p99_ms']}  max {r['max_ms']}"
            f"  (p99 = {r['p99_vs_healthz_p99_ratio']} x /healthz p99)\n"
            f"              errors {r['errors'] or 'none'}; API CPU {r['api_cpu_ms_per_request']} ms a request; "
            f"cores busy: {_cores(r)}"
        )
    print(
        f"  reference, direct KafkaProducer acks=all: {direct[0]:,.0f} events/s before, {direct[1]:,.0f} after\n"
        f"  reference, GET /healthz: {healthz['requests_per_s']:,.0f} requests/s, latency ms p50 "
        f"{healthz['p50_ms']}  p99 {healthz['p99_ms']}  max {healthz['max_ms']}; "
        f"API CPU {healthz['api_cpu_ms_per_request']} ms a request\n"
        f"  delivery: {delivered['accepted_checked']:,} accepted event_ids checked, {delivered['missing']} missing "
        f"from the clicks topic ({delivered['records_on_topic']:,} records on it)"
    )
