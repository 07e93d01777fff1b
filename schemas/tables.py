"""The Delta tables of the pipeline: their names, columns and schemas, defined once.

Column names are constants here so that no string literal for a column appears twice in the code. The
schemas are Spark DDL strings (readable by any Spark, importable without a JVM).
"""

from __future__ import annotations

# table names: folders under storage.tables_root
EVENTS = "events"
DEAD_LETTERS = "dead_letters"
INTERACTIONS = "interactions"
USER_FACTORS = "user_factors"
JOB_FACTORS = "job_factors"
MODELS = "models"
RECOMMENDATIONS = "recommendations"
JOBS = "jobs"
ONLINE_EVALUATION = "online_evaluation"

# columns
EVENT_ID = "event_id"
USER_ID = "user_id"
JOB_ID = "job_id"
EVENT_TYPE = "event_type"
OCCURRED_AT = "occurred_at"
RECEIVED_AT = "received_at"
KAFKA_TOPIC = "kafka_topic"
KAFKA_PARTITION = "kafka_partition"
KAFKA_OFFSET = "kafka_offset"
BATCH_ID = "batch_id"
RAW = "raw"
REASON_CODE = "reason_code"
REASON = "reason"
FIRST_AT = "first_at"
LAST_AT = "last_at"
STRENGTH = "strength"
MODEL_VERSION = "model_version"
FEATURES = "features"
CREATED_AT = "created_at"
STATUS = "status"
PARAMS = "params"
DATA_VERSION = "data_version"
N_USERS = "n_users"
N_JOBS = "n_jobs"
N_INTERACTIONS = "n_interactions"
METRICS = "metrics"
TIMINGS = "timings"
GENERATED_AT = "generated_at"
NEWEST_EVENT_AT = "newest_event_at"
SOURCE = "source"
ITEMS = "items"
SCORE = "score"
RANK = "rank"
CATEGORY = "category"
RAW_CATEGORY = "raw_category"
POSTED_AT = "posted_at"
CLOSED_AT = "closed_at"
EXPIRES_AT = "expires_at"
UPDATED_AT = "updated_at"
CATEGORY_AT = "category_at"
ACTION = "action"
WINDOW_HOURS = "window_hours"
JOB_IDS = "job_ids"
SHOWN_UNTIL = "shown_until"
OUTCOME = "outcome"
HIT_RANK = "hit_rank"
HIT_JOB_ID = "hit_job_id"
EVALUATED_AT = "evaluated_at"


def count_column(event_type: str) -> str:
    """The interactions column counting one event type: n_view, n_click, n_save, n_apply."""
    return f"n_{event_type}"


COUNT_COLUMNS = tuple(count_column(t) for t in ("view", "click", "save", "apply"))

EVENTS_DDL = (
    f"{EVENT_ID} STRING NOT NULL, {USER_ID} STRING NOT NULL, {JOB_ID} STRING NOT NULL, "
    f"{EVENT_TYPE} STRING NOT NULL, {OCCURRED_AT} TIMESTAMP NOT NULL, {RECEIVED_AT} TIMESTAMP, "
    f"{KAFKA_TOPIC} STRING, {KAFKA_PARTITION} INT, {KAFKA_OFFSET} BIGINT, {BATCH_ID} BIGINT"
)

DEAD_LETTERS_DDL = (
    f"{RAW} BINARY, {KAFKA_TOPIC} STRING, {KAFKA_PARTITION} INT, {KAFKA_OFFSET} BIGINT, "
    f"{RECEIVED_AT} TIMESTAMP, {REASON_CODE} STRING NOT NULL, {REASON} STRING NOT NULL, {BATCH_ID} BIGINT"
)

# one row per (user_id, job_id): how often each event type happened, the weighted strength, first and last time
INTERACTIONS_DDL = (
    f"{USER_ID} STRING NOT NULL, {JOB_ID} STRING NOT NULL, "
    + ", ".join(f"{c} BIGINT NOT NULL" for c in COUNT_COLUMNS)
    + f", {STRENGTH} DOUBLE NOT NULL, {FIRST_AT} TIMESTAMP, {LAST_AT} TIMESTAMP"
)

USER_FACTORS_DDL = f"{MODEL_VERSION} STRING NOT NULL, {USER_ID} STRING NOT NULL, {FEATURES} ARRAY<FLOAT> NOT NULL"
JOB_FACTORS_DDL = f"{MODEL_VERSION} STRING NOT NULL, {JOB_ID} STRING NOT NULL, {FEATURES} ARRAY<FLOAT> NOT NULL"

