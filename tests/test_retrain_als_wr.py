"""ALS-WR: numba half-step == NumPy twin, monotone objective, planted recovery, warm start."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from online_als.retrain.als_wr import (
    AlsWrParams,
    als_wr_half_step,
    als_wr_half_step_reference,
    fit_als_wr,
    predict_pairs,
    rmse,
)
from online_als.serving import fold_in_user_explicit


def planted(seed: int = 0, n_users: int = 80, n_items: int = 60, k: int = 3, density=0.5):
    """A rank-k + biases matrix; returns (train csr, test (u, i, r))."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_users, k))
    y = rng.standard_normal((n_items, k))
    bu = 0.5 * rng.standard_normal(n_users)
    bi = 0.5 * rng.standard_normal(n_items)
    full = 3.0 + bu[:, None] + bi[None, :] + x @ y.T
    full += 0.01 * rng.standard_normal(full.shape)
    observed = rng.random(full.shape) < density
    test = rng.random(full.shape) < 0.2
    train = observed & ~test
    tu, ti = np.nonzero(test & ~train)
    csr = sp.csr_matrix((full[train].astype(np.float32), np.nonzero(train)), shape=full.shape)
    return csr, (tu, ti, full[tu, ti])


@pytest.mark.parametrize("fit_bias", [True, False])
def test_numba_half_step_matches_reference(fit_bias: bool) -> None:
    rng = np.random.default_rng(3)
    dense = sp.random(30, 20, density=0.3, random_state=4, dtype=np.float32).toarray()
    dense[[5, 17]] = 0.0  # two users without ratings
    csr = sp.csr_matrix(dense)
    csr.data = rng.integers(1, 6, csr.nnz).astype(np.float32)
    fixed_f = rng.standard_normal((20, 6)).astype(np.float32)
    fixed_b = rng.standard_normal(20).astype(np.float32)
    start_f = rng.standard_normal((30, 6)).astype(np.float32)
    start_b = rng.standard_normal(30).astype(np.float32)
    outs = []
    for fn in (als_wr_half_step, als_wr_half_step_reference):
        f, b = start_f.copy(), start_b.copy()
        failed = fn(csr.indptr, csr.indices, csr.data, fixed_f, fixed_b, 3.1, 0.07, 0.03,
                    fit_bias, f, b)  # fmt: skip
        assert failed == 0
        outs.append((f, b))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-5)
    empty = np.diff(csr.indptr) == 0
    assert empty.any()
    np.testing.assert_array_equal(outs[0][0][empty], start_f[empty])  # no ratings: unchanged
    if not fit_bias:
        assert np.all(outs[0][1][~empty] == 0)


def test_half_step_equals_explicit_fold_in() -> None:
    rng = np.random.default_rng(5)
    item_f = rng.standard_normal((15, 4)).astype(np.float32)
    item_b = rng.standard_normal(15).astype(np.float32)
    rows = np.array([1, 4, 9, 12])
    r = np.array([4.0, 2.0, 5.0, 3.0], np.float32)
    f, b = np.zeros((1, 4), np.float32), np.zeros(1, np.float32)
    als_wr_half_step(np.array([0, 4]), rows.astype(np.int32), r, item_f, item_b, 3.5, 0.1, 0.2,
                     True, f, b)  # fmt: skip
    x, bias = fold_in_user_explicit(item_f, item_b, 3.5, rows, r, reg=0.1, reg_bias=0.2)
    np.testing.assert_allclose(x, f[0], rtol=1e-4, atol=1e-5)
    assert bias == pytest.approx(float(b[0]), rel=1e-4, abs=1e-5)


def test_monotone_and_recovers_planted_matrix() -> None:
    csr, (tu, ti, tr) = planted()
    history: list[float] = []
    model = fit_als_wr(
        csr,
        AlsWrParams(factors=3, reg=0.002, iterations=25, seed=1),
        track_objective=True,
        callback=lambda _it, m: history.append(rmse(csr, m)),
    )
    obj = np.array(model.objective)
    assert np.all(np.diff(obj) <= 1e-6 * obj[:-1])  # each half-step minimises exactly
    assert np.all(np.diff(history) <= 1e-6)
    assert history[-1] < 0.05 < history[0]
    pred = predict_pairs(model.users.vectors, model.users.biases, model.items.vectors,
                         model.items.biases, model.global_mean, tu, ti)  # fmt: skip
    held_out = float(np.sqrt(np.mean((pred - tr) ** 2)))
    assert held_out < 0.1, held_out  # signal std is ~2
    for arr in (model.users.vectors, model.items.vectors, model.users.biases, model.items.biases):
        assert arr.dtype == np.float32 and np.isfinite(arr).all()


def test_warm_start_converges_faster_and_inputs_untouched() -> None:
    csr, _ = planted(seed=2)
    params = AlsWrParams(factors=3, reg=0.01, iterations=30, seed=0)
    base = fit_als_wr(csr, params)
    # "new data": the same ratings, each moved a little away from the mean
    extra = csr.copy()
    extra.data = extra.data + np.float32(0.05) * np.sign(extra.data - 3)
    few = AlsWrParams(factors=3, reg=0.01, iterations=2, seed=0)
    warm_in = [a.copy() for a in (base.users.vectors, base.items.vectors, base.users.biases,
                                  base.items.biases)]  # fmt: skip
    warm = fit_als_wr(extra, few, user_factors=warm_in[0], item_factors=warm_in[1],
                      user_bias=warm_in[2], item_bias=warm_in[3], track_objective=True)  # fmt: skip
    cold = fit_als_wr(extra, few, track_objective=True)
    full = fit_als_wr(extra, AlsWrParams(factors=3, reg=0.01, iterations=30), track_objective=True)
    assert warm.objective[-1] < cold.objective[-1]
    assert warm.objective[-1] <= 1.01 * full.objective[-1]
    np.testing.assert_array_equal(warm_in[1], base.items.vectors)  # not mutated


def test_no_bias_mode_and_validation() -> None:
    csr, _ = planted(seed=3)
    m = fit_als_wr(csr, AlsWrParams(factors=2, iterations=3, biases=False, global_mean=3.0))
    assert m.global_mean == 3.0 and not m.users.biases.any() and not m.items.biases.any()
    with pytest.raises(ValueError):
        AlsWrParams(reg=0.0)
    with pytest.raises(ValueError):
        fit_als_wr(csr, AlsWrParams(factors=2), item_factors=np.zeros((2, 2)))
    bad = csr.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError):
        fit_als_wr(bad, AlsWrParams(factors=2))


def test_deterministic_over_threads() -> None:
    csr, _ = planted(seed=4)
    a = fit_als_wr(csr, AlsWrParams(factors=3, iterations=4, num_threads=1))
    b = fit_als_wr(csr, AlsWrParams(factors=3, iterations=4, num_threads=2))
    np.testing.assert_array_equal(a.items.vectors, b.items.vectors)
