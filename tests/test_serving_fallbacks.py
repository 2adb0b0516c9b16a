"""Cold start (popular items, explicit fallbacks), fold-in, and 'because' explanations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from online_als.idmap import IdMap
from online_als.serving import (
    because,
    fold_in_user,
    fold_in_user_explicit,
    gram,
    item_stats,
    popular_items,
    predict_explicit,
)


def test_popular_items_for_unknown_user() -> None:
    m = sp.csr_matrix(np.array([[1, 1, 0, 1], [0, 1, 0, 1], [0, 1, 0, 0]], dtype=np.float32))
    st = item_stats(m)
    assert st.count.tolist() == [1, 3, 0, 2]
    rows, counts = popular_items(st.count, 3)
    assert rows.tolist() == [1, 3, 0] and counts.tolist() == [3, 2, 1]
    assert popular_items(st.count, 2, exclude=[1])[0].tolist() == [3, 0]
    allow = np.array([True, False, True, True])
    assert popular_items(st.count, 2, allow=allow)[0].tolist() == [3, 0]


def test_explicit_fallbacks_for_unknown_ids() -> None:
    ratings = sp.csr_matrix(np.array([[5, 0, 3], [4, 0, 0]], dtype=np.float32))
    st = item_stats(ratings)
    assert st.global_mean == 4.0 and np.isnan(st.mean[1]) and st.mean[0] == 4.5
    damped = item_stats(ratings, damping=2.0)
    assert damped.mean[2] == pytest.approx((3 + 2 * 4.0) / 3)
    users, items = IdMap(["a", "b"]), IdMap(["x", "y", "z"])
    uf = np.ones((2, 2), np.float32)
    itf = np.full((3, 2), 0.5, np.float32)
    ub = np.array([0.1, -0.1], np.float32)
    ib = np.array([0.2, 0.0, -0.3], np.float32)
    u = users.rows_for(["a", "nobody", "b", "nobody", "nobody"], add=False)
    i = items.rows_for(["x", "x", "new", "new", "y"], add=False)
    p = predict_explicit(u, i, uf, ub, itf, ib, 4.0, item_mean=st.mean)
    # known pair; unknown user -> item mean; unknown item -> mu + b_u; both -> mu;
    # unknown user + item without a mean -> mu + b_i
    np.testing.assert_allclose(p, [4.0 + 0.1 + 0.2 + 1.0, 4.5, 3.9, 4.0, 4.0], rtol=1e-6)


def test_implicit_fold_in_is_the_exact_solve() -> None:
    rng = np.random.default_rng(0)
    item_f = rng.standard_normal((30, 4)).astype(np.float32)
    g = gram(item_f, 0.5)
    rows, vals = np.array([2, 9, 11]), np.array([1.0, 3.0, -2.0])
    x = fold_in_user(item_f, g, rows, vals, alpha=2.0).astype(np.float64)
    # gradient of the HKV objective at x is 0: sum_all c (p - y.x) y - reg x
    c = np.ones(30)
    p = np.zeros(30)
    c[rows] = np.abs(2.0 * vals)
    p[rows] = vals > 0
    y = item_f.astype(np.float64)
    grad = y.T @ (c * (p - y @ x)) - 0.5 * x
    assert np.abs(grad).max() < 1e-4
    assert not fold_in_user(item_f, g, [], []).any()


def test_explicit_fold_in_keeps_last_rating() -> None:
    rng = np.random.default_rng(1)
    item_f = rng.standard_normal((10, 3)).astype(np.float32)
    item_b = np.zeros(10, np.float32)
    a = fold_in_user_explicit(item_f, item_b, 3.0, [1, 2, 1], [1.0, 4.0, 5.0], reg=0.1)
    b = fold_in_user_explicit(item_f, item_b, 3.0, [2, 1], [4.0, 5.0], reg=0.1)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    assert a[1] == pytest.approx(b[1])
    assert fold_in_user_explicit(item_f, item_b, 3.0, [], [], reg=0.1)[1] == 0.0


def test_because_decomposes_the_fold_in_score() -> None:
    rng = np.random.default_rng(2)
    item_f = rng.standard_normal((40, 5)).astype(np.float32)
    g = gram(item_f, 0.2)
    hist, vals = np.array([1, 4, 8, 15, 22]), np.array([1.0, 2.0, 1.0, 5.0, -1.0])
    x = fold_in_user(item_f, g, hist, vals, alpha=3.0)
    ex = because(x, hist, item_f, 30, 3, history_values=vals, gram_reg=g, alpha=3.0)
    assert ex.score == pytest.approx(float(x @ item_f[30]), rel=1e-4, abs=1e-5)
    full = because(x, hist, item_f, 30, 10, history_values=vals, gram_reg=g, alpha=3.0)
    assert full.contributions.sum() == pytest.approx(ex.score, rel=1e-4, abs=1e-5)
    assert ex.rows.tolist() == full.rows[:3].tolist() and 22 in full.rows  # -> 0 contribution
    assert np.all(np.diff(full.contributions) <= 0)


def test_because_cosine_mode() -> None:
    item_f = np.array([[1, 0], [0, 1], [0.7, 0.7], [1, 0.05]], dtype=np.float32)
    ex = because(np.array([2.0, 0.0]), [0, 1, 2], item_f, 3, 2, history_values=[1, 1, 2])
    assert ex.rows.tolist() == [2, 0]  # 2 * cos(45deg-ish) > 1 * cos(~3deg)
    assert ex.score == pytest.approx(2.0)
