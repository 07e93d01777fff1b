"""The HTTP ingest and read API: services post click events and read the newest list of a user.

- POST /v1/events: one event (a JSON object), a batch (a JSON array) or NDJSON (Content-Type application/json,
  or application/x-ndjson, application/jsonlines, application/json-lines; none = JSON; any other is 415). Each
  event is checked against click event v1 as the bytes it was sent as; the answer says, per event, accepted or
  why not (field, code, reason). A bad body is a 4xx, never a 5xx: a fault of the checker on one event rejects
  that event as `internal_error`. Accepted events are acknowledged only after every Kafka broker in sync has
  them (acks=all), within api.kafka_timeout_seconds for the whole request; otherwise the API answers 503 and
  acknowledges nothing, so a client retries with the same event_ids (safe: the pipeline drops repeats).
  400 when no event is acceptable; 413 over api.max_body_bytes (at once, from Content-Length, without reading
  the body) or api.max_batch_events; 408 when the body has not arrived within api.read_timeout_seconds.
- POST /v1/jobs/events: job events (job event v1: posted, closed) to the jobs topic, the same way.
- GET /v1/recommendations/{user_id}: the newest list from the compacted recommendations topic, followed by a
  background consumer; a user without a list gets the list for new users (key '*') once one was published.
- GET /v1/jobs/{job_id}/similar?k=10: the k (1 to 100) open jobs nearest to a job by the cosine of the serving
  model's job factors, the category cap applied (schemas/similar_jobs.v1.json); 404 for a job the model does not
  know, 503 while no model is loaded (or none has passed the quality gate yet).
- POST /v1/recommendations: a list for a visitor who is not signed in, from the jobs they touched in this session
  (schemas/anonymous_request.v1.json), computed on the spot as the speed layer would for a user with that history
  (schemas/anonymous_recommendation.v1.json); nothing is stored. Both read the snapshot of `serving_state`.
- /healthz (the process lives); /readyz, answered at once from state that background threads keep: ready only if
  a Kafka metadata round trip answered within api.ready_timeout_seconds recently and the recommendations follower
  has caught up (the body says which part is not); /metrics (Prometheus text format).
Optional bearer-token auth on /v1/ (api.token, from a Secret).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from kafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from jobrec.schemas.anonymous_request import MAX_K, AnonymousRequest, parse_anonymous_request, parse_k
from jobrec.schemas.click_event import EventLimits, Rejection, parse_click_event
from jobrec.schemas.job_event import parse_job_event
from jobrec.schemas.recommendation import format_timestamp, list_for_new_user
from jobrec.streaming.recommendations_reader import LatestLists
from jobrec.streaming.serving_state import ServingSnapshot, ServingState, session_history

log = logging.getLogger(__name__)

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonlines", "application/json-lines"}
)
UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})
_JSON_SPACE = b" \t\r\n"
# a JSON string with its escapes, a lone quote (a string that never closes), or one structural character
_ARRAY_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|["\[\]{},]', re.DOTALL)


@dataclass(frozen=True)
class ApiSettings:
    clicks_topic: str
    recommendations_topic: str
    jobs_topic: str
    max_body_bytes: int
    max_batch_events: int
    token: str
    kafka_timeout_seconds: float
    read_timeout_seconds: float
    limits: EventLimits


class Readiness(Protocol):
    def status(self) -> tuple[bool, str]: ...


def body_format(content_type: str | None) -> str | None:
    """'json' or 'ndjson' for a Content-Type header (absent or blank: 'json'); None for a type, or a charset
    other than UTF-8, that the API does not take."""
    if content_type is None or not content_type.strip():
        return "json"
    media, *params = content_type.split(";")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in UTF8_CHARSETS:
            return None
    media = media.strip().lower()
    return "json" if media in JSON_TYPES else "ndjson" if media in NDJSON_TYPES else None


def split_json_array(body: bytes) -> list[bytes] | None:
    """The elements of a JSON array, each exactly the bytes it was sent as; None if the body is not one array
    with balanced brackets, closed strings, one comma between elements and nothing after its end.

    The elements are not parsed here: each is judged as an event of its own, so a repeated key, deep nesting or
    bad JSON inside one costs that element only, the same as in a body of one event. No recursion: any depth.
    """
    start = len(body) - len(body.lstrip(_JSON_SPACE))
    if body[start : start + 1] != b"[":
        return None
    elements: list[bytes] = []
    closers: list[int] = []  # the closing bracket each open bracket expects
    element_start = start + 1
    for m in _ARRAY_TOKEN.finditer(body, start):
        c = body[m.start()]
        if c == 0x22:  # '"'
            if m.end() - m.start() == 1:
                return None  # a string that never closes
        elif c in b"[{":
            closers.append(c + 2)  # ']' is '[' + 2, '}' is '{' + 2
        elif c in b"]}":
            if not closers or closers.pop() != c:
                return None
            if not closers:  # the array's own end
                last = body[element_start : m.start()].strip(_JSON_SPACE)
                if last:
                    elements.append(last)
                elif elements:
                    return None  # a comma before the end
                return elements if not body[m.end() :].strip(_JSON_SPACE) else None
        elif len(closers) == 1:  # a comma between two of the array's elements
            element = body[element_start : m.start()].strip(_JSON_SPACE)
            if not element:
                return None
            elements.append(element)
            element_start = m.end()
    return None  # the array never closes


def split_body(body: bytes, fmt: str) -> list[bytes]:
    """The raw events of a request body, each as sent: NDJSON's non-blank lines, a JSON array's elements, or the
    body as one event (also a body that starts like an array but is not a well-formed one: one bad event)."""
    if fmt == "ndjson":
        return [line for line in body.split(b"\n") if line.strip(_JSON_SPACE)]
    if body.lstrip(_JSON_SPACE).startswith(b"["):
        elements = split_json_array(body)
        if elements is not None:
            return elements
    return [body]


def bearer_token_ok(header: bytes | None, token: str) -> bool:
    """Whether an Authorization header (its raw bytes) carries `token` as a bearer token (constant time)."""
    if header is None:
        return False
    scheme, _, credentials = header.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token.encode())


class BearerAuth:
    """ASGI middleware: /v1/ paths need `Authorization: Bearer <token>` (nothing when the token is empty); a
    401 says so with `WWW-Authenticate: Bearer`, before any of the body is read."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token and scope["type"] == "http" and scope["path"].startswith("/v1/"):
            header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            if not bearer_token_ok(header, self.token):
                challenge = 'Bearer realm="jobrec"' + ("" if header is None else ', error="invalid_token"')
                response = JSONResponse(
                    {"error": "missing or wrong bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": challenge},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# a request's latency, from a health probe's fraction of a millisecond to a batch waiting on Kafka's acks
REQUEST_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))


