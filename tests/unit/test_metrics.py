"""Each ranking metric on a small case worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jobrec.batch.core.metrics import (
    auc,
    average_precision_at_k,
    catalog_coverage,
    expected_percentile_rank,
    ndcg_at_k,
    percentile_ranks,
    precision_at_k,
    recall_at_k,
)

# ranked list [a=10, b=20, c=30, d=40, e=50]; relevant {20, 50, 99}: hits at ranks 2 and 5, 99 never returned
RANKED = [10, 20, 30, 40, 50]
RELEVANT = {20, 50, 99}


def test_precision_and_recall() -> None:
    assert precision_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 5)
    assert precision_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 2)
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, RELEVANT, 1) == 0.0


def test_average_precision() -> None:
    # hits at rank 2 (precision 1/2) and rank 5 (precision 2/5); divided by min(3, 5) = 3
    assert average_precision_at_k(RANKED, RELEVANT, 5) == pytest.approx((1 / 2 + 2 / 5) / 3)
    # at k = 2: one hit, precision 1/2, divided by min(3, 2) = 2
    assert average_precision_at_k(RANKED, RELEVANT, 2) == pytest.approx(0.25)


def test_ndcg() -> None:
    # DCG = 1/log2(3) + 1/log2(6); ideal (3 relevant, k = 5) = 1 + 1/log2(3) + 1/2
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(dcg / (1 + 1 / math.log2(3) + 0.5))
    assert ndcg_at_k([20, 50], {20, 50}, 10) == pytest.approx(1.0)
    assert ndcg_at_k([1, 2], {3}, 2) == 0.0


def test_auc() -> None:
    # items 0..4 with scores; item 4 is excluded (seen); relevant {1, 3}
    scores = np.array([0.9, 0.8, 0.1, 0.5, 5.0])
    # positives 0.8 and 0.5 against negatives 0.9 and 0.1: 0.8>0.1, 0.5>0.1 win; 0.8<0.9, 0.5<0.9 lose -> 2/4
    assert auc(scores, {1, 3}, {4}) == pytest.approx(0.5)
    assert auc(np.array([1.0, 1.0]), {0}, set()) == pytest.approx(0.5)  # a tie counts one half
    assert auc(np.array([3.0, 2.0, 1.0]), {0}, set()) == pytest.approx(1.0)


def test_expected_percentile_rank() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7])  # order: 1, 3, 2, 0 -> percentiles 0, 1/3, 2/3, 1
    ranks = percentile_ranks(scores, set())
    assert ranks == pytest.approx({1: 0.0, 3: 1 / 3, 2: 2 / 3, 0: 1.0})
    # held-out item 3 with r = 2 and item 0 with r = 1: (2 * 1/3 + 1 * 1) / 3
    assert expected_percentile_rank([({3: 2.0, 0: 1.0}, ranks)]) == pytest.approx((2 / 3 + 1) / 3)


def test_catalog_coverage() -> None:
    assert catalog_coverage([[1, 2, 3], [3, 4, 9]], 10, 2) == pytest.approx(4 / 10)  # {1, 2, 3, 4}
