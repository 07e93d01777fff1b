"""Grid search orders by validation NDCG and reports progress; the grid covers every combination."""

from __future__ import annotations

import io

from jobrec.batch.train import AlsParams
from jobrec.batch.tune import Grid, format_table, grid_search, progress_bar

BASE = AlsParams(rank=8, max_iter=5, reg_param=0.1, alpha=1.0, seed=1)


def test_grid_has_every_combination() -> None:
    points = Grid(rank=(8, 16), max_iter=(5,), reg_param=(0.1, 1.0), alpha=(1.0, 2.0, 3.0)).points(BASE)
    assert len(points) == 12 and len({(p.rank, p.reg_param, p.alpha) for p in points}) == 12
    assert all(p.seed == 1 for p in points)


def test_best_first_and_one_progress_line_per_point() -> None:
    points = Grid(rank=(8, 16), max_iter=(5,), reg_param=(0.1,), alpha=(1.0, 2.0)).points(BASE)
    # a made-up score that prefers rank 16 and alpha 1
    out = io.StringIO()
    rows = grid_search(points, lambda p: {"ndcg": p.rank / 100 - p.alpha / 1000}, out=out)
    assert (rows[0]["rank"], rows[0]["alpha"]) == (16, 1.0)
    assert [r["val_ndcg"] for r in rows] == sorted((r["val_ndcg"] for r in rows), reverse=True)
    assert out.getvalue().count("\n") == 4 and "[" + "#" * 24 + "] 4/4" in out.getvalue()
    assert format_table(rows, ("rank", "val_ndcg")).splitlines()[2] == "| 16 | 0.1590 |"


def test_progress_bar() -> None:
    assert progress_bar(1, 4, width=8) == "[##......] 1/4"
