"""The speed layer: a user's new clicks refresh that user's list within seconds, between retrains.

It follows the clicks topic with a Kafka consumer (no micro-batch scheduler in the way), in a consumer group whose
instances share the topic's partitions (`speed_partitions`); it keeps the history of every user of its partitions
in memory (`histories`: loaded from the Delta interactions table, then updated click by click), and for the users
whose clicks a poll brings re-solves their vectors against the serving model's fixed job factors
(`fold_in.fold_in_users`) and publishes a new top-N list (source fold-in). A user with no job the model knows
gets a popularity list (source fallback): the popular jobs of the categories the user clicked first, then the
popular jobs overall, until the next retrain. When a retrain publishes a new model version, the next check
(every fold_in.model_check_seconds) switches to it without a restart. Until a first model passes the quality gate,
the layer serves a model without factors (`popularity_model`, reloaded at every check): every click is answered
with a fallback list.

It follows the job-events topic too, into an in-memory copy of the catalog (`jobrec.batch.core.catalog.CatalogState`,
loaded from the Delta jobs table at start): a closed or expired job leaves every list computed after the event
arrives; job events of a poll apply before its clicks. `publish.max_per_category` caps a category in a list.

The ingest remains the record of truth (exactly once, in Delta); this layer trades that for latency: its
in-memory histories may differ from the table by the clicks in flight when it started, which the next retrain's
lists correct.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from jobrec.batch.core.catalog import CatalogState, ServingFilter, serving_filter
from jobrec.batch.core.confidence import rating_values
from jobrec.batch.core.fold_in import fold_in_users, gramian
from jobrec.batch.core.top_n import NO_CATEGORY, capped_top, top_n_unseen
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import ClickEvent, EventLimits, Rejection, parse_click_event, parse_click_events
from jobrec.schemas.job_event import JobEvent, parse_job_event
from jobrec.schemas.recommendation import POPULARITY_MODEL_VERSION, recommendation_message
from jobrec.streaming.histories import Histories, UserHistory

log = logging.getLogger(__name__)

# how many of the most popular jobs fallback lists choose from
POPULAR_JOBS = 1000


@dataclass
class ServingModel:
    """What fold-in needs of one model version: job factors, Y^T Y, the ALS parameters, a popularity order."""

    model_version: str
    job_ids: list[str]
    job_matrix: np.ndarray
    alpha: float
    reg_param: float
    popular: list[int]  # job indices, most interacted-with first
    # per job index: its users as a share of the most popular job's, the score of fallback lists (None: 0)
    popularity: np.ndarray | None = None
    # the confidence input of the trained model (jobrec.batch.core.confidence), so fold-in solves the same problem
    confidence: str = "linear"
    epsilon: float = 1.0
    half_life_days: float = 0.0
    reference_time: float = 0.0
    # how the trained model scaled lambda (jobrec.batch.core.params): fold-in solves with the same convention
    reg_scaling: str = "count"
    # False: no factors (no model has passed the gate yet): every list is a fallback list
    fold_in: bool = True
    yty: np.ndarray = field(init=False)
    position: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.yty = gramian(self.job_matrix)
        self.position = {job: i for i, job in enumerate(self.job_ids)}


def popularity_model(users_per_job: Iterable[tuple[str, int]], limit: int = POPULAR_JOBS) -> ServingModel:
    """What the layer serves while no model has passed the gate: no factors, the `limit` jobs with the most users
    (ties by job_id), each scored by its users as a share of the most popular job's (the fallback lists' scale)."""
    ranked = sorted(users_per_job, key=lambda pair: (-pair[1], pair[0]))[:limit]
    counts = np.array([float(n) for _, n in ranked])
    shares = counts / counts[0] if counts.size and counts[0] > 0 else np.zeros(len(ranked))
    return ServingModel(
        POPULARITY_MODEL_VERSION,
        [job for job, _ in ranked],
        np.zeros((len(ranked), 0)),
        0.0,
        0.0,
        list(range(len(ranked))),
        popularity=shares,
        fold_in=False,
    )


def _items(model: ServingModel, best: np.ndarray, scores: np.ndarray) -> list[dict[str, object]]:
    return [
        {t.JOB_ID: model.job_ids[j], t.SCORE: round(float(s), 6), t.RANK: r + 1}
        for r, (j, s) in enumerate(zip(best.tolist(), scores.tolist(), strict=True))
    ]


def fallback_order(
    model: ServingModel,
    history: UserHistory,
    allowed: ServingFilter | None,
    n: int,
    max_per_category: int,
    catalog: CatalogState | None = None,
) -> np.ndarray:
    """Job indices for a user the model cannot score: popular jobs of the user's categories, then popular jobs.

    The user's categories are those of the jobs in their history that the catalog knows (new jobs too, which
    the model has not seen yet). Seen, closed and expired jobs are left out; the category cap applies.
    """
    popular = np.asarray(model.popular, dtype=np.int64)
    if popular.size == 0:
        return popular
    # a descending score that keeps the popularity order: in-category jobs get +len(popular)
    row = np.full(len(model.job_ids), -np.inf)
    row[popular] = np.arange(len(popular), 0, -1, dtype=np.float64)
    categories = allowed.categories if allowed is not None else None
    if allowed is not None:
        row[allowed.excluded] = -np.inf
    if allowed is not None and catalog is not None:
        # only fallback users pay for this: a fold-in user's categories are never looked up
        wanted = {allowed.category_code(c) for c in catalog.categories_of(history.strengths)} - {NO_CATEGORY}
        if wanted:
            in_wanted = np.isin(allowed.categories, list(wanted))
            row[in_wanted & np.isfinite(row)] += len(popular)
    seen = [model.position[j] for j in history.strengths if j in model.position]
    row[np.asarray(seen, dtype=np.int64)] = -np.inf
    return capped_top(row, n, categories, max_per_category)


def recommend_for_users(
    model: ServingModel,
    histories: list[UserHistory],
    n: int,
    allowed: ServingFilter | None = None,
    max_per_category: int = 0,
    catalog: CatalogState | None = None,
) -> list[tuple[str, list[dict[str, object]]]]:
    """(source, items) per user: fold-in over the jobs the model knows, else popularity; seen jobs excluded,
    and the jobs `allowed` hides (closed, expired); at most `max_per_category` jobs of one category.

    The users' vectors are solved together (`fold_in_users`) and scored together, in one matrix product against
    the job factors.
    """
    out: list[tuple[str, list[dict[str, object]]] | None] = [None] * len(histories)
    seen, ratings_of, slots = [], [], []
    for k, history in enumerate(histories):
        idx_list, strength_list = [], []
        # a model without factors (none has passed the gate yet) folds in no one
        known = history.strengths if model.fold_in else {}
        for job, strength in known.items():
            i = model.position.get(job)
            if i is not None and strength > 0:
                idx_list.append(i)
                strength_list.append(strength)
        if not idx_list:
            best = fallback_order(model, history, allowed, n, max_per_category, catalog)
            shares = model.popularity if model.popularity is not None else np.zeros(len(model.job_ids))
            out[k] = (
                t.SOURCE_FALLBACK,
                [
                    {t.JOB_ID: model.job_ids[i], t.SCORE: round(float(shares[i]), 6), t.RANK: r + 1}
                    for r, i in enumerate(best.tolist())
                ],
            )
            continue
        idx = np.array(idx_list, dtype=np.int64)
        ratings = np.array(strength_list)
        if model.confidence != "linear" or model.half_life_days > 0:
            ages = np.array(
                [
                    (model.reference_time - history.last_at[model.job_ids[i]].timestamp()) / 86400.0
                    if model.job_ids[i] in history.last_at
                    else np.nan
                    for i in idx_list
                ]
            )
            ratings = rating_values(ratings, ages, model.confidence, model.epsilon, model.half_life_days)
        seen.append(idx)
        ratings_of.append(ratings)
        slots.append(k)
    # every user's rank x rank system solved in stacks (fold_in_users), not one Python call each
    vectors = (
        fold_in_users(model.yty, model.job_matrix, seen, ratings_of, model.alpha, model.reg_param, model.reg_scaling)
        if seen
        else None
    )
    if vectors is not None:
        ranked = top_n_unseen(
            vectors,
            model.job_matrix,
            seen,
            n,
            allowed.excluded if allowed is not None else None,
            allowed.categories if allowed is not None else None,
            max_per_category,
        )
        for k, (best, scores) in zip(slots, ranked, strict=True):
            out[k] = (t.SOURCE_FOLD_IN, _items(model, best, scores))
    return [o for o in out if o is not None]


def recommend_for_user(model: ServingModel, history: UserHistory, n: int) -> tuple[str, list[dict[str, object]]]:
    """(source, items) for one user; see `recommend_for_users`."""
    return recommend_for_users(model, [history], n)[0]


class FilterCache:
    """The serving filter of (model, catalog version), recomputed when either changes or a job expires. The model
    is compared by identity: a reloaded popularity model keeps its version but not its jobs."""

    def __init__(self) -> None:
        self._model: ServingModel | None = None
        self._catalog_version: int | None = None
        self._value: ServingFilter | None = None
        self._valid_until: datetime | None = None

    def get(self, model: ServingModel, catalog: CatalogState, now: datetime) -> ServingFilter:
        if (
            self._value is None
            or model is not self._model
            or catalog.version != self._catalog_version
            or (self._valid_until is not None and now >= self._valid_until)
        ):
            self._value = serving_filter(model.job_ids, catalog.rows(), now)
            self._valid_until = catalog.next_expiry_after(now)
            self._model, self._catalog_version = model, catalog.version
        return self._value


class RecentIds:
    """The most recent event ids, to drop a producer's retries here too (bounded memory)."""

    def __init__(self, capacity: int = 1_000_000):
        self.capacity = capacity
        self.ids: OrderedDict[str, None] = OrderedDict()

    def seen_before(self, event_id: str) -> bool:
        if event_id in self.ids:
            return True
        self.ids[event_id] = None
        if len(self.ids) > self.capacity:
            self.ids.popitem(last=False)
        return False


