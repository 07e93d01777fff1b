"""The HTTP ingest and read API: services post click events and read the newest list of a user.

- POST /v1/events: one event (a JSON object), a batch (a JSON array) or NDJSON. Each event is checked against
  click event v1; the answer says, per event, accepted or why not (the field and the reason). Accepted events
  are acknowledged only after every Kafka broker in sync has them (acks=all); while Kafka is unreachable the API
  answers 503 and acknowledges nothing, so a client retries (safely: the pipeline drops repeated event_ids).
  400 when no event is acceptable, 413 over api.max_body_bytes or api.max_batch_events.
- POST /v1/jobs/events: job events (job event v1: posted, closed) to the jobs topic, the same way.
- GET /v1/recommendations/{user_id}: the newest list from the compacted recommendations topic, followed by a
  background consumer; a user without a list gets the list for new users (key '*') once one was published.
- /healthz (the process lives), /readyz (Kafka answers), /metrics (Prometheus text format).
Optional bearer-token auth (api.token, from a Secret).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool

from jobrec.schemas.click_event import EventLimits, Rejection, parse_click_event
from jobrec.schemas.job_event import parse_job_event
from jobrec.schemas.recommendation import list_for_new_user

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiSettings:
    clicks_topic: str
    recommendations_topic: str
    jobs_topic: str
    max_body_bytes: int
    max_batch_events: int
    token: str
    kafka_timeout_seconds: float
    limits: EventLimits


class LatestLists:
    """user_id -> the newest recommendation message, kept up to date from the compacted topic in a thread."""

    def __init__(self) -> None:
        self.lists: dict[str, dict] = {}
        self.ready = threading.Event()
        self._stop = threading.Event()

    def follow(self, consumer_factory: Callable[[], Any]) -> threading.Thread:
        """Follow with the `streaming.clients.RecommendationsConsumer` that `consumer_factory` opens."""

        def run() -> None:
            consumer = consumer_factory()
            self.lists = consumer.lists  # the consumer updates this dict in place
            try:
                while not self._stop.is_set():
                    consumer.poll(timeout_ms=200)
                    if not self.ready.is_set() and consumer.caught_up():
                        self.ready.set()
            except Exception:  # noqa: BLE001 - the read API says 503 until it is back
                log.exception("following the recommendations topic failed")
            finally:
                consumer.close()

        thread = threading.Thread(target=run, name="recommendations-follower", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def split_body(body: bytes, content_type: str) -> list[bytes]:
    """The raw events of a request body: a JSON array's elements, NDJSON lines, or the body as one event (also a
    body that starts like a JSON array but does not parse: it is then one bad event, rejected with its reason)."""
    text = body.lstrip()
    if "ndjson" in content_type or "jsonlines" in content_type:
        return [line for line in body.split(b"\n") if line.strip()]
    if text.startswith(b"["):
        try:
            items = json.loads(body)
        except ValueError:
            return [body]
        return [json.dumps(item).encode() for item in items]
    return [body]


def create_app(settings: ApiSettings, producer: Any, lists: LatestLists, kafka_ready: Callable[[], bool]) -> FastAPI:
    app = FastAPI(title="jobrec API", version="1")
    registry = CollectorRegistry()
    # kind: click (POST /v1/events) or job (POST /v1/jobs/events)
    accepted = Counter("jobrec_events_accepted_total", "events acknowledged by Kafka", ["kind"], registry=registry)
    rejected = Counter("jobrec_events_rejected_total", "events refused", ["kind", "reason"], registry=registry)
    unavailable = Counter("jobrec_kafka_unavailable_total", "requests answered 503", registry=registry)
    kafka_latency = Histogram(
        "jobrec_kafka_ack_seconds", "time to Kafka's acknowledgement of a request's events", registry=registry
    )

    def authorised(request: Request) -> bool:
        return not settings.token or request.headers.get("authorization") == f"Bearer {settings.token}"

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if request.url.path.startswith("/v1/") and not authorised(request):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        return await call_next(request)

    @app.post("/v1/events")
    async def post_events(request: Request) -> Response:
        """Click events (schemas/click_event.v1.json) to the clicks topic, keyed by user_id."""
        return await produce(request, parse_click_event, settings.clicks_topic, lambda e: e.user_id, "click")

    @app.post("/v1/jobs/events")
    async def post_job_events(request: Request) -> Response:
        """Job events (schemas/job_event.v1.json: posted, closed) to the jobs topic, keyed by job_id."""
        return await produce(request, parse_job_event, settings.jobs_topic, lambda e: e.job_id, "job")

    async def produce(
        request: Request, parse: Callable[..., Any], topic: str, key_of: Callable[[Any], str], kind: str
    ) -> Response:
        """Validate every event of the body, send the good ones, answer per event once Kafka acknowledged them."""
        # read at most max_body_bytes; drain (a bounded amount of) the rest so the client hears the 413
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size <= settings.max_body_bytes:
                chunks.append(chunk)
            elif size > 16 * settings.max_body_bytes:
                break
        if size > settings.max_body_bytes:
            return JSONResponse({"error": f"body over {settings.max_body_bytes} bytes"}, status_code=413)
        body = b"".join(chunks)
        raws = split_body(body, request.headers.get("content-type", ""))
        if len(raws) > settings.max_batch_events:
            return JSONResponse({"error": f"more than {settings.max_batch_events} events"}, status_code=413)
        now_ms = int(time.time() * 1000)
        results: list[dict[str, Any]] = []
        good: list[tuple[int, Any, bytes]] = []
        for i, raw in enumerate(raws):
            verdict = parse(raw, now_ms, settings.limits)
            if not isinstance(verdict, Rejection):
                good.append((i, verdict, raw))
                results.append({"index": i, "status": "accepted", "event_id": verdict.event_id})
            else:
                rejected.labels(kind, verdict.code).inc()
                results.append({"index": i, "status": "rejected", "field": verdict.field, "reason": verdict.reason})
        if good:
            started = time.monotonic()

            def send_and_wait() -> None:
                futures = [producer.send(topic, key=key_of(e).encode(), value=raw) for _, e, raw in good]
                # wait for this request's records only: a flush() would also wait for every other request's,
                # serialising concurrent requests behind each other
                for f in futures:
                    f.get(timeout=settings.kafka_timeout_seconds)

            try:
                # kafka-python blocks: run it off the event loop, so other requests go on meanwhile
                await run_in_threadpool(send_and_wait)
            except Exception as e:  # noqa: BLE001 - any Kafka failure: nothing is acknowledged
                unavailable.inc()
                log.warning("Kafka did not acknowledge %d events: %s", len(good), e)
                return JSONResponse(
                    {"error": "Kafka is unavailable; nothing was acknowledged, retry with the same event_ids"},
                    status_code=503,
                    headers={"Retry-After": "5"},
                )
            kafka_latency.observe(time.monotonic() - started)
            accepted.labels(kind).inc(len(good))
        status = 200 if good else 400
        return JSONResponse(
            {"accepted": len(good), "rejected": len(raws) - len(good), "results": results}, status_code=status
        )

    @app.get("/v1/recommendations/{user_id}")
    async def get_recommendations(user_id: str) -> Response:
        if not lists.ready.is_set():
            return JSONResponse({"error": "still reading the recommendations topic"}, status_code=503)
        # a user with no list of their own gets the popular-jobs list (source fallback), once one was published
        msg = lists.lists.get(user_id) or list_for_new_user(lists.lists, user_id)
        if msg is None:
            return JSONResponse({"error": f"no list for user {user_id!r}"}, status_code=404)
        return JSONResponse(msg)

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = await run_in_threadpool(kafka_ready)
        return PlainTextResponse("ready" if ok else "Kafka unreachable", status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
