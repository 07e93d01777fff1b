"""Which process writes which Delta table, and the lock that keeps each set of tables to one writing process.

One writer per table, by design. Delta's default log store on S3 (S3SingleDriverLogStore) is correct only when all
commits to a table come from one driver: S3 has no put-if-absent that Delta uses, so two drivers committing the same
version at once both succeed and one commit is lost. Rather than a DynamoDB-backed log store, each table here has a
single writing process:

- the ingest (`jobrec ingest`, and the bootstrap commands `jobrec load` and `jobrec jobs load`, which refuse while
  an ingest runs) writes events, dead_letters, interactions and jobs;
- the retrain (`jobrec retrain`, `jobrec publish`) writes models, the factors and recommendations;
- the online evaluation (`jobrec evaluate --online`) writes online_evaluation.

Every other process only reads, and readers never create a table (`delta_tables.read_delta_table`).

At run time a writer holds `<checkpoints_root>/_writers/<writer>.lock` with an exclusive `flock` for as long as it
writes: a second one refuses to start and names the holder. The kernel drops the lock when its process dies, even
by SIGKILL, so a crashed writer never blocks its successor. flock needs a file system shared by the writers (a
local disk, or the chart's volume); on object storage there is none, and one writer is kept by the deployment: the
chart runs the ingest as a one-replica StatefulSet with a ReadWriteOncePod claim and the retrain as a CronJob with
`concurrencyPolicy: Forbid` (as a scheduled `jobrec evaluate --online` needs too).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from jobrec.schemas import tables as t

log = logging.getLogger(__name__)

INGEST, RETRAIN, EVALUATE = "ingest", "retrain", "evaluate"

TABLES_WRITTEN_BY: dict[str, tuple[str, ...]] = {
    INGEST: (t.EVENTS, t.DEAD_LETTERS, t.INTERACTIONS, t.JOBS),
    RETRAIN: (t.MODELS, t.USER_FACTORS, t.JOB_FACTORS, t.RECOMMENDATIONS),
    # its own lock: an evaluation reads the others' tables while they write, and never waits for a retrain
    EVALUATE: (t.ONLINE_EVALUATION,),
}

LOCKS_FOLDER = "_writers"


class WriterBusy(RuntimeError):
    """Another process holds the writer lock of these tables."""


def lock_path(checkpoints_root: str, writer: str) -> Path | None:
    """Where the writer lock lives; None when the checkpoints root is object storage (no flock there)."""
    if "://" in checkpoints_root and not checkpoints_root.startswith("file:"):
        return None
    root = checkpoints_root.removeprefix("file://").removeprefix("file:")
    return Path(root).resolve() / LOCKS_FOLDER / f"{writer}.lock"


@contextmanager
def hold_writer_lock(checkpoints_root: str, writer: str, command: str) -> Iterator[Path | None]:
    """Hold the lock of `writer`'s tables while inside; WriterBusy when another process holds it. `command` is
    recorded in the lock file, so that the refusal of a second writer names the first."""
    if writer not in TABLES_WRITTEN_BY:
        raise ValueError(f"unknown writer {writer!r}: one of {sorted(TABLES_WRITTEN_BY)}")
    path = lock_path(checkpoints_root, writer)
    if path is None:
        log.info(
            "%s: no writer lock on object storage (%s); the deployment keeps one %s writer",
            command,
            checkpoints_root,
            writer,
        )
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # not inherited by children (PEP 446): a JVM this process starts does not keep the lock after it dies
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            tables = ", ".join(TABLES_WRITTEN_BY[writer])
            raise WriterBusy(
                f"{command}: another process writes the {writer}'s tables ({tables}): {holder}. One process at a "
                f"time writes them (two Delta writers on object storage lose commits); stop that one first. "
                f"Lock: {path}"
            ) from None
        owner = {
            "command": command,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        log.info("%s holds the %s writer lock %s", command, writer, path)
        yield path
    finally:
        os.close(fd)  # releases the flock


def _describe(raw: bytes) -> str:
    try:
        owner = json.loads(raw)
        return f"`jobrec {owner['command']}`, pid {owner['pid']} on {owner['host']}, since {owner['since']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not said what it is yet"