@dataclass
class SpeedStats:
    records: int = 0
    events: int = 0
    rejected: int = 0
    repeats: int = 0
    lists: int = 0
    fallback_lists: int = 0
    job_events: int = 0
    job_events_rejected: int = 0
    # records or users that made the code raise: skipped, logged, counted; the layer goes on
    internal_errors: int = 0
    polls_with_records: int = 0
    compute_seconds: float = 0.0  # parse, fold-in and top-N
    publish_seconds: float = 0.0  # send and wait for the brokers' acknowledgement


def apply_job_records(
    records: Iterable[tuple[bytes | None, int]], catalog: CatalogState, limits: EventLimits, stats: SpeedStats
) -> int:
    """Job-event records into the catalog copy; returns how many changed it (bad ones: the ingest dead-letters)."""
    changed = 0
    for value, received_ms in records:
        try:
            verdict = parse_job_event(value, received_ms, limits)
            if not isinstance(verdict, JobEvent):
                stats.job_events_rejected += 1
                continue
            changed += catalog.apply(verdict)
            stats.job_events += 1
        except Exception:  # noqa: BLE001 - one record must never stop the layer; the ingest dead-letters it
            stats.internal_errors += 1
            log.exception("skipped a job-event record that made the speed layer raise: %r", _excerpt(value))
    return changed


