"""The quality gate: a retrain is published only if it ranks held-out clicks about as well as the serving model
and better than popularity. Otherwise the serving model stays, and the models table and the log say why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str


def decide(
    candidate_ndcg: float, popularity_ndcg: float, serving_ndcg: float | None, tolerance: float, k: int
) -> GateDecision:
    """Publish when candidate > popularity and candidate >= serving - tolerance (validation NDCG@k)."""
    if not candidate_ndcg > popularity_ndcg:
        return GateDecision(
            False, f"validation NDCG@{k} {candidate_ndcg:.4f} does not beat popularity's {popularity_ndcg:.4f}"
        )
    if serving_ndcg is not None and candidate_ndcg < serving_ndcg - tolerance:
        return GateDecision(
            False,
            f"validation NDCG@{k} {candidate_ndcg:.4f} is below the serving model's {serving_ndcg:.4f} "
            f"minus the tolerance {tolerance}",
        )
    against = f", serving {serving_ndcg:.4f}" if serving_ndcg is not None else ", no serving model yet"
    return GateDecision(True, f"validation NDCG@{k} {candidate_ndcg:.4f} (popularity {popularity_ndcg:.4f}{against})")
