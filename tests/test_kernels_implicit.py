"""Implicit fold-in kernel and gram helpers: numba == NumPy twin, exactness, guard."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_als.kernels import (
    foldin_update_batch,
    foldin_update_batch_reference,
    gram,
    gram_inverse,
    gram_inverse_reference,
    resolve_users,
)
from online_als.kernels import linalg as linalg_module

BOTH = pytest.mark.parametrize("kernel", [foldin_update_batch, foldin_update_batch_reference])


def run(kernel, x, y, u, i, c, p, gy, gx, update_items=True):
    x, y = x.copy(), y.copy()
    pred = np.full(len(u), -7.0, np.float32)
    applied = np.full(len(u), 9, np.uint8)
    count = kernel(x, y, u, i, c, p, gy, gx, update_items, pred, applied)
    return x, y, pred, applied, count


def random_case(rng, nu, ni, k, n, scale=0.5):
    x = rng.normal(0, scale, (nu, k)).astype(np.float32)
    y = rng.normal(0, scale, (ni, k)).astype(np.float32)
    u = rng.integers(0, nu, n).astype(np.int64)
    i = rng.integers(0, ni, n).astype(np.int64)
    return x, y, u, i


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    nu=st.integers(1, 4),
    ni=st.integers(1, 4),
    k=st.integers(1, 8),
    n=st.integers(0, 30),
    reg=st.floats(0.05, 2.0),
    update_items=st.booleans(),
    binary_p=st.booleans(),
)
def test_numba_matches_reference(seed, nu, ni, k, n, reg, update_items, binary_p):
    rng = np.random.default_rng(seed)
    x, y, u, i = random_case(rng, nu, ni, k, n)
    c = rng.uniform(0.0, 20.0, n).astype(np.float32)
    p = (rng.random(n) < 0.7 if binary_p else rng.uniform(-1, 2, n)).astype(np.float32)
    gy, gx = gram_inverse(y, reg), gram_inverse(x, reg)
    a = run(foldin_update_batch, x, y, u, i, c, p, gy, gx, update_items)
    b = run(foldin_update_batch_reference, x, y, u, i, c, p, gy, gx, update_items)
    assert a[4] == b[4] and a[3].tolist() == b[3].tolist()
    np.testing.assert_allclose(a[2], b[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-5)


def csr_of(u, n_users):
    order = np.argsort(u, kind="stable")
    return np.concatenate(([0], np.cumsum(np.bincount(u, minlength=n_users)))), order


@pytest.mark.parametrize("c,p", [(5.0, 1.0), (0.5, 1.0), (3.0, 0.0), (1.0, 1.0)])
def test_first_event_of_a_zero_user_is_the_exact_als_solve(c, p):
    rng = np.random.default_rng(10)
    k, ni = 6, 9
    y = rng.normal(0, 0.4, (ni, k)).astype(np.float32)
    x = np.zeros((ni, k), np.float32)  # one new user per item
    u = np.arange(ni, dtype=np.int64)
    cc, pp = np.full(ni, c, np.float32), np.full(ni, p, np.float32)
    folded, _, _, applied, _ = run(
        foldin_update_batch, x, y, u, u, cc, pp, gram_inverse(y, 0.2), np.eye(k), False
    )
    exact = resolve_users(y, gram(y, 0.2), np.arange(ni + 1), u, cc, pp)
    assert applied.all()
    np.testing.assert_allclose(folded, exact, rtol=1e-5, atol=1e-6)


def test_confidence_one_histories_are_exact_with_fixed_items():
    # With c = 1 every A_u equals G, so per-event fold-ins add up to the ALS solve.
    rng = np.random.default_rng(11)
    nu, ni, k, n = 4, 7, 5, 40
    _, y, u, i = random_case(rng, nu, ni, k, n)
    x = np.zeros((nu, k), np.float32)
    c = np.ones(n, np.float32)
    p = (rng.random(n) < 0.6).astype(np.float32)
    folded, y_after, _, applied, _ = run(
        foldin_update_batch, x, y, u, i, c, p, gram_inverse(y, 0.3), np.eye(k), False
    )
    indptr, order = csr_of(u, nu)
    exact = resolve_users(y, gram(y, 0.3), indptr, i[order], c[order], p[order])
    assert applied.all() and (y_after == y).all()
    np.testing.assert_allclose(folded, exact, rtol=1e-5, atol=1e-6)


def test_item_side_is_symmetric():
    rng = np.random.default_rng(12)
    x, y, _, _ = random_case(rng, 3, 2, 4, 0)
    u, i = np.array([1], np.int64), np.array([0], np.int64)
    c, p = np.array([4.0], np.float32), np.array([1.0], np.float32)
    gy, gx = gram_inverse(y, 0.1), gram_inverse(x, 0.1)
    xa, ya, *_ = run(foldin_update_batch, x, y, u, i, c, p, gy, gx, True)
    # Swapping the roles of users and items must give the same two vectors, swapped.
    yb, xb, *_ = run(foldin_update_batch, y, x, i, u, c, p, gx, gy, True)
    np.testing.assert_allclose(xa, xb, rtol=1e-6)
    np.testing.assert_allclose(ya, yb, rtol=1e-6)


def guard_case():
    rng = np.random.default_rng(13)
    x, y, _, _ = random_case(rng, 2, 2, 3, 0)
    u = np.array([0, 1, 0], np.int64)
    i = np.array([0, 1, 1], np.int64)
    c = np.array([2.0, 2.0, 2.0], np.float32)
    p = np.ones(3, np.float32)
    return x, y, u, i, c, p, gram_inverse(y, 0.1), gram_inverse(x, 0.1)


@BOTH
@pytest.mark.parametrize(
    "field,value", [("c", np.nan), ("c", np.inf), ("c", -1.0), ("p", np.nan), ("p", -np.inf)]
)
def test_guard_refuses_bad_inputs(kernel, field, value):
    x, y, u, i, c, p, gy, gx = guard_case()
    (c if field == "c" else p)[1] = value
    xa, ya, _, applied, count = run(kernel, x, y, u, i, c, p, gy, gx)
    keep = np.array([0, 2])
    xb, yb, *_ = run(kernel, x, y, u[keep], i[keep], c[keep], p[keep], gy, gx)
    assert applied.tolist() == [1, 0, 1] and count == 2
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


@BOTH
def test_guard_refuses_non_positive_denominator(kernel):
    # c = 0 and a (stale) gy_inv with q > 1 make 1 + (c - 1) q < 0: not applied.
    x, y, u, i, c, p, _, gx = guard_case()
    c[:] = 0.0
    gy = np.eye(3) * 1e4
    xa, ya, _, applied, count = run(kernel, x, y, u, i, c, p, gy, gx)
    assert count == 0 and not applied.any()
    np.testing.assert_array_equal(xa, x)
    np.testing.assert_array_equal(ya, y)


@BOTH
def test_guard_refuses_values_beyond_the_bound(kernel):
    x, y, u, i, c, p, _, _ = guard_case()
    huge = np.eye(3) * 1e9
    xa, ya, _, applied, _ = run(kernel, x, y, u, i, c * 0 + 1, p, huge, huge)
    assert not applied.any()
    np.testing.assert_array_equal(xa, x)
    np.testing.assert_array_equal(ya, y)


@BOTH
def test_out_of_range_rows_raise(kernel):
    x, y, u, i, c, p, gy, gx = guard_case()
    i[2] = 5
    with pytest.raises(IndexError):
        run(kernel, x, y, u, i, c, p, gy, gx)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 30), k=st.integers(1, 8))
def test_gram_inverse_matches_reference(seed, n, k):
    f = np.random.default_rng(seed).normal(0, 1, (n, k)).astype(np.float32)
    g = gram_inverse(f, 0.5)
    np.testing.assert_allclose(g, gram_inverse_reference(f, 0.5), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(g, g.T)
    assert g.dtype == np.float64 and g.flags.c_contiguous


def test_gram_is_chunked(monkeypatch):
    f = np.random.default_rng(14).normal(0, 1, (50, 4)).astype(np.float32)
    whole = gram(f, 0.1)
    monkeypatch.setattr(linalg_module, "_GRAM_CHUNK", 7)
    np.testing.assert_allclose(gram(f, 0.1), whole, rtol=1e-12)


def test_gram_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="reg > 0"):
        gram_inverse(np.zeros((3, 2), np.float32), 0.0)
    with pytest.raises(ValueError, match="NaN/Inf"):
        gram_inverse(np.array([[np.nan, 1.0]], np.float32), 0.1)
