"""The chart's Grafana dashboard as the tests read it: its PromQL queries, the metric names each one selects, and
the sample names a Prometheus registry exposes (a family's name plus its type's suffixes)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "jobrec" / "dashboards" / "jobrec.json"

# what a scrape holds for a family of each type (prometheus_client's text format; _created beside counters and
# histograms)
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}
# PromQL words that are neither functions (followed by "(") nor metric names
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}


def dashboard_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of every panel, rows included."""
    out = []

    def walk(panels: Iterable[dict]) -> None:
        for p in panels:
            for t in p.get("targets") or []:
                out.append((p["title"], t["expr"]))
            walk(p.get("panels") or [])

    walk(json.loads(path.read_text())["panels"])
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label matchers, ranges and
    grouping clauses are removed, that are not followed by "(" (functions, aggregations) nor keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        if not m.group(2) and m.group(1) not in KEYWORDS:
            names.add(m.group(1))
    return names


def exposed_names(families: Iterable[tuple[str, str]]) -> set[str]:
    """Every sample name a scrape can hold, from (family name, type) pairs as prometheus_client reports them."""
    return {name + suffix for name, kind in families for suffix in SUFFIXES[kind]}
