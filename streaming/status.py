"""`jobrec status`: the whole pipeline on one screen, or as JSON: the broker, the topics with the ingest's lag,
the tables, the dead letters by reason, the serving model and the newest rejected one, and what to do next.

The JSON shape (schema_version 1; counts are ints, times ISO 8601 UTC, null where unknown):

    {"schema_version": 1, "generated_at": str,
     "kafka": {"bootstrap": str | null, "configured": bool (kafka.bootstrap_servers set, not the local broker),
               "reachable": bool, "error": str | null, "brokers": int | null},
     "topics": {"clicks" | "jobs" | "recommendations": {
         "topic": str, "exists": bool | null, "partitions": int | null,
         "end_offset": int | null (sum over partitions), "records": int | null (end minus earliest, summed),
         "ingest": {"checkpoint": str, "batch": int | null, "committed": bool | null, "offset": int | null}
                   | null (a topic the ingest does not read),
         "lag": int | null (end offsets minus the ingest's next offsets), "lag_note": str | null (why no lag)}},
     "tables": {name: {"present": bool, "rows": int | null, "version": int | null}},
               (interactions also: "events_folded_through": int | null, the newest events version counted in it)
     "dead_letters": {reason_code: int},
     "models": {"counts": {status: int}, "serving": model | null, "latest_rejected": model | null},
     "healthy": bool, "next_step": str}

    model = {"version", "status", "created_at", "n_users", "n_jobs", "n_interactions", "data_version", "params",
             "k", "validation": {metric: float | null} | null, "popularity": {...} | null, "gate_reason": str | null,
             "params_source": str | null, "search": {"trials", "complete", "pruned", "seconds", ...} | null}

Spark's Kafka source commits no consumer offsets, so the lag is read from the ingest queries' checkpoints (the
newest offsets-log file). Kafka is asked in a thread of its own, beside the Spark reads, and never for longer
than `timeout_seconds`: an unreachable broker is an answer (reachable false, with the error), not a hang.
"""

from __future__ import annotations

import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import SparkSession

from jobrec.batch.connections import any_broker_reachable, describe_connect_failure, python_client_args
from jobrec.batch.processes import spark_session
from jobrec.batch.status import TABLES, count_dead_letters, read_checkpoint_offsets, read_models, read_table_size
from jobrec.schemas import tables as t
from jobrec.schemas.config import Config, KafkaConfig
from jobrec.streaming.interactions_fold import fold_position
from jobrec.streaming.processes import ingest_settings

SCHEMA_VERSION = 1
WIDTH = 100
READERS = 4  # threads reading side by side: Kafka, the tables, the checkpoints
LABEL = 15  # the width of a section's label: its text starts after it


def _no_answer(error: str) -> dict[str, Any]:
    return {"reachable": False, "error": error, "brokers": None, "offsets": {}}


def probe_kafka(kafka: KafkaConfig, bootstrap: str, topics: list[str], timeout_seconds: float) -> dict[str, Any]:
    """{"reachable", "error", "brokers", "offsets": topic -> partition -> (earliest, end) or None (no such
    topic)}, within `timeout_seconds`; the broker's answer, or why there is none."""
    answer = _no_answer("")
    done = threading.Event()

    def ask() -> None:
        from kafka import KafkaAdminClient, TopicPartition
        from kafka.admin import OffsetSpec

        try:
            if not any_broker_reachable(bootstrap):
                answer["error"] = f"no Kafka broker accepts a connection at {bootstrap}"
                return
            timeout_ms = max(1, int(timeout_seconds * 1000))
            try:
                admin = KafkaAdminClient(
                    **python_client_args(kafka, bootstrap),
                    request_timeout_ms=timeout_ms,
                    bootstrap_timeout_ms=timeout_ms,
                )
            except Exception as e:  # noqa: BLE001 - any failure to connect is the answer
                answer["error"] = str(describe_connect_failure(kafka, bootstrap, e))
                return
            try:
                answer["brokers"] = len(admin.describe_cluster().get("brokers", []))
                partitions = {
                    d["name"]: [p["partition_index"] for p in d.get("partitions") or []]
                    for d in admin.describe_topics(topics)
                    if d.get("error_code", 0) == 0
                }
                tps = [TopicPartition(name, p) for name, ps in partitions.items() for p in ps]
                ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps}, timeout_ms=timeout_ms)
                starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps}, timeout_ms=timeout_ms)
                answer["offsets"] = {
                    name: (
                        {
                            str(p): (starts[TopicPartition(name, p)].offset, ends[TopicPartition(name, p)].offset)
                            for p in partitions[name]
                        }
                        if name in partitions
                        else None
                    )
                    for name in topics
                }
                answer.update(reachable=True, error=None)
            finally:
                admin.close()
        except Exception as e:  # noqa: BLE001 - the status reports what went wrong instead of failing
            answer["error"] = f"{type(e).__name__}: {e}"
        finally:
            done.set()

    threading.Thread(target=ask, name="status-kafka", daemon=True).start()
    if not done.wait(timeout_seconds):
        # the thread ends by its clients' own time-outs; the answer is not waited for
        return _no_answer(f"no answer from {bootstrap} within {timeout_seconds:g} s")
    return answer


