"""Explicit SGD kernel: numba == NumPy twin, the update rule, and the NaN/Inf guard."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_als.kernels import GUARD_BOUND, sgd_update_batch, sgd_update_batch_reference

BOTH = pytest.mark.parametrize("kernel", [sgd_update_batch, sgd_update_batch_reference])


def make_case(rng: np.random.Generator, nu: int, ni: int, k: int, n: int) -> dict:
    return {
        "user_f": rng.normal(0, 0.5, (nu, k)).astype(np.float32),
        "user_b": rng.normal(0, 0.3, nu).astype(np.float32),
        "item_f": rng.normal(0, 0.5, (ni, k)).astype(np.float32),
        "item_b": rng.normal(0, 0.3, ni).astype(np.float32),
        "u_rows": rng.integers(0, nu, n).astype(np.int64),
        "i_rows": rng.integers(0, ni, n).astype(np.int64),
        "ratings": rng.uniform(-5, 5, n).astype(np.float32),
    }


def run(kernel, case: dict, mu=0.5, lr=0.05, reg=0.02, reg_bias=0.01, clip=10.0):
    c = {k: v.copy() for k, v in case.items()}
    n = len(c["u_rows"])
    pred = np.full(n, -7.0, np.float32)
    applied = np.full(n, 9, np.uint8)
    count = kernel(
        c["user_f"], c["user_b"], c["item_f"], c["item_b"], c["u_rows"], c["i_rows"],
        c["ratings"], mu, lr, reg, reg_bias, clip, pred, applied,
    )  # fmt: skip
    return c, pred, applied, count


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    nu=st.integers(1, 4),
    ni=st.integers(1, 4),
    k=st.integers(1, 9),
    n=st.integers(0, 40),
    lr=st.floats(0.0, 0.3),
    reg=st.floats(0.0, 0.5),
    reg_bias=st.floats(0.0, 0.5),
    clip=st.sampled_from([0.25, 1.0, 10.0]),
    mu=st.floats(-3.0, 3.0),
)
def test_numba_matches_reference(seed, nu, ni, k, n, lr, reg, reg_bias, clip, mu):
    # Few rows and many events: rows repeat within the batch, so order matters.
    case = make_case(np.random.default_rng(seed), nu, ni, k, n)
    a, pa, aa, ca = run(sgd_update_batch, case, mu, lr, reg, reg_bias, clip)
    b, pb, ab, cb = run(sgd_update_batch_reference, case, mu, lr, reg, reg_bias, clip)
    # Large lr with reg = 0 can diverge into the guard: both must refuse the same events.
    assert ca == cb and aa.tolist() == ab.tolist() and ca == int(aa.sum())
    np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-5)
    for key in ("user_f", "user_b", "item_f", "item_b"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


@BOTH
def test_single_event_follows_the_update_rule(kernel):
    case = make_case(np.random.default_rng(3), 2, 2, 4, 1)
    x, y = case["user_f"][case["u_rows"][0]], case["item_f"][case["i_rows"][0]]
    bu, bi = case["user_b"][case["u_rows"][0]], case["item_b"][case["i_rows"][0]]
    mu, lr, reg, rb, r = 0.5, 0.1, 0.03, 0.02, case["ratings"][0]
    pred = mu + bu + bi + x @ y
    e = float(np.clip(r - pred, -1.0, 1.0))
    out, p, applied, count = run(kernel, case, mu, lr, reg, rb, clip=1.0)
    assert count == 1 and applied[0] == 1
    assert p[0] == pytest.approx(pred, rel=1e-6)
    np.testing.assert_allclose(out["user_f"][case["u_rows"][0]], x + lr * (e * y - reg * x), 1e-6)
    np.testing.assert_allclose(out["item_f"][case["i_rows"][0]], y + lr * (e * x - reg * y), 1e-6)
    assert out["user_b"][case["u_rows"][0]] == pytest.approx(bu + lr * (e - rb * bu), rel=1e-6)
    assert out["item_b"][case["i_rows"][0]] == pytest.approx(bi + lr * (e - rb * bi), rel=1e-6)


@BOTH
def test_pred_out_is_the_prediction_before_each_event(kernel):
    case = make_case(np.random.default_rng(4), 1, 1, 3, 3)  # the same pair three times
    out, pred, _, _ = run(kernel, case)
    first = 0.5 + case["user_b"][0] + case["item_b"][0] + case["user_f"][0] @ case["item_f"][0]
    assert pred[0] == pytest.approx(first, rel=1e-6)
    assert pred[1] != pytest.approx(pred[0])  # the second event sees the first one's update


@BOTH
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30])
def test_guard_refuses_bad_ratings_and_leaves_arrays_untouched(kernel, bad):
    case = make_case(np.random.default_rng(5), 3, 3, 4, 5)
    case["ratings"][2] = bad
    ref = {k: v.copy() for k, v in case.items()}
    ref["ratings"] = np.delete(ref["ratings"], 2)
    ref["u_rows"], ref["i_rows"] = np.delete(ref["u_rows"], 2), np.delete(ref["i_rows"], 2)
    out, _, applied, count = run(kernel, case)
    expect, _, _, _ = run(kernel, ref)
    assert applied.tolist() == [1, 1, 0, 1, 1] and count == 4
    for key in ("user_f", "user_b", "item_f", "item_b"):
        np.testing.assert_array_equal(out[key], expect[key])


@BOTH
def test_guard_refuses_updates_beyond_the_bound(kernel):
    case = make_case(np.random.default_rng(6), 2, 2, 4, 3)
    out, _, applied, count = run(kernel, case, lr=GUARD_BOUND * 1e6)
    assert count == 0 and applied.tolist() == [0, 0, 0]
    for key in ("user_f", "user_b", "item_f", "item_b"):
        np.testing.assert_array_equal(out[key], case[key])


@BOTH
def test_guard_refuses_events_on_a_poisoned_row(kernel):
    case = make_case(np.random.default_rng(7), 2, 2, 3, 0)
    case["user_f"][0, 1] = np.nan
    case["u_rows"] = np.array([0, 1, 0], np.int64)
    case["i_rows"] = np.array([0, 1, 1], np.int64)
    case["ratings"] = np.array([1.0, 2.0, 3.0], np.float32)
    out, _, applied, _ = run(kernel, case)
    assert applied.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(out["item_f"][0], case["item_f"][0])
    assert np.isfinite(out["item_f"]).all()


@BOTH
@pytest.mark.parametrize("field,value", [("u_rows", 2), ("i_rows", -1)])
def test_out_of_range_rows_raise_before_anything_changes(kernel, field, value):
    case = make_case(np.random.default_rng(8), 2, 2, 3, 4)
    case[field][3] = value
    before = {k: v.copy() for k, v in case.items()}
    with pytest.raises(IndexError):
        kernel(
            case["user_f"], case["user_b"], case["item_f"], case["item_b"], case["u_rows"],
            case["i_rows"], case["ratings"], 0.0, 0.1, 0.0, 0.0, 5.0,
            np.empty(4, np.float32), np.empty(4, np.uint8),
        )  # fmt: skip
    for key, arr in before.items():
        np.testing.assert_array_equal(case[key], arr)


@BOTH
def test_mismatched_lengths_raise(kernel):
    case = make_case(np.random.default_rng(9), 2, 2, 3, 4)
    with pytest.raises(ValueError):
        kernel(
            case["user_f"], case["user_b"], case["item_f"], case["item_b"], case["u_rows"],
            case["i_rows"][:3], case["ratings"], 0.0, 0.1, 0.0, 0.0, 5.0,
            np.empty(4, np.float32), np.empty(4, np.uint8),
        )  # fmt: skip
