"""What the speed layer loads from Delta at start: the histories of the users it owns. Without a JVM.

The serving model and the catalog come from `serving_tables` (the readers the HTTP API uses); the histories are
read here. All three go through delta-rs and DataFusion's SQL, which applies the deletion vectors the interactions
table's MERGEs write. A speed instance therefore starts no Spark session: it used to, only to read these tables,
and then kept an idle JVM (1.2-3 GB resident at 1-10M interactions) on the cores the hot path needs.

The interactions table streams through in Arrow record batches; each batch's rows are sorted to the partitions of
the clicks topic their users' clicks arrive on (the producers' partitioner, `key_partitions`), the rows of the
partitions this instance does not own are dropped on arrival, and each owned partition becomes one columnar
segment at the end. Pure apart from `load_histories`' read: `HistoryLoader` is tested without Delta.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobrec.schemas import tables as t
from jobrec.streaming.histories import NO_TIME, Histories, IdCodes, build_segment
from jobrec.streaming.key_partitions import key_partitions

log = logging.getLogger(__name__)

LAST_US = "last_us"
# the columns a batch of the interactions table comes in (`HistoryLoader.add`): last_at as epoch microseconds, so
# that no time zone conversion happens on the way
HISTORY_SQL = (
    f"SELECT {t.USER_ID}, {t.JOB_ID}, {t.STRENGTH}, CAST({t.LAST_AT} AS BIGINT) AS {LAST_US} FROM {t.INTERACTIONS}"
)
# log the progress of a long load every this many rows read
_PROGRESS_ROWS = 2_000_000


class HistoryLoader:
    """Gathers interaction rows, batch by batch, into one segment per owned partition of `histories`.

    A user's rows may come in any batches: each user gets one code for the whole load (so one segment slot), and
    its partition is hashed once. Rows of partitions not in `wanted` are dropped as they arrive.
    """

    def __init__(self, histories: Histories, wanted: Collection[int], of_partitions: int):
        self.histories = histories
        self.wanted = sorted(set(wanted))
        self.of_partitions = of_partitions
        self.users = IdCodes()
        self.user_partition = np.empty(0, dtype=np.int32)
        self.parts: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {
            p: [] for p in self.wanted
        }
        self.rows_read = 0
        self.rows_kept = 0

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        """One batch of (user_id, job_id, strength, last_us) rows."""
        n = batch.num_rows
        if n == 0:
            return
        self.rows_read += n
        users = pc.dictionary_encode(_array(batch.column(t.USER_ID)))
        batch_users: list[str] = users.dictionary.to_pylist()
        codes = self._codes_of(batch_users)
        user_codes = codes[users.indices.to_numpy(zero_copy_only=False)]
        row_partition = self.user_partition[user_codes]
        keep = np.isin(row_partition, self.wanted)
        if not keep.any():
            return
        rows = np.flatnonzero(keep)
        jobs = pc.dictionary_encode(_array(batch.column(t.JOB_ID)))
        job_codes = self.histories.jobs.codes_of(jobs.dictionary.to_pylist())[
            jobs.indices.to_numpy(zero_copy_only=False)[rows]
        ]
        strengths = _array(batch.column(t.STRENGTH)).to_numpy(zero_copy_only=False)[rows].astype(np.float64)
        last_us = pc.fill_null(_array(batch.column(LAST_US)), NO_TIME).to_numpy(zero_copy_only=False)[rows]
        user_codes, row_partition = user_codes[rows], row_partition[rows]
        for p in self.wanted:
            mine = np.flatnonzero(row_partition == p)
            if mine.size:
                self.parts[p].append(
                    (user_codes[mine], job_codes[mine], strengths[mine], last_us[mine].astype(np.int64))
                )
        self.rows_kept += int(rows.size)

    def _codes_of(self, batch_users: list[str]) -> np.ndarray:
        """Load-wide codes of a batch's distinct users; a user seen for the first time is coded and hashed."""
        first_new = len(self.users.ids)
        codes = self.users.codes_of(batch_users)
        if len(self.users.ids) > first_new:
            fresh = key_partitions(self.users.ids[first_new:], self.of_partitions).astype(np.int32)
            self.user_partition = np.concatenate([self.user_partition, fresh])
        return codes

    def finish(self) -> int:
        """Each owned partition's rows into `histories` as one segment; returns the rows kept."""
        for p, pieces in self.parts.items():
            if pieces:
                users, jobs, strengths, last_us = (np.concatenate(column) for column in zip(*pieces, strict=True))
                self.histories.add_segment(p, build_segment(users, self.users.ids, jobs, strengths, last_us))
        self.parts = {}
        return self.rows_kept


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def gather_histories(
    batches: Iterable[pa.RecordBatch | pa.Table],
    histories: Histories,
    partitions: Collection[int] | None = None,
    of_partitions: int = 1,
) -> int:
    """The rows of `batches` (HISTORY_SQL's columns) of the users whose clicks go to `partitions` (of the clicks
    topic's `of_partitions`; None: all) into `histories`, one segment per partition; returns the rows kept."""
    wanted = range(of_partitions) if partitions is None else partitions
    loader = HistoryLoader(histories, wanted, of_partitions)
    next_report = _PROGRESS_ROWS
    for batch in batches:
        loader.add(batch)
        if loader.rows_read >= next_report:
            log.info("histories: %d interactions read, %d kept", loader.rows_read, loader.rows_kept)
            next_report += _PROGRESS_ROWS
    return loader.finish()


def load_histories(
    tables_root: str,
    histories: Histories,
    partitions: Collection[int] | None = None,
    of_partitions: int = 1,
    storage_options: Mapping[str, str] | None = None,
) -> int:
    """The interactions of the users whose clicks go to `partitions` into `histories` (see `gather_histories`),
    read from the interactions table as it is now; returns the rows kept. No table yet: nothing is loaded."""
    from deltalake import DeltaTable, QueryBuilder

    from jobrec.streaming.serving_tables import delta_uri

    uri = delta_uri(tables_root, t.INTERACTIONS)
    options = dict(storage_options or {})
    if not DeltaTable.is_deltatable(uri, options):
        return 0
    table = DeltaTable(uri, storage_options=options)
    reader = pa.RecordBatchReader.from_stream(QueryBuilder().register(t.INTERACTIONS, table).execute(HISTORY_SQL))
    return gather_histories(reader, histories, partitions, of_partitions)