class RequestMetrics:
    """ASGI middleware, outermost: every HTTP request counted by method, route template and status, and timed by
    method and route. The route is the template (`/v1/recommendations/{user_id}`), never the raw path, so a
    scanner's or a user's arbitrary paths cannot grow the series; paths that match no route are `unmatched`."""

    def __init__(self, app: ASGIApp, routes: list[Any], requests: Counter, seconds: Histogram) -> None:
        self.app, self.routes, self.requests, self.seconds = app, routes, requests, seconds

    def route_of(self, scope: Scope) -> str:
        # the router records the route it chose in the scope; matching again (a regex per route) is only for the
        # requests answered before routing (the bearer check's 401s), and cost 0.2 ms a request when done for all
        routed = scope.get("route")
        if routed is not None:
            return str(getattr(routed, "path", "unmatched"))
        from starlette.routing import Match

        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", "unmatched"))
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # a handler that raised before answering: the server answers 500

        async def send_seen(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_seen)
        finally:
            method, route = str(scope.get("method", "")), self.route_of(scope)
            self.requests.labels(method, route, str(status)).inc()
            self.seconds.labels(method, route).observe(time.perf_counter() - started)


def judge_events(
    raws: list[bytes], parse: Callable[..., Any], limits: EventLimits, key_field: str, now_ms: int | None = None
) -> list[Rejection | tuple[Any, bytes]]:
    """Per raw event, its Rejection or (event, its Kafka key as bytes). Never raises: a fault of the parser on
    one event rejects that event as internal_error, and a key that UTF-8 cannot encode is rejected here, before
    anything of the request is sent."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    verdicts: list[Rejection | tuple[Any, bytes]] = []
    for i, raw in enumerate(raws):
        try:
            verdict = parse(raw, now_ms, limits)
        except Exception:  # noqa: BLE001 - the fault is ours; it costs this event, not the request
            log.exception("checking event %d failed; rejected as internal_error", i)
            verdict = Rejection("internal_error", "the event could not be checked (a fault of the API)")
        if not isinstance(verdict, Rejection):
            try:
                verdict = (verdict, str(getattr(verdict, key_field)).encode("utf-8"))
            except UnicodeEncodeError:
                verdict = Rejection("bad_unicode", f"{key_field} is not valid Unicode (a lone surrogate)", key_field)
        verdicts.append(verdict)
    return verdicts


async def send_acknowledged(producer: Any, topic: str, records: list[tuple[bytes, bytes]], timeout: float) -> None:
    """Send every (key, value) to `topic` and return once Kafka acknowledged all of them; TimeoutError if that
    takes more than `timeout` seconds in all, or the first Kafka error. The acknowledgements are awaited on the
    event loop, so no thread waits for Kafka: only the sends themselves (which block while the producer has no
    metadata for the topic) run in a worker thread, abandoned at the deadline."""
    loop = asyncio.get_running_loop()
    acks = [loop.create_future() for _ in records]

    def settle(ack: asyncio.Future[None], error: BaseException | None) -> None:
        if ack.done():  # cancelled: the request gave up waiting
            return
        if error is not None:
            ack.set_exception(error)
        else:
            ack.set_result(None)

    def report(ack: asyncio.Future[None], error: BaseException | None) -> None:  # on Kafka's I/O thread
        try:
            loop.call_soon_threadsafe(settle, ack, error)
        except RuntimeError:
            pass  # the event loop is closed: nobody waits for this any more

    def send_all() -> None:
        for (key, value), ack in zip(records, acks, strict=True):
            future = producer.send(topic, key=key, value=value)
            future.add_callback(lambda _, ack=ack: report(ack, None))
            future.add_errback(lambda e, ack=ack: report(ack, e))

    try:
        async with asyncio.timeout(timeout):
            await anyio.to_thread.run_sync(send_all, abandon_on_cancel=True)
            await asyncio.gather(*acks)
    finally:
        for ack in acks:
            if not ack.done():
                ack.cancel()
            elif not ack.cancelled():
                ack.exception()  # retrieved: a failure after the first one is not logged as never retrieved


# the length of a similar-jobs list when the request does not say
DEFAULT_SIMILAR_K = 10


def rejection_response(rejection: Rejection) -> JSONResponse:
    """A 400 naming the field at fault, the code and the reason."""
    return JSONResponse(
        {"error": rejection.reason, "field": rejection.field, "code": rejection.code, "reason": rejection.reason},
        status_code=400,
    )


def serving_unavailable(serving: ServingState | None, needs_factors: bool) -> JSONResponse | None:
    """The 503 for a request that needs the serving model while there is none to answer with; None if there is."""
    snapshot = serving.snapshot if serving is not None else None
    if serving is None:
        why = "this API serves no model (it was started without one)"
    elif snapshot is None:
        why = serving.detail
    elif needs_factors and snapshot.unit is None:
        why = "no model has passed the quality gate yet: similar jobs need a model's job factors"
    else:
        return None
    return JSONResponse({"error": f"no serving model: {why}"}, status_code=503, headers={"Retry-After": "5"})


def similar_jobs_message(snapshot: ServingSnapshot, job_id: str, k: int) -> dict[str, Any] | None:
    """The similar_jobs.v1 answer for `job_id`, None if the model does not know the job."""
    items = snapshot.similar_jobs(job_id, k)
    if items is None:
        return None
    return {
        "schema_version": 1,
        "job_id": job_id,
        "model_version": snapshot.model.model_version,
        "generated_at": format_timestamp(datetime.now(timezone.utc)),
        "items": items,
    }


def anonymous_message(snapshot: ServingSnapshot, serving: ServingState, request: AnonymousRequest) -> dict[str, Any]:
    """The anonymous_recommendation.v1 answer for a session's events."""
    history = session_history(request.events, serving.weights)
    source, items = snapshot.session_list(history, request.k or serving.top_n)
    return {
        "schema_version": 1,
        "model_version": snapshot.model.model_version,
        "generated_at": format_timestamp(datetime.now(timezone.utc)),
        "source": source,
        "items": items,
    }


