"""`jobrec status` without a JVM or a broker: the one-screen text of a hand-written status, the advice line for
each kind of trouble, the ingest's lag from a checkpoint's offsets, and the offsets-log file format."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jobrec.batch.status import parse_offsets_file
from jobrec.streaming.status import WIDTH, format_status, next_step, topic_entry


def model(version: str, status: str, created_at: str, ndcg: float, reason: str) -> dict[str, Any]:
    return {
        "version": version,
        "status": status,
        "created_at": created_at,
        "n_users": 671,
        "n_jobs": 9066,
        "n_interactions": 100004,
        "data_version": 12,
        "params": {"rank": 32},
        "k": 10,
        "validation": {"ndcg": ndcg, "precision": 0.2, "recall": 0.1, "auc": 0.9, "map": 0.1},
        "popularity": {"ndcg": 0.1655, "precision": 0.1, "recall": 0.05, "auc": 0.8, "map": 0.05},
        "gate_reason": reason,
    }


SERVING = model(
    "20261126T193348Z-1a2b",
    "published",
    "2026-11-26T19:33:48+00:00",
    0.2773,
    "validation NDCG@10 0.2773 (popularity 0.1655, no serving model yet)",
)
REJECTED = model(
    "20261126T183000Z-3c4d",
    "rejected",
    "2026-11-26T18:30:00+00:00",
    0.0092,
    "validation NDCG@10 0.0092 does not beat popularity's 0.1655",
)


def topic(name: str, partitions: int, end: int, lag: int | None, note: str | None, ingest: bool) -> dict[str, Any]:
    return {
        "topic": name,
        "exists": True,
        "partitions": partitions,
        "end_offset": end,
        "records": end,
        "ingest": {"checkpoint": "/data/checkpoints/ingest", "batch": 4, "committed": True, "offset": end - (lag or 0)}
        if ingest
        else None,
        "lag": lag,
        "lag_note": note,
    }


def table(rows: int | None, version: int | None = None) -> dict[str, Any]:
    return {"present": rows is not None, "rows": rows, "version": version}


def healthy_status() -> dict[str, Any]:
    """A pipeline with nothing off: every topic read to its end, a published model with lists."""
    status: dict[str, Any] = {
        "schema_version": 1,
        "generated_at": "2026-11-26T20:00:00+00:00",
        "kafka": {"bootstrap": "127.0.0.1:9092", "configured": False, "reachable": True, "error": None, "brokers": 1},
        "topics": {
            "clicks": topic("clicks", 3, 1234567, 0, None, True),
            "jobs": topic("job-events", 1, 12, 0, None, True),
            "recommendations": topic("recommendations", 3, 2013, None, "not read by the ingest", False),
        },
        "tables": {
            "events": table(1234567, 1402),
            "dead_letters": table(3, 2),
            "interactions": {**table(101234, 1410), "events_folded_through": 1401},
            "user_factors": table(671, 1),
            "job_factors": table(9066, 1),
            "models": table(2, 2),
            "recommendations": table(672, 1),
            "jobs": table(None),
        },
        "dead_letters": {"invalid_json": 2, "missing_field": 1},
        "models": {"counts": {"published": 1, "rejected": 1}, "serving": SERVING, "latest_rejected": REJECTED},
    }
    status["healthy"], status["next_step"] = next_step(status)
    return status


def test_a_healthy_pipeline_fits_one_screen_and_says_so() -> None:
    text = format_status(healthy_status())
    lines = text.splitlines()
    assert len(lines) <= 30 and all(len(line) <= WIDTH for line in lines), text
    assert lines[-1] == (
        "OK: nothing to do: the ingest is at the end of its topics and model 20261126T193348Z-1a2b serves"
    )
    # thousands separators on every count
    assert "1,234,567" in text and "101,234" in text and "9,066 jobs" in text and "100,004 interactions" in text
    assert "Dead letters   3 by reason: invalid_json 2, missing_field 1" in lines
    # where the fold of events into interactions stands
    assert next(line for line in lines if "interactions " in line and " v1410" in line).endswith(
        "(events folded in through v1401)"
    )


def test_sections_are_aligned() -> None:
    lines = format_status(healthy_status()).splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Tables")))
    tables = lines[start + 1 : start + 9]
    # row counts right-aligned in one column, versions after them; "absent" in the rows column
    assert len({line.index(" v") for line in tables if " v" in line}) == 1
    assert len({len(line.split(" v")[0].rstrip()) for line in tables if " v" in line} | {len(tables[-1])}) == 1
    assert tables[-1].endswith("absent") and tables[-1].split() == ["jobs", "absent"]
    start = lines.index(next(line for line in lines if line.startswith("Topics")))
    topics = lines[start + 1 : start + 4]
    # the end offsets end in the same column
    ends = {line.index("1,234,567") + len("1,234,567") for line in topics if "1,234,567" in line}
    ends |= {line.index(" 12 ") + 3 for line in topics if " 12 " in line}
    assert len(ends) == 1
    labelled = [line for line in lines if line.startswith(("Kafka", "Dead letters", "Models"))]
    assert {line[15] != " " and line[14] == " " for line in labelled} == {True}


def test_models_show_the_serving_metrics_and_the_rejected_reason() -> None:
    text = format_status(healthy_status())
    assert "serving      20261126T193348Z-1a2b, trained 2026-11-26 19:33:48 UTC on 671 users x 9,066 jobs" in text
    assert "validation NDCG@10 0.2773 against popularity's 0.1655" in text
    assert "rejected     20261126T183000Z-3c4d, 2026-11-26 18:30:00 UTC: validation NDCG@10 0.0092 does not" in text
    assert "Models         1 published, 1 rejected" in text


def broken(change: str) -> dict[str, Any]:
    """healthy_status() with one thing off."""
    s = copy.deepcopy(healthy_status())
    if change == "no bootstrap":
        s["kafka"] |= {"bootstrap": None, "reachable": False, "error": "no Kafka broker configured", "brokers": None}
    elif change == "local broker down":
        s["kafka"] |= {"reachable": False, "error": "no Kafka broker accepts a connection", "brokers": None}
    elif change == "cluster down":
        s["kafka"] |= {"configured": True, "reachable": False, "error": "timed out", "brokers": None}
    elif change == "topic missing":
        s["topics"]["jobs"] |= {"exists": False, "partitions": None, "end_offset": None, "lag": None}
    elif change == "never ingested":
        s["topics"]["clicks"]["ingest"] |= {"batch": None, "committed": None, "offset": None}
        s["topics"]["clicks"] |= {"lag": None, "lag_note": "no checkpoint yet"}
    elif change == "behind":
        s["topics"]["clicks"]["lag"] = 1500
        s["topics"]["jobs"]["lag"] = 3
    elif change == "only rejected":
        s["models"] |= {"counts": {"rejected": 1}, "serving": None}
    elif change == "nothing trained":
        s["models"] |= {"counts": {}, "serving": None, "latest_rejected": None}
    elif change == "no interactions":
        s["models"] |= {"counts": {}, "serving": None, "latest_rejected": None}
        s["tables"]["interactions"] = table(None)
    elif change == "newest rejected":
        s["models"]["latest_rejected"] = {**REJECTED, "created_at": "2026-11-26T19:50:00+00:00"}
    elif change == "no lists":
        s["tables"]["recommendations"] = table(None)
    s["healthy"], s["next_step"] = next_step(s)
    return s


@pytest.mark.parametrize(
    "change, advice",
    [
        ("no bootstrap", "no Kafka broker configured or running: start one with `jobrec kafka start`"),
        ("local broker down", "Kafka unreachable at 127.0.0.1:9092: start it with `jobrec kafka start`"),
        ("cluster down", "Kafka unreachable at 127.0.0.1:9092: check kafka.bootstrap_servers"),
        ("topic missing", "no topic job-events: `jobrec kafka start` or `jobrec ingest` creates it"),
        ("never ingested", "1,234,567 records on clicks and none ingested yet: run `jobrec ingest`"),
        ("behind", "the ingest is 1,500 records behind on clicks: is `jobrec ingest` running?"),
        ("only rejected", "no model has passed the gate yet: see the rejected model's reason above"),
        ("nothing trained", "no model trained yet: run `jobrec retrain`"),
        ("no interactions", "no interactions yet: load some (`jobrec load CSV`)"),
        ("newest rejected", "the newest retrain, 20261126T183000Z-3c4d, was rejected (reason above)"),
        ("no lists", "model 20261126T193348Z-1a2b has no lists published: run `jobrec publish`"),
    ],
)
def test_the_last_line_says_what_to_do_about_the_first_thing_off(change: str, advice: str) -> None:
    status = broken(change)
    assert status["healthy"] is False
    assert status["next_step"].startswith(advice)
    lines = format_status(status).splitlines()
    assert lines[-1] == f"Next: {status['next_step']}" and len(lines) <= 30


def test_an_unreachable_broker_is_shown_with_its_error() -> None:
    text = format_status(broken("cluster down"))
    assert "Kafka          127.0.0.1:9092: UNREACHABLE: timed out" in text.splitlines()
    text = format_status(broken("no bootstrap"))
    assert "Kafka          not configured: no Kafka broker configured" in text.splitlines()


def test_no_model_and_no_dead_letters() -> None:
    status = broken("nothing trained")
    status["dead_letters"] = {}
    lines = format_status(status).splitlines()
    assert "Dead letters   none" in lines
    assert "Models         none trained yet" in lines and "  serving      none yet" in lines
    assert not any(line.startswith("  rejected") for line in lines)


def test_a_model_trained_without_the_gate() -> None:
    status = healthy_status()
    status["models"]["serving"] = {**SERVING, "k": None, "validation": None, "popularity": None, "gate_reason": None}
    assert "trained without the quality gate (gate.enabled: false)" in format_status(status)


def test_lag_is_end_offsets_minus_the_checkpoints_next_offsets() -> None:
    # partition -> (earliest, end); the checkpoint read p0 to 90 and p1 to 50 and knows nothing of p2 (added since)
    offsets = {"0": (0, 100), "1": (60, 80), "2": (5, 7)}
    ingested = {"batch": 3, "committed": True, "offsets": {"t": {"0": 90, "1": 50}}}
    entry = topic_entry("t", offsets, True, "/cp/ingest", ingested)
    # p0 10 behind; p1's records before 60 are gone (retention): 20; p2 is read from its earliest: 2
    assert (entry["lag"], entry["lag_note"]) == (32, None)
    assert (entry["partitions"], entry["end_offset"], entry["records"]) == (3, 187, 122)
    assert entry["ingest"] == {"checkpoint": "/cp/ingest", "batch": 3, "committed": True, "offset": 140}


@pytest.mark.parametrize(
    "offsets, answered, checkpoint, ingested, note",
    [
        ({"0": (0, 5)}, True, None, None, "not read by the ingest"),
        ({"0": (0, 5)}, True, "/cp", None, "no checkpoint yet"),
        (None, True, "/cp", None, "no such topic"),
        (None, False, "/cp", {"batch": 1, "committed": True, "offsets": {}}, "Kafka unreachable"),
    ],
)
def test_no_lag_says_why(offsets, answered: bool, checkpoint: str | None, ingested, note: str) -> None:
    entry = topic_entry("t", offsets, answered, checkpoint, ingested)
    assert (entry["lag"], entry["lag_note"]) == (None, note)
    assert entry["exists"] == (offsets is not None if answered else None)


def test_offsets_file_gives_topic_partition_next_offset() -> None:
    # as Spark writes it: version, batch metadata, then one line per source ("-": a source with nothing yet)
    text = (
        "v1\n"
        '{"batchWatermarkMs":0,"batchTimestampMs":1764187200000,"conf":{"spark.sql.shuffle.partitions":"2"}}\n'
        '{"clicks":{"2":11,"1":9,"0":28}}\n'
        "-\n"
        '{"job-events":{"0":4}}'
    )
    assert parse_offsets_file(text) == {"clicks": {"0": 28, "1": 9, "2": 11}, "job-events": {"0": 4}}
    assert parse_offsets_file("v1\n{}\n") == {}


def test_the_serving_models_engine_parameters_and_search_are_shown() -> None:
    status = healthy_status()
    serving = status["models"]["serving"]
    serving["params"] = {
        "engine": "implicit",
        "confidence": "log",
        "epsilon": 2.5,
        "alpha": 12.0,
        "reg_param": 0.75,
        "rank": 64,
        "max_iter": 15,
    }
    serving["search"] = {"trials": 87, "complete": 40, "pruned": 47, "seconds": 39.8}
    # the line wraps at the screen's width: compare the words
    text = " ".join(format_status(status).split())
    assert "implicit engine: log confidence (epsilon 2.5), alpha 12, lambda 0.75, rank 64, 15 iterations" in text
    assert "chosen by a search of 87 trials in 39.8 s" in text
    serving["search"], serving["params_source"] = None, "params of model 20261127T100000Z-abcd"
    assert "; params of model 20261127T100000Z-abcd" in " ".join(format_status(status).split())
    assert all(len(line) <= WIDTH for line in format_status(status).splitlines())