def topic_entry(
    name: str,
    offsets: dict[str, tuple[int, int]] | None,
    kafka_answered: bool,
    checkpoint: str | None,
    ingested: dict[str, Any] | None,
) -> dict[str, Any]:
    """One topic's status: its partitions and offsets (`offsets`: partition -> (earliest, end), None for a topic
    the broker does not have), and for a topic the ingest reads (`checkpoint` set) how far behind it is.

    The lag of a partition is its end offset minus the next offset of the ingest's newest batch; a partition
    the checkpoint does not know yet (added since) counts from its earliest offset, as the ingest will read it.
    """
    entry: dict[str, Any] = {
        "topic": name,
        "exists": None,
        "partitions": None,
        "end_offset": None,
        "records": None,
        "ingest": None,
        "lag": None,
        "lag_note": None,
    }
    if kafka_answered:
        entry["exists"] = offsets is not None
    if offsets is not None:
        entry["partitions"] = len(offsets)
        entry["end_offset"] = sum(end for _, end in offsets.values())
        entry["records"] = sum(end - start for start, end in offsets.values())
    if checkpoint is None:
        entry["lag_note"] = "not read by the ingest"
        return entry
    read_to = (ingested or {}).get("offsets", {}).get(name, {})
    entry["ingest"] = {
        "checkpoint": checkpoint,
        "batch": ingested["batch"] if ingested else None,
        "committed": ingested["committed"] if ingested else None,
        "offset": sum(read_to.values()) if ingested else None,
    }
    if not kafka_answered:
        entry["lag_note"] = "Kafka unreachable"
    elif offsets is None:
        entry["lag_note"] = "no such topic"
    elif ingested is None:
        entry["lag_note"] = "no checkpoint yet"
    else:
        entry["lag"] = sum(max(0, end - max(start, read_to.get(p, start))) for p, (start, end) in offsets.items())
    return entry


def read_status(spark: SparkSession, cfg: Config, bootstrap: str | None, timeout_seconds: float = 5.0) -> dict:
    """The status (the JSON shape above) on a given SparkSession. The reads run side by side in a few threads
    (Spark takes jobs from several threads): a cold JVM spends most of the time warming up on the first ones."""
    names = {
        "clicks": cfg.kafka.clicks_topic,
        "jobs": cfg.kafka.jobs_topic,
        "recommendations": cfg.kafka.recommendations_topic,
    }
    settings = ingest_settings(cfg, bootstrap or "")
    checkpoints = {"clicks": settings.checkpoint, "jobs": settings.jobs_checkpoint}
    root = cfg.storage.tables_root
    with ThreadPoolExecutor(READERS, thread_name_prefix="status") as pool:
        asked = (
            pool.submit(probe_kafka, cfg.kafka, bootstrap, list(names.values()), timeout_seconds) if bootstrap else None
        )
        models = pool.submit(read_models, spark, root)
        tables = {name: pool.submit(read_table_size, spark, root, name) for name in TABLES}
        folded = pool.submit(fold_position, spark, root)
        ingested = {role: pool.submit(read_checkpoint_offsets, spark, path) for role, path in checkpoints.items()}
        dead_letters = pool.submit(count_dead_letters, spark, root)
        kafka_answer = (
            asked.result()
            if asked
            else _no_answer("no Kafka broker configured (kafka.bootstrap_servers) or running (`jobrec kafka start`)")
        )
    reachable = bool(kafka_answer["reachable"])
    status: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kafka": {
            "bootstrap": bootstrap,
            "configured": bool(cfg.kafka.bootstrap_servers),
            "reachable": reachable,
            "error": kafka_answer["error"],
            "brokers": kafka_answer["brokers"],
        },
        "topics": {
            role: topic_entry(
                name,
                kafka_answer["offsets"].get(name),
                reachable,
                checkpoints.get(role),
                ingested[role].result() if role in ingested else None,
            )
            for role, name in names.items()
        },
        "tables": {name: size.result() for name, size in tables.items()},
        "dead_letters": dead_letters.result(),
        "models": models.result(),
    }
    if status["tables"].get(t.INTERACTIONS, {}).get("present"):
        status["tables"][t.INTERACTIONS]["events_folded_through"] = folded.result()
    status["healthy"], status["next_step"] = next_step(status)
    return status


