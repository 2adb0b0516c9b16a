"""Exact per-user re-solve: numba == NumPy twin == ``implicit``'s recalculate_user."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from online_als.kernels import gram, resolve_users, resolve_users_reference

BOTH = pytest.mark.parametrize("solve", [resolve_users, resolve_users_reference])


def random_csr(rng, nu, ni, nnz):
    u = np.sort(rng.integers(0, nu, nnz))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(u, minlength=nu)))).astype(np.int64)
    return indptr, rng.integers(0, ni, nnz).astype(np.int64)


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    nu=st.integers(1, 6),
    ni=st.integers(1, 6),
    k=st.integers(1, 8),
    nnz=st.integers(0, 40),
    reg=st.floats(0.05, 2.0),
)
def test_numba_matches_reference(seed, nu, ni, k, nnz, reg):
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 0.5, (ni, k)).astype(np.float32)
    indptr, indices = random_csr(rng, nu, ni, nnz)
    c = rng.uniform(0.0, 30.0, nnz).astype(np.float32)
    p = (rng.random(nnz) < 0.7).astype(np.float32)
    ok_a, ok_b = np.empty(nu, np.uint8), np.empty(nu, np.uint8)
    a = resolve_users(y, gram(y, reg), indptr, indices, c, p, ok_a)
    b = resolve_users_reference(y, gram(y, reg), indptr, indices, c, p, ok_b)
    assert a.dtype == np.float32 and a.shape == (nu, k)
    assert ok_a.tolist() == ok_b.tolist()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@BOTH
def test_solution_is_the_minimiser(solve):
    rng = np.random.default_rng(20)
    nu, ni, k = 5, 12, 6
    y = rng.normal(0, 0.5, (ni, k)).astype(np.float32)
    indptr, indices = random_csr(rng, nu, ni, 30)
    c = rng.uniform(0.2, 10.0, 30).astype(np.float32)
    p = (rng.random(30) < 0.5).astype(np.float32)
    x = solve(y, gram(y, 0.3), indptr, indices, c, p).astype(np.float64)
    y64 = y.astype(np.float64)
    for u in range(nu):  # gradient of the HKV objective vanishes: A x = b
        sl = slice(indptr[u], indptr[u + 1])
        yu, cu, pu = y64[indices[sl]], c[sl].astype(np.float64), p[sl]
        a = gram(y, 0.3) + (yu.T * (cu - 1)) @ yu
        np.testing.assert_allclose(a @ x[u], yu.T @ (cu * pu), atol=2e-5)


def test_matches_implicit_recalculate_user():
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(21)
    nu, ni, k, alpha, reg = 6, 15, 8, 2.5, 0.4
    y = rng.normal(0, 0.5, (ni, k)).astype(np.float32)
    indptr, indices = random_csr(rng, nu, ni, 40)
    indices = np.array(  # implicit wants distinct items per row
        [j for u in range(nu) for j in rng.choice(ni, indptr[u + 1] - indptr[u], replace=False)],
        np.int64,
    )
    r = rng.choice([1.0, 4.0, -4.0, 0.5, 8.0], len(indices)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OpenBLAS thread-count advice
        model = AlternatingLeastSquares(
            factors=k, regularization=reg, alpha=alpha, dtype=np.float32
        )
        model.item_factors = y
        ref = model.recalculate_user(np.arange(nu), sp.csr_matrix((r, indices, indptr), (nu, ni)))
    c = (alpha * np.abs(r)).astype(np.float32)
    p = (r > 0).astype(np.float32)
    ours = resolve_users(y, gram(y, reg), indptr, indices, c, p)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@BOTH
def test_empty_users_get_zero_and_non_finite_entries_are_skipped(solve):
    rng = np.random.default_rng(22)
    y = rng.normal(0, 0.5, (4, 3)).astype(np.float32)
    indptr = np.array([0, 0, 3], np.int64)
    indices = np.array([1, 2, 3], np.int64)
    c = np.array([2.0, np.nan, 3.0], np.float32)
    p = np.array([1.0, 1.0, np.inf], np.float32)
    ok = np.empty(2, np.uint8)
    x = solve(y, gram(y, 0.1), indptr, indices, c, p, ok)
    only = solve(y, gram(y, 0.1), np.array([0, 1]), indices[:1], c[:1], p[:1])
    assert ok.tolist() == [1, 1] and (x[0] == 0).all()
    np.testing.assert_allclose(x[1], only[0], rtol=1e-6)


@BOTH
def test_non_positive_definite_system_gives_zero_row_and_ok_zero(solve):
    y = np.ones((2, 2), np.float32)
    ok = np.empty(1, np.uint8)
    x = solve(y, -np.eye(2), np.array([0, 1]), np.array([0]), np.ones(1, np.float32),
              np.ones(1, np.float32), ok)  # fmt: skip
    assert ok[0] == 0 and (x == 0).all()


@BOTH
def test_bad_csr_raises(solve):
    y = np.ones((2, 2), np.float32)
    one = np.ones(1, np.float32)
    with pytest.raises(IndexError):
        solve(y, np.eye(2), np.array([0, 1]), np.array([2]), one, one)
    with pytest.raises(ValueError):
        solve(y, np.eye(2), np.array([0, 2]), np.array([0]), one, one)
    with pytest.raises(ValueError):
        solve(y, np.eye(3), np.array([0, 1]), np.array([0]), one, one)