def _excerpt(value: bytes | None) -> bytes | None:
    return value[:200] if value else value


def apply_click_records(
    records: Iterable[tuple[bytes | None, int]],
    histories: Histories,
    recent: RecentIds,
    limits: EventLimits,
    stats: SpeedStats,
) -> list[str]:
    """Valid, not repeated click records into the histories; returns their users, in order (with repeats)."""
    touched: list[str] = []
    records = list(records)
    try:
        # the fast decoder for the common shape, the reason-coded parser for the rest: the same verdicts
        verdicts: list[ClickEvent | Rejection | None] = list(parse_click_events(records, limits))
    except Exception:  # noqa: BLE001 - judge the records one by one below, and find the one at fault
        log.exception("decoding %d click records together failed; parsing them one by one", len(records))
        verdicts = [None] * len(records)
    for (value, received_ms), verdict in zip(records, verdicts, strict=True):
        stats.records += 1
        try:
            if verdict is None:
                verdict = parse_click_event(value, received_ms, limits)
            if not isinstance(verdict, ClickEvent):
                stats.rejected += 1  # the ingest dead-letters it; nothing to do here
                continue
            if recent.seen_before(verdict.event_id):
                stats.repeats += 1
                continue
            histories.add(verdict)
            stats.events += 1
            touched.append(verdict.user_id)
        except Exception:  # noqa: BLE001 - one record must never stop the layer; the ingest dead-letters it
            stats.internal_errors += 1
            log.exception("skipped a click record that made the speed layer raise: %r", _excerpt(value))
    return touched


