"""A liveness signal for long-running processes: the main loop touches a file; a probe checks its age.

Kubernetes' exec liveness probe of the chart reads the file's mtime, so a stuck loop (not only a dead process)
gets the pod restarted. Without JOBREC_HEARTBEAT_FILE nothing is written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class Heartbeat:
    def __init__(self, path: str | None = None, every_seconds: float = 5.0):
        self.path = Path(path) if path else None
        self.every_seconds = every_seconds
        self._last = 0.0

    @classmethod
    def from_env(cls) -> Heartbeat:
        return cls(os.environ.get("JOBREC_HEARTBEAT_FILE"))

    def beat(self) -> None:
        if self.path is None or time.monotonic() - self._last < self.every_seconds:
            return
        self._last = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
