"""Adaptive explicit kernel: numba == NumPy twin, the update rule, sessions, the guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_als.adaptive import AdaptiveModel, AdaptiveParams
from online_als.kernels.explicit_adaptive import (
    adaptive_update_batch,
    adaptive_update_batch_reference,
    init_item_aux,
    init_user_aux,
    pack_params,
)

BOTH = pytest.mark.parametrize("kernel", [adaptive_update_batch, adaptive_update_batch_reference])


def make_case(rng: np.random.Generator, nu: int, ni: int, k: int, n: int, implicit: bool,
              acc: float = 0.1) -> dict:  # fmt: skip
    ua = init_user_aux(nu, k, implicit, acc)
    ia = init_item_aux(rng.normal(0, 0.1, (ni, k)).astype(np.float32), implicit, acc)
    return {
        "user_f": rng.normal(0, 0.5, (nu, k)).astype(np.float32),
        "user_b": rng.normal(0, 0.3, nu).astype(np.float32),
        "user_aux": ua,
        "item_f": rng.normal(0, 0.5, (ni, k)).astype(np.float32),
        "item_b": rng.normal(0, 0.3, ni).astype(np.float32),
        "item_aux": ia,
        "u_rows": rng.integers(0, nu, n).astype(np.int64),
        "i_rows": rng.integers(0, ni, n).astype(np.int64),
        "ratings": rng.uniform(0.5, 5, n).astype(np.float32),
        "times": np.sort(rng.integers(0, 4 * 3600, n)).astype(np.int64),
    }


def run(kernel, case: dict, hp: np.ndarray, mu: float = 3.5):
    c = {k: v.copy() for k, v in case.items()}
    n = len(c["u_rows"])
    pred = np.full(n, -7.0, np.float32)
    applied = np.full(n, 9, np.uint8)
    count = kernel(
        c["user_f"], c["user_b"], c["user_aux"], c["item_f"], c["item_b"], c["item_aux"],
        c["u_rows"], c["i_rows"], c["ratings"], c["times"], mu, hp, pred, applied,
    )  # fmt: skip
    return c, pred, applied, count


def hp_of(implicit: bool, lr=0.1, lr_b=0.2, reg=0.02, reg_b=0.1, clip=5.0, s_lr=0.1,
          s_reg=1.0, s_sec=3600.0, z_lr=0.05, z_reg=0.02) -> np.ndarray:  # fmt: skip
    return pack_params(lr, lr_b, reg, reg_b, clip, s_lr, s_reg, s_sec, implicit, z_lr, z_reg)


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    nu=st.integers(1, 4),
    ni=st.integers(1, 4),
    k=st.integers(1, 9),
    n=st.integers(0, 40),
    implicit=st.booleans(),
    lr=st.floats(0.001, 0.5),
    reg=st.floats(0.0, 0.5),
    s_sec=st.sampled_from([0.0, 60.0, 3600.0]),
    clip=st.sampled_from([0.25, 1.0, 10.0]),
)
def test_numba_matches_reference(seed, nu, ni, k, n, implicit, lr, reg, s_sec, clip):
    # Few rows and many events: rows repeat within the batch, so order matters.
    case = make_case(np.random.default_rng(seed), nu, ni, k, n, implicit)
    hp = hp_of(implicit, lr=lr, lr_b=2 * lr, reg=reg, clip=clip, s_sec=s_sec)
    a, pa, aa, ca = run(adaptive_update_batch, case, hp)
    b, pb, ab, cb = run(adaptive_update_batch_reference, case, hp)
    assert ca == cb and aa.tolist() == ab.tolist() and ca == int(aa.sum())
    np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-5)
    for key in ("user_f", "user_b", "user_aux", "item_f", "item_b", "item_aux"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5, err_msg=key)


@BOTH
def test_single_event_follows_the_update_rule(kernel):
    k, acc = 4, 0.1
    case = make_case(np.random.default_rng(3), 1, 1, k, 1, implicit=False, acc=acc)
    case["times"][:] = 7300  # hour 2
    x, y = case["user_f"][0].astype(float), case["item_f"][0].astype(float)
    bu, bi, r = float(case["user_b"][0]), float(case["item_b"][0]), float(case["ratings"][0])
    hp = hp_of(False)
    pred = 3.5 + bu + bi + x @ y  # new session: the session bias starts at 0
    e = float(np.clip(r - pred, -5, 5))
    out, p, applied, count = run(kernel, case, hp)
    assert count == 1 and applied[0] == 1 and p[0] == pytest.approx(pred, rel=1e-6)
    gx, gy = e * y - 0.02 * x, e * x - 0.02 * y
    np.testing.assert_allclose(out["user_f"][0], x + 0.1 * gx / np.sqrt(acc + gx**2), 1e-5)
    np.testing.assert_allclose(out["item_f"][0], y + 0.1 * gy / np.sqrt(acc + gy**2), 1e-5)
    g = e - 0.1 * bu
    assert out["user_b"][0] == pytest.approx(bu + 0.2 * g / math.sqrt(acc + g * g), rel=1e-5)
    np.testing.assert_allclose(out["user_aux"][0, :k], acc + gx**2, 1e-5)
    assert out["user_aux"][0, k + 1] == 2.0  # session id: hour 2
    assert out["user_aux"][0, k + 2] == pytest.approx(0.1 * e, rel=1e-5)


@BOTH
def test_session_bias_restarts_in_a_new_session(kernel):
    case = make_case(np.random.default_rng(5), 1, 3, 4, 3, implicit=False)
    case["u_rows"][:] = 0
    case["i_rows"] = np.arange(3, dtype=np.int64)
    case["times"] = np.array([10, 20, 7200], np.int64)  # hour 0, hour 0, hour 2
    hp = hp_of(False, lr=1e-9, lr_b=1e-9)  # factors and biases all but frozen
    _, pred, _, _ = run(kernel, case, hp)
    base = [3.5 + case["user_b"][0] + case["item_b"][i] + case["user_f"][0] @ case["item_f"][i]
            for i in range(3)]  # fmt: skip
    e0 = case["ratings"][0] - base[0]
    assert pred[1] == pytest.approx(base[1] + 0.1 * e0, abs=1e-5)  # same hour: carried
    assert pred[2] == pytest.approx(base[2], abs=1e-5)  # new hour: back to 0


@BOTH
def test_implicit_set_includes_the_item_being_rated(kernel):
    k = 3
    case = make_case(np.random.default_rng(7), 1, 1, k, 1, implicit=True)
    z = case["item_aux"][0, k + 1 :].astype(float)
    pred_expected = (3.5 + case["user_b"][0] + case["item_b"][0]
                     + (case["user_f"][0] + z) @ case["item_f"][0])  # n = 1: s/sqrt(1) = z
    out, pred, _, _ = run(kernel, case, hp_of(True))
    assert pred[0] == pytest.approx(pred_expected, abs=1e-5)
    assert out["user_aux"][0, 2 * k + 3] == 1.0  # the count


@BOTH
def test_guard_refuses_and_writes_nothing(kernel):
    case = make_case(np.random.default_rng(11), 2, 2, 4, 3, implicit=True)
    case["ratings"][1] = np.nan
    out, _, applied, count = run(kernel, case, hp_of(True))
    assert applied.tolist()[1] == 0
    case2 = {k: v.copy() for k, v in case.items()}
    for key in ("u_rows", "i_rows", "ratings", "times"):
        case2[key] = case[key][[0, 2]]
    out2, _, _, _ = run(kernel, case2, hp_of(True))
    for key in ("user_f", "user_b", "user_aux", "item_f", "item_b", "item_aux"):
        np.testing.assert_array_equal(out[key], out2[key], err_msg=key)


@BOTH
def test_bad_rows_and_widths_raise(kernel):
    case = make_case(np.random.default_rng(1), 2, 2, 4, 2, implicit=False)
    case["u_rows"][0] = 5
    with pytest.raises(IndexError):
        run(kernel, case, hp_of(False))
    case = make_case(np.random.default_rng(1), 2, 2, 4, 2, implicit=False)
    with pytest.raises(ValueError):
        run(kernel, case, hp_of(True))  # implicit needs the wider aux


def test_model_learns_and_predicts_consistently():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 30, 3000).astype(str)
    items = rng.integers(0, 20, 3000).astype(str)
    truth = rng.normal(0, 1, 30)[users.astype(int)] + rng.normal(0, 1, 20)[items.astype(int)]
    ratings = np.clip(np.rint(3 + truth), 1, 5).astype(np.float32)
    for implicit in (False, True):
        m = AdaptiveModel(k=4, params=AdaptiveParams(implicit=implicit), global_mean=3.0)
        pred, applied = m.learn_batch(users, items, ratings, np.arange(3000) * 60)
        assert applied.all()
        first = np.sqrt(np.mean((pred[:300] - ratings[:300]) ** 2))
        last = np.sqrt(np.mean((pred[-300:] - ratings[-300:]) ** 2))
        assert last < 0.8 * first
        # predict() leaves out only the session bias
        p = m.predict(["0", "nobody"], ["0", "0"])
        assert np.isfinite(p).all() and p.shape == (2,)


def test_rebased_keeps_adagrad_sums_and_restarts_sessions():
    m = AdaptiveModel(k=3)
    m.learn_batch(["a", "b"], ["x", "y"], [4.0, 2.0], [0, 0])
    other = AdaptiveModel(k=3)
    other.learn_batch(["b", "c"], ["y", "z"], [3.0, 5.0], [0, 0])
    r = m.rebased(other.state)
    rows = m.state.users.rows_for(["b"], add=False)
    np.testing.assert_array_equal(r.user_aux[r.state.users.rows_for(["b"], add=False)[0], :4],
                                  m.user_aux[rows[0], :4])  # fmt: skip
    assert (r.user_aux[:, 4] == -1.0).all() and (r.user_aux[:, 5] == 0.0).all()
    assert r.state.n_users == 2 and r.learn_batch(["c"], ["x"], [4.0], [5])[1].tolist() == [1]
