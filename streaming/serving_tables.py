"""The serving model and the job catalog read from the Delta tables without a JVM, for the speed layer and the
HTTP API.

Both processes read the tables here, through delta-rs (the `deltalake` package: Rust, no JVM, a few MB of memory
beside the model) and DataFusion's SQL, which applies the deletion vectors the interactions table's MERGEs write
(a plain Parquet read would count an updated (user, job) pair twice): the API answers similar jobs and anonymous
lists with the very model the speed layer folds users in with. The catalog query gives what
`jobs_table.read_catalog_rows` gives the batch jobs through Spark.

A table that does not exist yet reads as empty: readers never create a table (each has one writing process).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from jobrec.batch.core.catalog import CatalogRow
from jobrec.batch.delta_tables import absolute_location
from jobrec.schemas import tables as t
from jobrec.schemas.click_event import from_epoch_micros
from jobrec.schemas.recommendation import POPULARITY_MODEL_VERSION
from jobrec.streaming.serving_model import assemble_serving_model
from jobrec.streaming.speed import POPULAR_JOBS, ServingModel, popularity_model

log = logging.getLogger(__name__)


def delta_uri(tables_root: str, name: str) -> str:
    """The table's location as delta-rs reads it: Spark's s3a:// scheme is s3:// there (credentials and endpoint
    from the AWS_* environment), a local folder is made absolute."""
    root = absolute_location(tables_root).rstrip("/")
    if root.startswith("s3a://"):
        root = "s3://" + root[len("s3a://") :]
    return f"{root}/{name}"


# Spark's S3A settings (spark.extra) -> delta-rs's storage options for the same store. Keys S3A takes from the
# config (written as ${VAR} there) go along; without them delta-rs reads the AWS_* environment itself, as S3A's
# environment credentials provider does
_S3A_OPTIONS = {
    "spark.hadoop.fs.s3a.endpoint": "AWS_ENDPOINT_URL",
    "spark.hadoop.fs.s3a.endpoint.region": "AWS_REGION",
    "spark.hadoop.fs.s3a.access.key": "AWS_ACCESS_KEY_ID",
    "spark.hadoop.fs.s3a.secret.key": "AWS_SECRET_ACCESS_KEY",
    "spark.hadoop.fs.s3a.session.token": "AWS_SESSION_TOKEN",
}


def delta_storage_options(spark_extra: Mapping[str, str]) -> dict[str, str]:
    """delta-rs options for the object store the config's Spark settings name: its endpoint and region, path-style
    requests when S3A uses them, plain HTTP when the endpoint is http://. Empty for a local file system."""
    options = {ours: spark_extra[theirs] for theirs, ours in _S3A_OPTIONS.items() if spark_extra.get(theirs)}
    if spark_extra.get("spark.hadoop.fs.s3a.path.style.access", "").lower() == "true":
        options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def query_table(
    tables_root: str, name: str, sql: str, storage_options: Mapping[str, str] | None = None
) -> pa.Table | None:
    """The result of `sql` over the table (named `name` in the query) at its newest version; None when the table
    does not exist yet."""
    from deltalake import DeltaTable, QueryBuilder

    uri = delta_uri(tables_root, name)
    options = dict(storage_options or {})
    if not DeltaTable.is_deltatable(uri, options):
        return None
    return pa.table(QueryBuilder().register(name, DeltaTable(uri, storage_options=options)).execute(sql).read_all())


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def read_serving_version(tables_root: str, storage_options: Mapping[str, str] | None = None) -> tuple[str, dict] | None:
    """(version, params) of the newest published model (`train.serving_model_version`'s choice), None before
    the first one."""
    rows = query_table(
        tables_root,
        t.MODELS,
        f"SELECT {t.MODEL_VERSION}, {t.PARAMS} FROM {t.MODELS} WHERE {t.STATUS} = {_quoted(t.STATUS_PUBLISHED)} "
        f"ORDER BY {t.CREATED_AT} DESC, {t.MODEL_VERSION} DESC LIMIT 1",
        storage_options,
    )
    if rows is None or rows.num_rows == 0:
        return None
    return str(rows.column(0)[0].as_py()), json.loads(rows.column(1)[0].as_py())