def collect_status(cfg: Config, bootstrap: str | None, timeout_seconds: float = 5.0) -> dict:
    """`jobrec status`: the status of the pipeline `cfg` describes (the JSON shape above), on a SparkSession of its
    own. `bootstrap` None: no broker configured or running, which the status says."""
    with spark_session(cfg, "status") as spark:
        return read_status(spark, cfg, bootstrap, timeout_seconds)


def next_step(status: dict) -> tuple[bool, str]:
    """(healthy, what to do next): the first thing off, in the pipeline's order (broker, topics, ingest, model,
    lists), or that nothing is."""
    kafka, topics, models = status["kafka"], status["topics"], status["models"]
    if not kafka["bootstrap"]:
        return (
            False,
            "no Kafka broker configured or running: start one with `jobrec kafka start` or set kafka.bootstrap_servers",
        )
    if not kafka["reachable"]:
        if kafka["configured"]:
            return False, f"Kafka unreachable at {kafka['bootstrap']}: check kafka.bootstrap_servers and the brokers"
        return False, f"Kafka unreachable at {kafka['bootstrap']}: start it with `jobrec kafka start`"
    missing = [e["topic"] for e in topics.values() if e["exists"] is False]
    if missing:
        return False, f"no topic {', '.join(missing)}: `jobrec kafka start` or `jobrec ingest` creates it"
    for entry in topics.values():
        if entry["ingest"] and entry["ingest"]["batch"] is None and entry["records"]:
            return False, f"{entry['records']:,} records on {entry['topic']} and none ingested yet: run `jobrec ingest`"
    behind = sorted(((e["lag"], e["topic"]) for e in topics.values() if e["lag"]), reverse=True)
    if behind:
        lag, name = behind[0]
        return False, f"the ingest is {lag:,} records behind on {name}: is `jobrec ingest` running?"
    serving, rejected = models["serving"], models["latest_rejected"]
    if serving is None:
        if rejected is not None:
            return False, (
                "no model has passed the gate yet: see the rejected model's reason above; "
                "`jobrec evaluate --tune` searches for better parameters"
            )
        if not status["tables"].get("interactions", {}).get("rows"):
            return False, "no interactions yet: load some (`jobrec load CSV`) or stream clicks in (`jobrec ingest`)"
        return False, "no model trained yet: run `jobrec retrain`"
    if rejected is not None and _time(rejected["created_at"]) > _time(serving["created_at"]):
        return False, (
            f"the newest retrain, {rejected['version']}, was rejected (reason above): {serving['version']} keeps "
            "serving; `jobrec evaluate --tune` searches for better parameters"
        )
    if not status["tables"].get("recommendations", {}).get("rows"):
        return False, f"model {serving['version']} has no lists published: run `jobrec publish`"
    return True, f"nothing to do: the ingest is at the end of its topics and model {serving['version']} serves"


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _when(iso: str) -> str:
    return _time(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _wrap(text: str, first: str = "", indent: int = LABEL) -> list[str]:
    """`text` after `first` (a label padded to LABEL, or indentation), wrapped at WIDTH, continued at `indent`."""
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=" " * indent) or [first]


def _label(name: str) -> str:
    return f"{name:<{LABEL}}"


def _kafka_lines(kafka: dict) -> list[str]:
    if not kafka["bootstrap"]:
        return _wrap(f"not configured: {kafka['error']}", _label("Kafka"))
    if kafka["reachable"]:
        brokers = kafka["brokers"]
        return [f"{_label('Kafka')}{kafka['bootstrap']}: reachable, {brokers} broker{'s' if brokers != 1 else ''}"]
    return _wrap(f"{kafka['bootstrap']}: UNREACHABLE: {kafka['error']}", _label("Kafka"))[:3]


