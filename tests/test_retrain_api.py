"""retrain(): both modes from chunks, warm start by id (WarmStart or ModelState), to_state."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.factors import Factors
from online_als.init import ITEM_SALT, init_vectors
from online_als.retrain import (
    AlsWrParams,
    ImplicitParams,
    WarmStart,
    build_matrix,
    retrain,
)
from online_als.retrain.als_wr import predict_pairs


def _explicit_chunks(seed: int, n: int = 3000):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((50, 3))
    y = rng.standard_normal((40, 3))
    u = rng.integers(0, 50, n)
    i = rng.integers(0, 40, n)
    r = np.clip(3 + np.einsum("ij,ij->i", x[u], y[i]), 1, 5).astype(np.float32)
    ids_u = np.array([f"u{j}" for j in u])
    ids_i = np.array([f"i{j}" for j in i])
    return [(ids_u[s : s + 500], ids_i[s : s + 500], r[s : s + 500]) for s in range(0, n, 500)]


def test_explicit_retrain_result_and_state_round_trip() -> None:
    m = build_matrix(_explicit_chunks(0), "last")
    res = retrain("explicit", m, AlsWrParams(factors=3, iterations=8))
    assert m.users is not None and m.items is not None
    assert res.mode == "explicit" and res.users.ids is m.users.ids and res.items.ids is m.items.ids
    assert set(res.seconds) == {"build_matrix", "warm_start", "fit", "check"}
    assert res.users.vectors.shape == (len(m.users), 3)
    assert res.global_mean == pytest.approx(float(m.matrix.data.mean()), rel=1e-6)
    state = res.to_state(seed=5)
    assert state.users.ids == res.users.ids and state.global_mean == res.global_mean
    assert state.n_ratings == m.matrix.nnz and state.hyper["factors"] == 3
    assert state.hyper["mode"] == "explicit"
    np.testing.assert_array_equal(state.item_factors, res.items.vectors)
    np.testing.assert_array_equal(state.user_bias, res.users.biases)


def test_warm_start_from_model_state_aligns_by_id() -> None:
    first = build_matrix(_explicit_chunks(1), "last")
    params = AlsWrParams(factors=3, iterations=10)
    state = retrain("explicit", first, params).to_state(seed=9)
    # the next matrix meets items in another order, plus a new item
    chunks = [(c[0][::-1], c[1][::-1], c[2][::-1]) for c in _explicit_chunks(1)]
    chunks.append((np.array(["u0"]), np.array(["brand-new"]), np.array([4.0], np.float32)))
    second = build_matrix(chunks, "last")
    assert second.items is not None and second.items.ids != state.items.ids
    zero = AlsWrParams(factors=3, iterations=0)
    res = retrain("explicit", second, zero, warm_start=state)
    for row, item in enumerate(second.items.ids):
        if item == "brand-new":
            want = init_vectors([item], 3, 9, zero.init_scale, salt=ITEM_SALT)[0]
            np.testing.assert_array_equal(res.items.vectors[row], want)
            assert res.items.biases[row] == 0.0
        else:
            j = state.items.row(item)
            np.testing.assert_array_equal(res.items.vectors[row], state.item_factors[j])
            assert res.items.biases[row] == state.item_bias[j]
    # a 2-iteration partial retrain from the state beats a 2-iteration cold one
    two = AlsWrParams(factors=3, iterations=2)
    part = retrain("explicit", second, two, warm_start=state)
    cold = retrain("explicit", second, two)
    assert _train_rmse(second.matrix, part) < _train_rmse(second.matrix, cold)


def _train_rmse(csr, res) -> float:
    u = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    pred = predict_pairs(res.users.vectors, res.users.biases, res.items.vectors,
                         res.items.biases, res.global_mean, u, csr.indices)  # fmt: skip
    return float(np.sqrt(np.mean((pred - csr.data) ** 2)))


def test_implicit_retrain_with_row_warm_start() -> None:
    rng = np.random.default_rng(2)
    chunks = [(rng.integers(0, 30, 200), rng.integers(0, 20, 200), None) for _ in range(3)]
    m = build_matrix(chunks, "sum", ids_are_rows=True)
    params = ImplicitParams(factors=4, iterations=3, num_threads=1)
    res = retrain("implicit", m, params)
    assert res.users.ids is None and res.global_mean == 0.0 and not res.items.biases.any()
    # ids None: matched by row; rows 10.. are "new"
    ws = WarmStart(Factors(None, res.users.vectors[:10], np.zeros(10, np.float32)),
                   Factors(None, res.items.vectors, np.zeros(len(res.items), np.float32)))
    again = retrain("implicit", m, ImplicitParams(factors=4, iterations=0), warm_start=ws)
    np.testing.assert_array_equal(again.users.vectors[:10], res.users.vectors[:10])
    assert np.isfinite(again.users.vectors).all()
    with pytest.raises(ValueError):
        res.to_state()


def test_bad_arguments() -> None:
    m = build_matrix([(["a"], ["x"], [1.0])], "sum")
    with pytest.raises(TypeError):
        retrain("implicit", m, AlsWrParams())
    with pytest.raises(TypeError):
        retrain("explicit", m, ImplicitParams())
    ws = WarmStart(Factors(["a"], np.zeros((1, 5), np.float32), np.zeros(1, np.float32)),
                   Factors(None, np.zeros((1, 5), np.float32), np.zeros(1, np.float32)))
    with pytest.raises(ValueError):
        retrain("explicit", m, AlsWrParams(factors=3), warm_start=ws)
