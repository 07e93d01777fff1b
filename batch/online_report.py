"""The report of `jobrec evaluate --online`: report.md, results.json and hit_rate.png (hit rate and MRR over time
per source and model version) from the online_evaluation table's counts, in the style of `batch.report`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jobrec.batch.core.online_eval import OutcomeCounts, OutcomeGroup, count_outcomes, format_counts_table

PLOT = "hit_rate.png"
LINE_STYLES = {"batch": "-", "fold-in": "--", "fallback": ":"}


@dataclass(frozen=True)
class OnlineReport:
    """Counts per (source, model_version) and per source over the period, and per time bucket."""

    per_model_version: list[OutcomeCounts]
    per_source: list[OutcomeCounts]
    per_bucket: list[OutcomeCounts]


def summarise_groups(groups: Sequence[OutcomeGroup]) -> OnlineReport:
    return OnlineReport(
        per_model_version=count_outcomes(groups, per_bucket=False),
        per_source=count_outcomes(groups, per_bucket=False, per_model_version=False),
        per_bucket=count_outcomes(groups),
    )


def _record(c: OutcomeCounts) -> dict[str, Any]:
    record = asdict(c)
    record["bucket_start"] = c.bucket_start.isoformat() if c.bucket_start else None
    return {**record, "decided": c.decided, "hit_rate": c.hit_rate, "mrr": c.mrr}


def write_online_report(out_dir: Path, report: OnlineReport, facts: dict[str, Any]) -> Path:
    """report.md, results.json and the plot in `out_dir`; `facts` (window, event types, period, as_of, ...) head
    both. Returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(out_dir / PLOT, report.per_bucket)
    results = {
        **facts,
        "per_model_version": [_record(c) for c in report.per_model_version],
        "per_source": [_record(c) for c in report.per_source],
        "per_bucket": [_record(c) for c in report.per_bucket],
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    path = out_dir / "report.md"
    path.write_text(_markdown(report, facts))
    return path


def _markdown(report: OnlineReport, facts: dict[str, Any]) -> str:
    lines = [
        "# Online evaluation report",
        "",
        f"Lists generated from {facts['since']} to {facts['evaluated_at']}, each shown from its generated_at until "
        f"the user's next list or for {facts['window_hours']:g} h, whichever came first. A hit: the user had a "
        f"{_either(facts['event_types'])} event on one of its jobs meanwhile; its rank is the best rank among "
        f"those jobs. Lists whose span ends after {facts['as_of']} (events are taken as complete to then) are "
        "pending: neither hit nor miss. Hit rate = hits / decided lists; MRR = mean of 1 / rank of the hit over "
        "decided lists, a miss counting 0.",
        "",
        "## Per source",
        "",
        format_counts_table(report.per_source, per_model_version=False),
        "",
        "Sources are not an experiment: fold-in lists go to users who have just clicked, who are likelier to click "
        "again than the average user a batch list goes to. Compare a source with itself across model versions, or "
        "batch and fold-in lists of the same users, before reading one against the other.",
        "",
        "## Per source and model version",
        "",
        format_counts_table(report.per_model_version),
        "",
        f"![hit rate and MRR over time]({PLOT})",
        "",
        f"## Per {facts['bucket_hours']:g} h bucket (by generated_at, UTC)",
        "",
        "| bucket start | source | model version | decided | hits | hit rate | MRR | pending |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in report.per_bucket:
        rate = "-" if c.hit_rate is None else f"{c.hit_rate:.4f}"
        mrr = "-" if c.mrr is None else f"{c.mrr:.4f}"
        start = c.bucket_start.strftime("%Y-%m-%d %H:%M") if c.bucket_start else "-"
        lines.append(
            f"| {start} | {c.source} | {c.model_version or '-'} | {c.decided} | {c.hits} | {rate} | {mrr} | "
            f"{c.pending} |"
        )
    lines.append("")
    return "\n".join(lines)


def _either(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _plot(path: Path, per_bucket: Sequence[OutcomeCounts]) -> None:
    """Hit rate and MRR per bucket, a line per (source, model_version): the line style says the source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str | None], list[OutcomeCounts]] = {}
    for c in per_bucket:
        if c.decided:
            series.setdefault((c.source, c.model_version), []).append(c)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharex=True)
    for (source, version), points in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        when: list[datetime] = [p.bucket_start for p in points if p.bucket_start is not None]
        style = LINE_STYLES.get(source, "-.")
        label = f"{source} {version or '-'}"
        axes[0].plot(when, [p.hit_rate for p in points], style, marker="o", label=label)
        axes[1].plot(when, [p.mrr for p in points], style, marker="o", label=label)
    for ax, title in zip(axes, ("hit rate", "MRR"), strict=True):
        ax.set_title(f"{title} of decided lists, by generated_at")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelrotation=30)
    if series:
        axes[0].legend(fontsize="small")
    else:
        axes[0].text(0.5, 0.5, "no list decided yet", ha="center", transform=axes[0].transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
