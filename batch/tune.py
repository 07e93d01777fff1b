"""Tuning: a grid over the ALS parameters, each point trained on the training split and scored by NDCG@k on
the validation split; never on test. Prints a progress line per point and returns the results table."""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace

from jobrec.batch.train import AlsParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    rank: Sequence[int] = (32, 64)
    max_iter: Sequence[int] = (10,)
    reg_param: Sequence[float] = (0.05, 0.2)
    alpha: Sequence[float] = (5.0, 20.0, 40.0)
    confidence: Sequence[str] = ("linear",)
    half_life_days: Sequence[float] = (0.0,)

    def points(self, base: AlsParams) -> list[AlsParams]:
        return [
            replace(base, rank=r, max_iter=i, reg_param=lam, alpha=a, confidence=c, half_life_days=h)
            for r, i, lam, a, c, h in itertools.product(
                self.rank, self.max_iter, self.reg_param, self.alpha, self.confidence, self.half_life_days
            )
        ]


def progress_bar(done: int, total: int, width: int = 24) -> str:
    filled = round(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def grid_search(
    points: Iterable[AlsParams], score: Callable[[AlsParams], dict[str, float]], out=sys.stderr
) -> list[dict[str, object]]:
    """Score every point; returns rows (params + metrics + seconds), best validation NDCG first."""
    points = list(points)
    rows = []
    for n, params in enumerate(points, start=1):
        started = time.monotonic()
        metrics = score(params)
        row = {
            **asdict(params),
            **{f"val_{k}": v for k, v in metrics.items()},
            "seconds": round(time.monotonic() - started, 1),
        }
        rows.append(row)
        print(
            f"{progress_bar(n, len(points))} rank={params.rank} iter={params.max_iter} reg={params.reg_param} "
            f"alpha={params.alpha} conf={params.confidence} half-life={params.half_life_days}: "
            f"NDCG {metrics['ndcg']:.4f} ({row['seconds']} s)",
            file=out,
            flush=True,
        )
    return sorted(rows, key=lambda r: -float(r["val_ndcg"]))


def format_table(rows: list[dict[str, object]], columns: Sequence[str]) -> str:
    """A Markdown table of the rows."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in columns) + " |")
    return "\n".join(lines)