def create_app(
    settings: ApiSettings, producer: Any, lists: LatestLists, kafka: Readiness, serving: ServingState | None = None
) -> FastAPI:
    """The API; `serving` (the serving model and catalog, kept by a thread) answers similar jobs and anonymous
    lists (None: those routes answer 503)."""
    app = FastAPI(title="jobrec API", version="1")
    app.add_middleware(BearerAuth, token=settings.token)
    registry = CollectorRegistry()
    # kind: click (POST /v1/events) or job (POST /v1/jobs/events)
    accepted = Counter("jobrec_events_accepted_total", "events acknowledged by Kafka", ["kind"], registry=registry)
    rejected = Counter("jobrec_events_rejected_total", "events refused", ["kind", "reason"], registry=registry)
    unavailable = Counter("jobrec_kafka_unavailable_total", "requests answered 503", registry=registry)
    kafka_latency = Histogram(
        "jobrec_kafka_ack_seconds", "time to Kafka's acknowledgement of a request's events", registry=registry
    )
    registry.register(_StateMetrics(lists, kafka))
    requests = Counter(
        "jobrec_http_requests_total",
        "HTTP requests by method, route and status",
        ["method", "route", "status"],
        registry=registry,
    )
    request_seconds = Histogram(
        "jobrec_http_request_seconds",
        "HTTP request latency by method and route, from the request's arrival to the end of its answer",
        ["method", "route"],
        buckets=REQUEST_SECONDS_BUCKETS,
        registry=registry,
    )
    # added last, so outermost: the bearer check's 401s are counted too. app.router.routes is the list the
    # routes below are added to
    app.add_middleware(RequestMetrics, routes=app.router.routes, requests=requests, seconds=request_seconds)

    @app.post("/v1/events")
    async def post_events(request: Request) -> Response:
        """Click events (schemas/click_event.v1.json) to the clicks topic, keyed by user_id."""
        return await produce(request, parse_click_event, settings.clicks_topic, "user_id", "click")

    @app.post("/v1/jobs/events")
    async def post_job_events(request: Request) -> Response:
        """Job events (schemas/job_event.v1.json: posted, closed) to the jobs topic, keyed by job_id."""
        return await produce(request, parse_job_event, settings.jobs_topic, "job_id", "job")

    async def read_body(request: Request) -> bytes | Response:
        """The whole body, or the 413 / 408 that refuses it; neither reads more than max_body_bytes."""
        limit = settings.max_body_bytes
        too_large = JSONResponse(
            {"error": f"body over {limit} bytes"}, status_code=413, headers={"Connection": "close"}
        )
        declared = request.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            return too_large  # at once: a declared size is not waited for
        chunks, size = [], 0
        try:
            async with asyncio.timeout(settings.read_timeout_seconds):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return too_large
                    chunks.append(chunk)
        except TimeoutError:
            return JSONResponse(
                {"error": f"the body did not arrive within {settings.read_timeout_seconds:g} s"},
                status_code=408,
                headers={"Connection": "close"},
            )
        except ClientDisconnect:
            return Response(status_code=400)  # the client left: nobody reads this
        return b"".join(chunks)

    async def produce(request: Request, parse: Callable[..., Any], topic: str, key_field: str, kind: str) -> Response:
        """Check every event of the body, send the good ones, answer per event once Kafka acknowledged them."""
        fmt = body_format(request.headers.get("content-type"))
        if fmt is None:
            return JSONResponse(
                {
                    "error": f"unsupported Content-Type {request.headers.get('content-type')!r}: send "
                    "application/json (an event or an array of events) or application/x-ndjson, in UTF-8"
                },
                status_code=415,
            )
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        raws = split_body(body, fmt)
        if not raws:
            return JSONResponse({"error": "the body has no events", "accepted": 0, "rejected": 0, "results": []}, 400)
        if len(raws) > settings.max_batch_events:
            return JSONResponse({"error": f"more than {settings.max_batch_events} events"}, status_code=413)
        results: list[dict[str, Any]] = []
        records: list[tuple[bytes, bytes]] = []
        for i, (raw, verdict) in enumerate(
            zip(raws, judge_events(raws, parse, settings.limits, key_field), strict=True)
        ):
            if isinstance(verdict, Rejection):
                rejected.labels(kind, verdict.code).inc()
                results.append(
                    {
                        "index": i,
                        "status": "rejected",
                        "field": verdict.field,
                        "code": verdict.code,
                        "reason": verdict.reason,
                    }
                )
            else:
                event, key = verdict
                records.append((key, raw))
                results.append({"index": i, "status": "accepted", "event_id": event.event_id})
        if records:
            started = time.monotonic()
            try:
                await send_acknowledged(producer, topic, records, settings.kafka_timeout_seconds)
            except (KafkaError, TimeoutError) as e:
                unavailable.inc()
                log.warning("Kafka did not acknowledge %d events: %s", len(records), type(e).__name__)
                for r in results:
                    if r["status"] == "accepted":
                        r["status"] = "not_acknowledged"
                return JSONResponse(
                    {
                        "error": f"Kafka did not acknowledge the events within {settings.kafka_timeout_seconds:g} s; "
                        "nothing of this request was acknowledged: retry it with the same event_ids",
                        "results": results,
                    },
                    status_code=503,
                    headers={"Retry-After": "5"},
                )
            kafka_latency.observe(time.monotonic() - started)
            accepted.labels(kind).inc(len(records))
        return JSONResponse(
            {"accepted": len(records), "rejected": len(raws) - len(records), "results": results},
            status_code=200 if records else 400,
        )

    @app.get("/v1/recommendations/{user_id}")
    async def get_recommendations(user_id: str) -> Response:
        ready, why = lists.status()
        if not ready:
            return JSONResponse(
                {"error": f"the recommendations are not available: {why}"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        # a user with no list of their own gets the popular-jobs list (source fallback), once one was published
        msg = lists.lists.get(user_id) or list_for_new_user(lists.lists, user_id)
        if msg is None:
            return JSONResponse({"error": f"no list for user {user_id[:200]!r}"}, status_code=404)
        return JSONResponse(msg)

    @app.get("/v1/jobs/{job_id}/similar")
    async def get_similar_jobs(job_id: str, request: Request) -> Response:
        """The open jobs nearest to `job_id` by the serving model's job factors (schemas/similar_jobs.v1.json)."""
        raw_k = request.query_params.get("k")
        k: int | Rejection = DEFAULT_SIMILAR_K
        if raw_k is not None:
            try:
                k = parse_k(int(raw_k))
            except ValueError:
                k = Rejection("bad_type", f"k must be an integer from 1 to {MAX_K}", "k")
        if isinstance(k, Rejection):
            return rejection_response(k)
        unavailable = serving_unavailable(serving, needs_factors=True)
        if unavailable is not None:
            return unavailable
        assert serving is not None and serving.snapshot is not None
        snapshot = serving.snapshot  # one snapshot for the whole answer: a swap meanwhile does not mix two
        # a matrix-vector product and a selection over every job: off the event loop, which keeps serving others
        msg = await anyio.to_thread.run_sync(similar_jobs_message, snapshot, job_id, k)
        if msg is None:
            return JSONResponse(
                {
                    "error": f"job {job_id[:200]!r} is not in the serving model {snapshot.model.model_version} "
                    "(unknown, or posted since its retrain)"
                },
                status_code=404,
            )
        return JSONResponse(msg)

    @app.post("/v1/recommendations")
    async def post_anonymous_recommendations(request: Request) -> Response:
        """A list for a visitor's session (schemas/anonymous_request.v1.json), computed on the spot."""
        if body_format(request.headers.get("content-type")) != "json":
            return JSONResponse(
                {"error": f"unsupported Content-Type {request.headers.get('content-type')!r}: send application/json"},
                status_code=415,
            )
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        parsed = parse_anonymous_request(body, settings.max_body_bytes, settings.max_batch_events)
        if isinstance(parsed, Rejection):
            return rejection_response(parsed)
        unavailable = serving_unavailable(serving, needs_factors=False)
        if unavailable is not None:
            return unavailable
        assert serving is not None and serving.snapshot is not None
        msg = await anyio.to_thread.run_sync(anonymous_message, serving.snapshot, serving, parsed)
        return JSONResponse(msg)

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz")
    async def readyz() -> Response:
        # from state kept by background threads: answering costs no Kafka call and no worker thread
        kafka_ok, kafka_why = kafka.status()
        lists_ok, lists_why = lists.status()
        return JSONResponse(
            {
                "ready": kafka_ok and lists_ok,
                "kafka": {"ready": kafka_ok, "detail": kafka_why},
                "recommendations": {"ready": lists_ok, "detail": lists_why},
            },
            status_code=200 if kafka_ok and lists_ok else 503,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _StateMetrics:
    """Prometheus metrics read from the background threads' state when /metrics is scraped."""

    def __init__(self, lists: LatestLists, kafka: Readiness) -> None:
        self.lists, self.kafka = lists, kafka

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "jobrec_recommendations_skipped",
            "records of the recommendations topic skipped as not being a list (logged with partition and offset)",
            value=self.lists.skipped,
        )
        yield CounterMetricFamily(
            "jobrec_recommendations_follower_restarts",
            "times the recommendations follower reopened its consumer after a failure",
            value=self.lists.restarts,
        )
        ready = GaugeMetricFamily("jobrec_ready", "1 if this part of /readyz is ready", labels=["part"])
        ready.add_metric(["kafka"], float(self.kafka.status()[0]))
        ready.add_metric(["recommendations"], float(self.lists.status()[0]))
        yield ready
