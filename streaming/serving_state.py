"""The HTTP API's copy of the serving model and the job catalog, and the answers computed from them.

Similar jobs and anonymous lists need what the speed layer has: the serving model (its job factors, parameters and
popularity order) and the catalog (which jobs are closed or expired, their categories). A background thread keeps
both, the way the speed layer does: the catalog is the jobs table with the job events that arrive after it was read
applied on top (the jobs topic is followed from its end as it was before the table was read; applying an event
twice changes nothing), and every `check_seconds` it looks for a newly published model. What requests read is an
immutable snapshot swapped whole, so a request never sees a model with another model's filter; the serving filter
and the unit-length factors are computed on the thread, never on a request.

The answers reuse the speed layer's own functions (`speed.recommend_for_users`, `speed.FilterCache`,
`speed.apply_job_records`): an anonymous list is the list the speed layer would publish for a user with that
history, not a re-implementation of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from jobrec.batch.core.catalog import CatalogRow, CatalogState, ServingFilter
from jobrec.batch.core.similar import capped_capacity, similar_items, unit_rows
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import EventLimits
from jobrec.streaming.histories import Histories, UserHistory
from jobrec.streaming.speed import FilterCache, ServingModel, SpeedStats, apply_job_records, recommend_for_users

log = logging.getLogger(__name__)

# the key a session's events are gathered under, in a Histories of its own (never a real user's)
_SESSION = "anonymous-session"


@dataclass(frozen=True)
class ServingSnapshot:
    """One model with the catalog's filter over its jobs, as of one moment; `unit` is the model's job factors at
    unit length (None for the popularity model, which has none)."""

    model: ServingModel
    allowed: ServingFilter
    unit: np.ndarray | None
    catalog: CatalogState
    max_per_category: int

    def similar_jobs(self, job_id: str, k: int) -> list[dict[str, object]] | None:
        """Items {job_id, score (cosine), rank} of the `k` open jobs nearest to `job_id`; None if the model does
        not know the job."""
        i = self.model.position.get(job_id)
        if i is None or self.unit is None:
            return None
        best, scores = similar_items(
            self.unit,
            i,
            k,
            self.allowed.excluded,
            self.allowed.categories,
            self.max_per_category,
            factors=self.model.job_matrix,
        )
        return [
            {t.JOB_ID: self.model.job_ids[j], t.SCORE: round(float(s), 6), t.RANK: r + 1}
            for r, (j, s) in enumerate(zip(best.tolist(), scores.tolist(), strict=True))
        ]

    def session_list(self, history: UserHistory, n: int) -> tuple[str, list[dict[str, object]]]:
        """(source, items) of a session: exactly what the speed layer computes for a user with this history.

        `n` is first cut to the longest list the cap allows over the jobs the session may be shown: the list is the
        same (the capped search takes jobs best first and stops at `n`), but a longer `n` would make it scan every
        job to find no more (55 ms at 100,000 jobs, against under 1 ms)."""
        allowed = ~self.allowed.excluded
        allowed[[self.model.position[j] for j in history.strengths if j in self.model.position]] = False
        n = min(n, capped_capacity(allowed, self.allowed.categories, self.max_per_category))
        return recommend_for_users(self.model, [history], n, self.allowed, self.max_per_category, self.catalog)[0]


def session_history(events: Iterable[tuple[str, str]], weights: Mapping[str, float]) -> UserHistory:
    """A session's (job_id, event_type) events as a user's history: each event adds its type's weight to the
    job's strength, as the speed layer's histories add a user's clicks; no times (so no decay, as for a click
    that happened after the model was trained)."""
    histories = Histories(dict(weights))
    histories.load((_SESSION, job, weights[event_type], None) for job, event_type in events)
    return histories.users.get(_SESSION) or UserHistory()


class ServingState:
    """The snapshot requests read, kept current by a background thread: the catalog followed event by event, the
    model checked every `check_seconds`. `snapshot` is None until the first model and catalog are read; `detail`
    says what the thread is doing or why it failed (it retries)."""

    def __init__(
        self,
        load_model: Callable[[str | None], ServingModel | None],
        load_catalog_rows: Callable[[], list[CatalogRow]],
        catalog: CatalogState,
        open_jobs_consumer: Callable[[], Any] | None,
        *,
        weights: Mapping[str, float],
        top_n: int,
        max_per_category: int,
        check_seconds: float,
        limits: EventLimits | None = None,
        retry_seconds: float = 5.0,
    ) -> None:
        self._load_model, self._load_catalog_rows = load_model, load_catalog_rows
        self._open_jobs_consumer = open_jobs_consumer
        self.catalog = catalog
        self.weights, self.top_n, self.max_per_category = dict(weights), top_n, max_per_category
        self.check_seconds, self.retry_seconds = check_seconds, retry_seconds
        self.limits = limits or EventLimits()
        self.snapshot: ServingSnapshot | None = None
        self.detail = "reading the serving model and the job catalog"
        self.stats = SpeedStats()  # job events applied and rejected
        self._filters = FilterCache()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-model", daemon=True)

    def start(self) -> ServingState:
        from threadpoolctl import threadpool_limits

        # one BLAS thread for the process (OpenBLAS's count is global): a request's matrix-vector product is small,
        # and with two threads it took 6.8 ms instead of 1.4 on this 2-core machine, their spinning taking the
        # cores the event loop and the other requests need (the speed layer limits itself the same way)
        threadpool_limits(1, "blas")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _publish(self, model: ServingModel, unit: np.ndarray | None) -> None:
        """A new snapshot if the model or the filter over its jobs changed (a job event, an expiry)."""
        allowed = self._filters.get(model, self.catalog, datetime.now(timezone.utc))
        current = self.snapshot
        if current is None or current.model is not model or current.allowed is not allowed:
            self.snapshot = ServingSnapshot(model, allowed, unit, self.catalog, self.max_per_category)

    def _run(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                # the topic's end before the table is read: every event after it is applied from the topic
                consumer = self._open_jobs_consumer() if self._open_jobs_consumer else None
                self.catalog.load(self._load_catalog_rows())
                model = self._load_model(None)
                break
            except Exception as e:  # noqa: BLE001 - the API serves its other routes meanwhile; try again
                log.exception("could not read the serving model and the catalog; retrying in %g s", self.retry_seconds)
                self.detail = f"could not read the serving model and the job catalog ({type(e).__name__}: {e})"
                if consumer is not None:
                    consumer.close()
                    consumer = None
                self._stop.wait(self.retry_seconds)
        else:
            return
        assert model is not None  # loaded with no current version: always a model
        unit = unit_rows(model.job_matrix, np.float32) if model.fold_in else None
        self._publish(model, unit)
        self.detail = f"model {model.model_version}, {len(self.catalog.jobs)} catalog jobs"
        log.info("similar jobs and anonymous lists: %s", self.detail)
        next_check = time.monotonic() + self.check_seconds
        try:
            while not self._stop.is_set():
                if consumer is not None:
                    records = [
                        (r.value, r.timestamp) for batch in consumer.poll(timeout_ms=500).values() for r in batch
                    ]
                    if records:
                        apply_job_records(records, self.catalog, self.limits, self.stats)
                else:
                    self._stop.wait(0.5)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.check_seconds
                    try:
                        newer = self._load_model(model.model_version)
                    except Exception:  # noqa: BLE001 - keep serving the model we have; say why
                        log.exception("could not check for a new model; keeping %s", model.model_version)
                        newer = None
                    if newer is not None:
                        if newer.model_version != model.model_version:
                            log.info("similar jobs and anonymous lists switch to model %s", newer.model_version)
                        model, unit = newer, unit_rows(newer.job_matrix, np.float32) if newer.fold_in else None
                        self.detail = f"model {model.model_version}, {len(self.catalog.jobs)} catalog jobs"
                self._publish(model, unit)
        finally:
            if consumer is not None:
                consumer.close()


def open_jobs_consumer(client: Mapping[str, Any], jobs_topic: str) -> Any:
    """A consumer of every partition of the jobs topic, placed at the topic's end (no group: every API replica
    needs every job event)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**client, enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        partitions = [TopicPartition(jobs_topic, p) for p in consumer.partitions_for_topic(jobs_topic) or ()]
        if not partitions:
            raise RuntimeError(f"the jobs topic {jobs_topic} has no partitions (does it exist?)")
        consumer.assign(partitions)
        consumer.seek_to_end(*partitions)
        for tp in partitions:
            consumer.position(tp)  # resolved now, before the table is read
    except Exception:
        consumer.close()
        raise
    return consumer