def _topic_lines(topics: dict) -> list[str]:
    width = max(len(e["topic"]) for e in topics.values())
    lines = [f"{_label('Topics')}    {'name':<{width}}  partitions  end offset  ingest lag"]
    for role, e in topics.items():
        lag = _n(e["lag"]) if e["lag"] is not None else e["lag_note"] or "-"
        lines.append(f"  {role:<17}{e['topic']:<{width}}  {_n(e['partitions']):>10}  {_n(e['end_offset']):>10}  {lag}")
    return lines


def _table_lines(tables: dict) -> list[str]:
    lines = [f"{_label('Tables')}    {'rows':>12}  version"]
    for name, e in tables.items():
        size = f"{e['rows']:>12,}  v{e['version']}" if e["present"] else f"{'absent':>12}"
        if e.get("events_folded_through") is not None:
            size += f"  (events folded in through v{e['events_folded_through']})"
        lines.append(f"  {name:<17}{size}")
    return lines


def _dead_letter_lines(dead: dict[str, int]) -> list[str]:
    if not dead:
        return [f"{_label('Dead letters')}none"]
    by_reason = ", ".join(f"{code} {n:,}" for code, n in dead.items())
    return _wrap(f"{sum(dead.values()):,} by reason: {by_reason}", _label("Dead letters"))[:3]


def _metrics_text(model: dict) -> str:
    val, pop, k = model["validation"], model["popularity"], model["k"]
    if not val:
        return "trained without the quality gate (gate.enabled: false)"

    def f(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    against = f" against popularity's {f(pop.get('ndcg'))}" if pop else ""
    return (
        f"validation NDCG@{k} {f(val.get('ndcg'))}{against}; precision@{k} {f(val.get('precision'))}, "
        f"recall@{k} {f(val.get('recall'))}, AUC {f(val.get('auc'))}"
    )


def _params_text(model: dict) -> str:
    """Which engine trained the model, with what, and where the parameters came from (a search, or reused)."""
    p = model.get("params") or {}
    if not p:
        return "parameters not recorded"
    form = p.get("confidence", "linear")
    eps = f" (epsilon {p['epsilon']:.3g})" if form == "log" and "epsilon" in p else ""
    source = model.get("params_source")
    search = model.get("search") or {}
    origin = (
        f"; chosen by a search of {search.get('trials')} trials in {search.get('seconds')} s"
        if search
        else (f"; {source}" if source else "")
    )
    return (
        f"{p.get('engine', 'spark')} engine: {form} confidence{eps}, alpha {p.get('alpha', 0):.3g}, lambda "
        f"{p.get('reg_param', 0):.3g}, rank {p.get('rank')}, {p.get('max_iter')} iterations{origin}"
    )


def _model_lines(models: dict) -> list[str]:
    counts = ", ".join(f"{n:,} {state}" for state, n in models["counts"].items())
    lines = [f"{_label('Models')}{counts or 'none trained yet'}"]
    serving, rejected = models["serving"], models["latest_rejected"]
    if serving is None:
        lines.append(f"{_label('  serving')}none yet")
    else:
        size = (
            f"{serving['version']}, trained {_when(serving['created_at'])} on {_n(serving['n_users'])} users x "
            f"{_n(serving['n_jobs'])} jobs, {_n(serving['n_interactions'])} interactions "
            f"(interactions v{serving['data_version']})"
        )
        lines += _wrap(size, _label("  serving"))[:2]
        lines += _wrap(_metrics_text(serving), " " * LABEL)[:2]
        lines += _wrap(_params_text(serving), " " * LABEL)[:2]
    if rejected is not None:
        why = rejected["gate_reason"] or "no reason recorded"
        lines += _wrap(f"{rejected['version']}, {_when(rejected['created_at'])}: {why}", _label("  rejected"))[:3]
    return lines


def format_status(status: dict) -> str:
    """The status on one screen (about 30 lines of at most 100 characters but for long topic names), ending with
    one line that says what to do next."""
    lines = [f"jobrec status, {_when(status['generated_at'])}"]
    lines += _kafka_lines(status["kafka"])
    lines += _topic_lines(status["topics"])
    lines += _table_lines(status["tables"])
    lines += _dead_letter_lines(status["dead_letters"])
    lines += _model_lines(status["models"])
    # one line, however long: the answer to "what now?" is never split
    lines.append(f"{'OK' if status['healthy'] else 'Next'}: {status['next_step']}")
    return "\n".join(lines)
