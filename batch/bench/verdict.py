"""The rule every benchmark ends with: one that measured nothing exits non-zero, so it never passes for a fast one."""

from __future__ import annotations

import sys
from collections.abc import Mapping


def measured_something(name: str, counts: Mapping[str, float | int | None]) -> int:
    """The exit code of a benchmark: 0 if every count it rests on is positive, else 1 with the reason on stderr
    (a benchmark that measured nothing must not pass for a fast one)."""
    empty = [key for key, value in counts.items() if not value or value <= 0]
    if empty:
        print(
            f"jobrec bench {name}: measured nothing ({', '.join(f'{k}={counts[k]}' for k in empty)})", file=sys.stderr
        )
        return 1
    return 0