def process_records(
    records: Iterable[tuple[bytes | None, int]],
    histories: Histories,
    recent: RecentIds,
    model: ServingModel,
    n: int,
    limits: EventLimits,
    stats: SpeedStats,
    *,
    catalog: CatalogState | None = None,
    filters: FilterCache | None = None,
    max_per_category: int = 0,
) -> list[tuple[str, str]]:
    """(value, broker timestamp ms) records -> (user_id, message JSON) for every user whose clicks arrived."""
    touched = apply_click_records(records, histories, recent, limits, stats)
    generated_at = datetime.now(timezone.utc)
    users = list(dict.fromkeys(touched))
    allowed = (filters or FilterCache()).get(model, catalog, generated_at) if catalog is not None else None

    def ranked_lists(group: list[str]) -> list[tuple[str, list[dict[str, object]]]]:
        return recommend_for_users(model, [histories.users[u] for u in group], n, allowed, max_per_category, catalog)

    try:
        ranked = list(zip(users, ranked_lists(users), strict=True))
    except Exception:  # noqa: BLE001 - find the user at fault: score one by one, skip who still fails
        log.exception("scoring %d users together failed; scoring them one by one", len(users))
        ranked = []
        for user in users:
            try:
                ranked.append((user, ranked_lists([user])[0]))
            except Exception:  # noqa: BLE001
                stats.internal_errors += 1
                log.exception("skipped the list of user %r: scoring raised", user[:128])
    out = []
    for user, (source, items) in ranked:
        try:
            message = recommendation_message(
                user, model.model_version, generated_at, histories.users[user].newest_event_at, source, items
            )
            user.encode()  # the key of its message: a user id that cannot be a Kafka key is skipped here
        except Exception:  # noqa: BLE001
            stats.internal_errors += 1
            log.exception("skipped the list of user %r: it cannot be published", user[:128])
            continue
        stats.lists += 1
        stats.fallback_lists += source == t.SOURCE_FALLBACK
        out.append((user, message))
    return out


class ModelHolder:
    """The serving model, swapped by a background thread when a retrain publishes a new version."""

    def __init__(self, load: Callable[[str | None], ServingModel | None], check_seconds: float):
        self._load = load
        self.check_seconds = check_seconds
        self.model: ServingModel | None = load(None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="model-refresh", daemon=True)

    def start(self) -> ModelHolder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _refresh(self) -> None:
        while not self._stop.wait(self.check_seconds):
            try:
                current = self.model.model_version if self.model else None
                newer = self._load(current)
                if newer is not None:
                    # the popularity model comes back at every check (reloaded), under the same name
                    (log.info if newer.model_version != current else log.debug)(
                        "fold-in switches to model %s (was %s)", newer.model_version, current
                    )
                    self.model = newer
            except Exception:  # noqa: BLE001 - keep serving the old model; say why
                log.exception("could not check for a new model; keeping %s", self.model and self.model.model_version)


@dataclass(frozen=True)
class SpeedSettings:
    """What the speed layer publishes and how it judges records; from the config's kafka, publish and ingest."""

    recommendations_topic: str
    top_n: int
    limits: EventLimits
    max_per_category: int = 0
    # job events come on this topic (None: no catalog updates)
    jobs_topic: str | None = None
    # sent as the header jobrec-speed-instance of every list: which instance computed it (host:pid)
    instance: str = ""