# one row per trained model; params, metrics and timings are JSON objects
MODELS_DDL = (
    f"{MODEL_VERSION} STRING NOT NULL, {CREATED_AT} TIMESTAMP NOT NULL, {STATUS} STRING NOT NULL, "
    f"{PARAMS} STRING, {DATA_VERSION} BIGINT, {N_USERS} BIGINT, {N_JOBS} BIGINT, {N_INTERACTIONS} BIGINT, "
    f"{METRICS} STRING, {TIMINGS} STRING"
)

RECOMMENDATIONS_DDL = (
    f"{USER_ID} STRING NOT NULL, {MODEL_VERSION} STRING, {GENERATED_AT} TIMESTAMP NOT NULL, "
    f"{NEWEST_EVENT_AT} TIMESTAMP, {SOURCE} STRING NOT NULL, "
    f"{ITEMS} ARRAY<STRUCT<{JOB_ID}: STRING, {SCORE}: DOUBLE, {RANK}: INT>> NOT NULL"
)

# the job catalog: one row per job, the state after the newest event (status open or closed); jobs.csv rows
# are open jobs with no times. updated_at is the occurred_at of the event that set the status, category_at of
# the newest event that carried a category (null: the category came from a CSV).
JOBS_DDL = (
    f"{JOB_ID} STRING NOT NULL, {CATEGORY} STRING, {RAW_CATEGORY} STRING, {STATUS} STRING NOT NULL, "
    f"{POSTED_AT} TIMESTAMP, {CLOSED_AT} TIMESTAMP, {EXPIRES_AT} TIMESTAMP, {UPDATED_AT} TIMESTAMP, "
    f"{CATEGORY_AT} TIMESTAMP, {EVENT_ID} STRING"
)

# one row per list served to a user and evaluation window (`jobrec evaluate --online`): the list's jobs best first
# (rank = position + 1), the end of the span it counted as shown, and the outcome: hit (the user interacted with a
# listed job within the span; hit_rank the best rank among those jobs, hit_job_id the job there), miss, or pending
# (the span has not closed yet). generated_at is the message's, to the millisecond
ONLINE_EVALUATION_DDL = (
    f"{USER_ID} STRING NOT NULL, {GENERATED_AT} TIMESTAMP NOT NULL, {SOURCE} STRING NOT NULL, "
    f"{WINDOW_HOURS} DOUBLE NOT NULL, {MODEL_VERSION} STRING, {JOB_IDS} ARRAY<STRING> NOT NULL, "
    f"{SHOWN_UNTIL} TIMESTAMP NOT NULL, {OUTCOME} STRING NOT NULL, {HIT_RANK} INT, {HIT_JOB_ID} STRING, "
    f"{EVALUATED_AT} TIMESTAMP NOT NULL"
)

TABLE_DDL: dict[str, str] = {
    EVENTS: EVENTS_DDL,
    DEAD_LETTERS: DEAD_LETTERS_DDL,
    INTERACTIONS: INTERACTIONS_DDL,
    USER_FACTORS: USER_FACTORS_DDL,
    JOB_FACTORS: JOB_FACTORS_DDL,
    MODELS: MODELS_DDL,
    RECOMMENDATIONS: RECOMMENDATIONS_DDL,
    JOBS: JOBS_DDL,
    ONLINE_EVALUATION: ONLINE_EVALUATION_DDL,
}

# factor tables keep every model version; reading one version should touch only its files
PARTITION_COLUMNS: dict[str, tuple[str, ...]] = {
    USER_FACTORS: (MODEL_VERSION,),
    JOB_FACTORS: (MODEL_VERSION,),
}

# model status values in the models table
STATUS_PUBLISHED = "published"
STATUS_REJECTED = "rejected"

# job status values in the jobs table
JOB_OPEN = "open"
JOB_CLOSED = "closed"

# recommendation sources
SOURCE_BATCH = "batch"
SOURCE_FOLD_IN = "fold-in"
SOURCE_FALLBACK = "fallback"

# outcomes of a served list in the online_evaluation table
OUTCOME_HIT = "hit"
OUTCOME_MISS = "miss"
OUTCOME_PENDING = "pending"
