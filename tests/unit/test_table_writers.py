"""One writer per table: the writer lock (flock, released by a SIGKILL) and which modules may create which tables."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobrec.batch.table_writers import (
    EVALUATE,
    INGEST,
    RETRAIN,
    TABLES_WRITTEN_BY,
    WriterBusy,
    hold_writer_lock,
    lock_path,
)
from jobrec.schemas import tables as t

PACKAGE = Path(__file__).resolve().parents[2]

# the modules that write each writer's tables; bench setups (synthetic tables for a measurement) are not writers
WRITER_MODULES = {
    INGEST: {"streaming/ingest.py", "streaming/job_events.py", "batch/jobs_table.py", "batch/backfill.py"},
    RETRAIN: {"batch/train.py", "batch/retrain.py", "batch/publish.py"},
    EVALUATE: {"batch/online_evaluation.py"},
}


def test_a_second_holder_is_refused_and_told_who_holds_the_lock(tmp_path: Path) -> None:
    with hold_writer_lock(str(tmp_path), INGEST, "ingest") as path:
        assert path == tmp_path.resolve() / "_writers" / "ingest.lock"
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid() and owner["command"] == "ingest"
        with pytest.raises(WriterBusy) as refused, hold_writer_lock(str(tmp_path), INGEST, "jobs load"):
            pass
        message = str(refused.value)
        assert message.startswith("jobs load: another process writes the ingest's tables")
        assert f"`jobrec ingest`, pid {os.getpid()} on" in message
        assert "events, dead_letters, interactions, jobs" in message
        # the other writer's tables have their own lock
        with hold_writer_lock(str(tmp_path), RETRAIN, "retrain"):
            pass
    # released on leaving
    with hold_writer_lock(str(tmp_path), INGEST, "load"):
        pass


def test_the_lock_of_a_process_killed_by_sigkill_is_free_at_once(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from jobrec.batch.table_writers import hold_writer_lock\n"
            f"with hold_writer_lock({str(tmp_path)!r}, 'retrain', 'retrain'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(WriterBusy, match=f"pid {holder.pid} on"),
            hold_writer_lock(str(tmp_path), RETRAIN, "publish"),
        ):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with hold_writer_lock(str(tmp_path), RETRAIN, "publish"):
            assert time.monotonic() - started < 1
    finally:
        holder.kill()
        holder.wait()


def test_object_storage_has_no_lock_file_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="jobrec.batch.table_writers")
    assert lock_path("s3a://bucket/checkpoints", INGEST) is None
    assert lock_path(f"file://{tmp_path}", INGEST) == tmp_path.resolve() / "_writers" / "ingest.lock"
    with hold_writer_lock("s3a://bucket/checkpoints", INGEST, "ingest") as path:
        assert path is None
    assert "no writer lock on object storage" in caplog.text


def test_an_unknown_writer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown writer 'speed'"), hold_writer_lock(str(tmp_path), "speed", "speed"):
        pass


def test_every_table_has_exactly_one_writer() -> None:
    # every table the project defines (its DDL), not a list kept by hand beside it
    for table in t.TABLE_DDL:
        owners = [w for w, owned in TABLES_WRITTEN_BY.items() if table in owned]
        assert len(owners) == 1, (table, owners)
    assert {table for owned in TABLES_WRITTEN_BY.values() for table in owned} == set(t.TABLE_DDL)


def _created_tables(source: str) -> set[str]:
    """The table constants (t.NAME) passed to ensure_delta_table in a module; '?' for any other argument."""
    created = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ensure_delta_table":
            arg = node.args[2] if len(node.args) > 2 else None
            if isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "t":
                created.add(getattr(t, arg.attr))
            else:
                created.add("?")
    return created


def test_only_a_tables_writer_creates_it() -> None:
    # readers go through read_delta_table, which never creates: a reader creating the table it reads would be a
    # second writer (and on object storage two drivers' first commits overwrite each other)
    writer_of = {module: writer for writer, modules in WRITER_MODULES.items() for module in modules}
    found: dict[str, set[str]] = {}
    for path in sorted([*PACKAGE.glob("batch/*.py"), *PACKAGE.glob("streaming/*.py")]):
        module = str(path.relative_to(PACKAGE))
        created = _created_tables(path.read_text())
        if created:
            found[module] = created
    assert found, "no ensure_delta_table call found: the scan is broken"
    for module, created in found.items():
        assert module in writer_of, f"{module} creates {sorted(created)} but writes none of its own tables"
        writer = writer_of[module]
        # a table name from a variable ('?', a loop over the factor tables) passes only in a writer's module
        assert created - {"?"} <= set(TABLES_WRITTEN_BY[writer]), (module, created)