def read_users_per_job(
    tables_root: str, limit: int | None = None, storage_options: Mapping[str, str] | None = None
) -> list[tuple[str, int]]:
    """(job_id, users who interacted with it) from the interactions table (one row per user and job), most users
    first, then by job_id; the first `limit` (None: all)."""
    rows = query_table(
        tables_root,
        t.INTERACTIONS,
        f"SELECT {t.JOB_ID}, COUNT(*) AS users FROM {t.INTERACTIONS} GROUP BY {t.JOB_ID} "
        f"ORDER BY users DESC, {t.JOB_ID}" + (f" LIMIT {int(limit)}" if limit is not None else ""),
        storage_options,
    )
    if rows is None:
        return []
    return list(zip(rows.column(0).to_pylist(), rows.column(1).to_pylist(), strict=True))


def read_job_factors(
    tables_root: str, version: str, storage_options: Mapping[str, str] | None = None
) -> tuple[list[str], np.ndarray]:
    """(job_ids, factors as a jobs x rank float64 matrix) of one model version, in the table's order."""
    rows = query_table(
        tables_root,
        t.JOB_FACTORS,
        f"SELECT {t.JOB_ID}, {t.FEATURES} FROM {t.JOB_FACTORS} WHERE {t.MODEL_VERSION} = {_quoted(version)}",
        storage_options,
    )
    if rows is None or rows.num_rows == 0:
        return [], np.zeros((0, 0))
    features = rows.column(1).combine_chunks()
    flat = np.asarray(features.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    return rows.column(0).to_pylist(), flat.reshape(rows.num_rows, -1)


def read_serving_model(
    tables_root: str, current: str | None = None, storage_options: Mapping[str, str] | None = None
) -> ServingModel | None:
    """The newest published model (the retrain's `train.serving_model_version` choice), or None if it is
    `current` already; before the first one the popularity model (no factors), read again at every call, so that
    it follows the interactions table."""
    found = read_serving_version(tables_root, storage_options)
    if found is None:
        fallback = popularity_model(read_users_per_job(tables_root, POPULAR_JOBS, storage_options))
        if current != POPULARITY_MODEL_VERSION:
            log.info(
                "no model has passed the quality gate yet: lists are popularity lists (source fallback, %d jobs) "
                "until one does",
                len(fallback.job_ids),
            )
        return fallback
    version, params = found
    if version == current:
        return None
    job_ids, factors = read_job_factors(tables_root, version, storage_options)
    users_per_job = read_users_per_job(tables_root, None, storage_options)
    return assemble_serving_model(version, params, zip(job_ids, factors, strict=True), users_per_job)


def read_catalog_rows(tables_root: str, storage_options: Mapping[str, str] | None = None) -> list[CatalogRow]:
    """`jobs_table.read_catalog_rows` without a JVM: (job_id, category, status, expires_at, updated_at,
    category_at) of every job, times aware UTC."""
    times = (t.EXPIRES_AT, t.UPDATED_AT, t.CATEGORY_AT)
    # epoch microseconds, as the Spark reader takes them: no time zone conversion on the way
    rows = query_table(
        tables_root,
        t.JOBS,
        f"SELECT {t.JOB_ID}, {t.CATEGORY}, {t.STATUS}, "
        + ", ".join(f"CAST({c} AS BIGINT) AS {c}" for c in times)
        + f" FROM {t.JOBS}",
        storage_options,
    )
    if rows is None:
        return []
    columns = [rows.column(i).to_pylist() for i in range(rows.num_columns)]
    return [
        (job, category, status, from_epoch_micros(expires), from_epoch_micros(updated), from_epoch_micros(cat_at))
        for job, category, status, expires, updated, cat_at in zip(*columns, strict=True)
    ]
