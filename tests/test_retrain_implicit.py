"""implicit wrapper: finite float32 factors, planted positives ranked high, alpha, warm start."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from online_als.retrain.implicit_fit import ImplicitParams, fit_implicit
from online_als.serving import fold_in_user, gram, top_n


def clustered(seed: int = 0, n_users: int = 120, n_items: int = 80, groups: int = 4):
    """Each user likes ~60% of its group's item block; one liked item per user held out."""
    rng = np.random.default_rng(seed)
    group_of_user = rng.integers(0, groups, n_users)
    block = n_items // groups
    dense = np.zeros((n_users, n_items), np.float32)
    held = np.empty(n_users, np.int64)
    for u, g in enumerate(group_of_user):
        items = np.arange(g * block, (g + 1) * block)
        liked = items[rng.random(block) < 0.6]
        dense[u, liked] = rng.integers(1, 4, liked.size)
        held[u] = rng.choice(liked)
        dense[u, held[u]] = 0.0
    return sp.csr_matrix(dense), held


PARAMS = ImplicitParams(factors=8, reg=0.1, alpha=2.0, iterations=10, num_threads=1, seed=3)


def test_finite_and_ranks_planted_positives() -> None:
    w, held = clustered()
    uf, itf = fit_implicit(w, PARAMS)
    assert uf.dtype == np.float32 and itf.dtype == np.float32
    assert uf.shape == (120, 8) and itf.shape == (80, 8)
    assert np.isfinite(uf).all() and np.isfinite(itf).all()
    hits = 0
    for u in range(w.shape[0]):
        rows, _ = top_n(uf[u], itf, 10, exclude=w[u].indices)
        hits += int(held[u] in rows)
    assert hits / w.shape[0] > 0.9  # a group block has 20 items, ~8 unseen


def test_deterministic_and_thread_independent() -> None:
    w, _ = clustered(1)
    a = fit_implicit(w, PARAMS)
    b = fit_implicit(w, ImplicitParams(**{**PARAMS.__dict__, "num_threads": 2}))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_alpha_is_multiplied_into_weights() -> None:
    w, _ = clustered(2)
    a = fit_implicit(w, PARAMS)
    b = fit_implicit(w * np.float32(2.0), ImplicitParams(**{**PARAMS.__dict__, "alpha": 1.0}))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)


def test_warm_start_is_used_and_not_mutated() -> None:
    w, _ = clustered(3)
    uf, itf = fit_implicit(w, PARAMS)
    keep = uf.copy(), itf.copy()
    zero = ImplicitParams(**{**PARAMS.__dict__, "iterations": 0})
    same = fit_implicit(w, zero, user_factors=uf, item_factors=itf)
    np.testing.assert_array_equal(same[0], uf)
    two = ImplicitParams(**{**PARAMS.__dict__, "iterations": 2})
    warm = fit_implicit(w, two, user_factors=uf, item_factors=itf)
    cold = fit_implicit(w, two)
    # warm start from the converged fit stays there; a 2-iteration cold fit is far from it
    assert np.abs(warm[1] - itf).max() < np.abs(cold[1] - itf).max()
    np.testing.assert_array_equal(keep[0], uf)
    with pytest.raises(ValueError):
        fit_implicit(w, zero)
    with pytest.raises(ValueError):
        fit_implicit(w, PARAMS, item_factors=itf[:5])


def test_negative_weight_pushes_item_down() -> None:
    w, _ = clustered(4)
    uf, itf = fit_implicit(w, PARAMS)
    liked = w[0].indices[0]
    neg = w.tolil()
    neg[0, liked] = -5.0
    uf2, itf2 = fit_implicit(neg.tocsr(), PARAMS)
    assert uf2[0] @ itf2[liked] < uf[0] @ itf[liked]


def test_fold_in_matches_implicit_recalculate_user() -> None:
    import implicit.cpu.als

    w, _ = clustered(5)
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=8, regularization=0.1, alpha=3.0, use_cg=False, iterations=3, num_threads=1,
        random_state=0,
    )  # fmt: skip
    model.fit(w, show_progress=False)
    rows = np.array([3, 7, 7, 40])  # a duplicate is summed
    vals = np.array([1.0, 2.0, 0.5, -1.0])
    ref = model.recalculate_user(0, sp.csr_matrix((np.array([1.0, 2.5, -1.0], np.float32),
                                                   np.array([3, 7, 40]), [0, 3]), shape=(1, 80)))  # fmt: skip
    x = fold_in_user(model.item_factors, gram(model.item_factors, 0.1), rows, vals,
                     alpha=3.0)  # fmt: skip
    np.testing.assert_allclose(x, ref, rtol=2e-3, atol=2e-4)
