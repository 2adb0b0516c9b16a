"""Metric values on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from online_als.evaluation.metrics import (
    catalog_coverage,
    hit_matrix,
    mae,
    map_at_k,
    ndcg_at_k,
    per_user_ranking_metrics,
    precision_at_k,
    ranking_metrics_at_k,
    recall_at_k,
    rmse,
)
from tests.conftest import require_module

D2, D3, D4 = 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(5)


def test_rmse_mae() -> None:
    assert rmse([1, 2, 3, 4], [2, 2, 3, 2]) == pytest.approx(math.sqrt(5 / 4))
    assert mae([1, 2, 3, 4], [2, 2, 3, 2]) == pytest.approx(3 / 4)
    assert math.isnan(rmse([], []))
    with pytest.raises(ValueError):
        rmse([1, 2], [1])


def test_ranking_hand_example() -> None:
    # user 0: recs [1, 2, 3, 4], relevant {1, 3, 9}: hits at ranks 1 and 3
    # user 1: recs [5, 6, -1, -1], relevant {6}: hit at rank 2, padded list
    # user 2: no relevant items -> skipped
    recs = np.array([[1, 2, 3, 4], [5, 6, -1, -1], [7, 8, 9, 10]])
    rel = [[1, 3, 9], [6], []]
    k = 4
    p0, p1 = 2 / 4, 1 / 4
    r0, r1 = 2 / 3, 1.0
    n0 = (1 + D3) / (1 + D2 + D3)
    n1 = D2 / 1
    ap0 = (1 / 1 + 2 / 3) / 3
    ap1 = (1 / 2) / 1
    assert precision_at_k(recs, rel, k) == pytest.approx((p0 + p1) / 2)
    assert recall_at_k(recs, rel, k) == pytest.approx((r0 + r1) / 2)
    assert ndcg_at_k(recs, rel, k) == pytest.approx((n0 + n1) / 2)
    assert map_at_k(recs, rel, k) == pytest.approx((ap0 + ap1) / 2)
    m = ranking_metrics_at_k(recs, rel, k)
    assert m["n_users"] == 2
    assert m["precision_implicit"] == pytest.approx(3 / (3 + 1))
    per = per_user_ranking_metrics(recs, rel, k)
    assert np.isnan(per["ndcg"][2]) and per["hits"].tolist() == [2, 1, 0]


def test_k_truncates_and_duplicates_count_once() -> None:
    assert precision_at_k([[1, 1, 2]], [[1, 2]], k=2) == pytest.approx(0.5)
    hits, n_rel = hit_matrix([[1, 1, 2]], [[1, 1, 2]], k=3)
    assert hits.tolist() == [[True, False, True]] and n_rel.tolist() == [2]
    assert ndcg_at_k([[2, 1]], [[1, 2]], k=1) == pytest.approx(1.0)
    assert recall_at_k([[2, 1]], [[1, 2]], k=1) == pytest.approx(0.5)


def test_perfect_ranking_scores_one_and_sparse_input() -> None:
    rel = sp.csr_matrix(np.array([[0, 1, 1, 0], [1, 0, 0, 0]], dtype=np.float32))
    recs = np.array([[2, 1, 0], [0, 3, 1]])
    m = ranking_metrics_at_k(recs, rel, k=3)
    assert m["ndcg"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(1.0)
    assert m["precision"] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_ragged_recommendations() -> None:
    assert precision_at_k([[1], [2, 3]], [[1], [3]], k=2) == pytest.approx((0.5 + 0.5) / 2)


def test_catalog_coverage() -> None:
    assert catalog_coverage(np.array([[0, 1, 2], [2, 3, 4]]), 10) == pytest.approx(0.5)
    assert catalog_coverage(np.array([[0, 1, 2], [2, 3, 4]]), 10, k=1) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        catalog_coverage([[0]], 0)


def test_matches_implicit_ranking_metrics() -> None:
    implicit_eval = require_module("implicit.evaluation")

    class Fixed:
        def __init__(self, recs: np.ndarray) -> None:
            self.recs = recs

        def recommend(self, userid, user_items, N=10, filter_already_liked_items=True, **_):
            ids = self.recs[np.atleast_1d(userid)][:, :N]
            return ids, np.zeros(ids.shape, np.float32)

    rng = np.random.default_rng(3)
    n_users, n_items, k = 40, 30, 5
    recs = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :k].astype(np.int32)
    test = sp.random(n_users, n_items, density=0.15, random_state=4, format="csr")
    test.data[:] = 1.0
    train = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    theirs = implicit_eval.ranking_metrics_at_k(Fixed(recs), train, test, K=k, show_progress=False)
    ours = ranking_metrics_at_k(recs, test, k)
    assert ours["ndcg"] == pytest.approx(theirs["ndcg"])
    assert ours["map"] == pytest.approx(theirs["map"])
    assert ours["precision_implicit"] == pytest.approx(theirs["precision"])