INSTANCE_HEADER = "jobrec-speed-instance"


def run_speed_layer(
    consumer: Any,
    producer: Any,
    models: ModelHolder,
    histories: Histories,
    settings: SpeedSettings,
    should_stop: Callable[[], bool],
    *,
    stats: SpeedStats | None = None,
    heartbeat: Callable[[], None] = lambda: None,
    catalog: CatalogState | None = None,
    jobs_consumer: Any = None,
    partitions: Any = None,
    on_ready: Callable[[], None] | None = None,
    metrics: Any = None,
) -> SpeedStats:
    """Poll clicks (and job events), fold in against the holder's current model, publish one list per touched
    user. Job events of a poll are applied before its clicks are scored.

    With `partitions` (a `speed_partitions.ClickPartitions`, the consumer in a group), the histories of newly
    assigned partitions are loaded after the poll that assigned them, before any of their records is returned,
    and the consumed offsets are committed after each poll's lists are acknowledged. `jobs_consumer`: a second
    consumer for the jobs topic (every instance needs every job event); without it job events come on `consumer`.
    `metrics` (a `process_metrics.SpeedMetrics`) observes each published poll and the owned partitions' lag.
    """
    stats = stats or SpeedStats()
    recent = RecentIds()
    filters = FilterCache()
    last_log = time.monotonic()
    headers = [(INSTANCE_HEADER, settings.instance.encode())] if settings.instance else None
    ready = False
    # one BLAS thread: a poll's products are small, and OpenBLAS's extra threads spin on the cores the broker and
    # this loop need (bench freshness at 5,000 events/s: p95 2,047 ms with two, 1,035 ms with one)
    with threadpool_limits(1, "blas"):
        while not should_stop():
            heartbeat()
            if metrics is not None and partitions is not None:
                metrics.update_lag(consumer)
            polled = consumer.poll(timeout_ms=50, max_records=5000)
            if partitions is not None:
                partitions.settle()
            if not ready and (partitions is None or partitions.settled):
                ready = True
                if on_ready:
                    on_ready()
            records = [
                (rec.value, rec.timestamp)
                for tp, batch in polled.items()
                if tp.topic != settings.jobs_topic
                for rec in batch
            ]
            job_polled = jobs_consumer.poll(timeout_ms=0) if jobs_consumer is not None else polled
            if catalog is not None and settings.jobs_topic is not None:
                job_records = [
                    (r.value, r.timestamp) for tp, b in job_polled.items() if tp.topic == settings.jobs_topic for r in b
                ]
                if job_records and apply_job_records(job_records, catalog, settings.limits, stats):
                    log.info("catalog: %d job events applied (%d in all)", len(job_records), stats.job_events)
            model = models.model
            if not records:
                continue
            if model is None:
                # no model yet: histories still grow, lists start with the first retrain
                apply_click_records(records, histories, recent, settings.limits, stats)
                continue
            started = time.perf_counter()
            messages = process_records(
                records,
                histories,
                recent,
                model,
                settings.top_n,
                settings.limits,
                stats,
                catalog=catalog,
                filters=filters,
                max_per_category=settings.max_per_category,
            )
            computed = time.perf_counter()
            for user, message in messages:
                producer.send(
                    settings.recommendations_topic, key=user.encode(), value=message.encode(), headers=headers
                )
            producer.flush()
            if partitions is not None:
                # after the lists are acknowledged: an instance that dies before this leaves the poll to the next owner
                consumer.commit_async()
            published = time.perf_counter()
            stats.polls_with_records += 1
            stats.compute_seconds += computed - started
            stats.publish_seconds += published - computed
            if metrics is not None:
                metrics.observe_poll((ms for _, ms in records), time.time(), computed - started, published - computed)
            if time.monotonic() - last_log > 30:
                last_log = time.monotonic()
                log.info("speed layer: %s", stats)
    return stats
