"""OnlineModel: new ids, determinism, prequential predictions, persistence, learning."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import online_als.events
import online_als.idmap
import online_als.init
import online_als.model
import online_als.online
from online_als.kernels import gram_inverse, resolve_users
from online_als.kernels.implicit_foldin import gram
from online_als.model import ModelFormatError
from online_als.online import ExplicitParams, OnlineImplicitParams, OnlineModel


@pytest.mark.parametrize(
    "module",
    [online_als.online, online_als.events, online_als.idmap, online_als.init, online_als.model],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_new_user_and_new_item_in_one_event_are_both_learnt(mode):
    # Oryx's speed layer drops this pair (no y_i yet); we create both vectors first.
    m = OnlineModel.explicit(k=4, lr=0.1) if mode == "explicit" else OnlineModel.implicit(k=4)
    _, applied = m.learn_batch(["u-new"], ["i-new"], [5.0])
    assert applied.tolist() == [1]
    assert m.state.users.ids == ["u-new"] and m.state.items.ids == ["i-new"]
    assert np.abs(m.state.user_factors[0]).sum() > 0
    if mode == "explicit":
        assert m.state.user_bias[0] > 0 and m.state.item_bias[0] > 0
    assert m.predict_one("u-new", "i-new") > 0


def events(n=300, seed=0, nu=20, ni=15):
    rng = np.random.default_rng(seed)
    users = [f"u{j}" for j in rng.integers(0, nu, n)]
    items = [f"i{j}" for j in rng.integers(0, ni, n)]
    return users, items, rng.integers(1, 6, n).astype(np.float32)


@pytest.mark.parametrize(
    "factory",
    # track_mean moves mu between batches, so only a fixed mean makes batching irrelevant.
    [lambda **kw: OnlineModel.explicit(track_mean=False, **kw), OnlineModel.implicit],
)
def test_batching_does_not_change_the_numbers(factory):
    users, items, values = events()
    a, b = factory(k=6, seed=5), factory(k=6, seed=5)
    pa, _ = a.learn_batch(users, items, values)
    for j in range(len(users)):  # one at a time: same ids, same order, same numbers
        b.learn_one(users[j], items[j], float(values[j]))
    np.testing.assert_array_equal(a.state.user_factors, b.state.user_factors)
    np.testing.assert_array_equal(a.state.item_factors, b.state.item_factors)
    np.testing.assert_array_equal(a.state.user_bias, b.state.user_bias)


@pytest.mark.parametrize("factory", [OnlineModel.explicit, OnlineModel.implicit])
def test_pred_before_equals_predict_before_learning(factory):
    users, items, values = events(40)
    m = factory(k=5)
    m.learn_batch(users, items, values)
    before = m.predict(users[:1], items[:1])
    pred, _ = m.learn_batch(users[:1], items[:1], values[:1])
    np.testing.assert_allclose(pred, before, rtol=1e-6)


def test_predict_unknown_ids():
    m = OnlineModel.explicit(k=3, global_mean=3.0, track_mean=False)
    m.learn_batch(["a"], ["x"], [5.0])
    p = m.predict(["zz", "a", "zz"], ["x", "nope", "nope"])
    assert p[2] == pytest.approx(3.0)
    assert p[0] == pytest.approx(3.0 + m.state.item_bias[0])
    assert p[1] == pytest.approx(3.0 + m.state.user_bias[0])
    assert OnlineModel.implicit(k=3).predict(["a"], ["b"]).tolist() == [0.0]


def test_guarded_event_leaves_state_untouched():
    m = OnlineModel.explicit(k=3, seed=1)
    m.learn_batch(["a", "b"], ["x", "y"], [4.0, 2.0])
    snapshot = m.state.copy()
    _, applied = m.learn_batch(["a", "b"], ["x", "y"], [np.nan, np.inf])
    assert applied.tolist() == [0, 0] and m.state.global_mean == snapshot.global_mean
    np.testing.assert_array_equal(m.state.user_factors, snapshot.user_factors)


def test_bad_input_adds_no_ids():
    m = OnlineModel.explicit(k=3)
    with pytest.raises(ValueError, match="lengths differ"):
        m.learn_batch(["a", "b"], ["x"], [1.0, 2.0])
    with pytest.raises(TypeError):
        m.learn_batch(["a"], [1.5], [1.0])
    assert m.state.n_users == m.state.n_items == 0


def test_track_mean():
    m = OnlineModel.explicit(k=2)
    m.learn_batch(["a", "b"], ["x", "x"], [4.0, 2.0])
    assert m.state.global_mean == pytest.approx(3.0) and m.state.n_ratings == 2
    fixed = OnlineModel.explicit(k=2, global_mean=1.0, track_mean=False)
    fixed.learn_batch(["a"], ["x"], [4.0])
    assert fixed.state.global_mean == 1.0


def test_refresh_grams_only_when_asked():
    m = OnlineModel.implicit(k=4, reg=0.5)
    np.testing.assert_allclose(m.gy_inv, np.eye(4) / 0.5)  # empty model: G = reg I
    users, items, values = events(50)
    m.learn_batch(users, items, values)
    np.testing.assert_allclose(m.gy_inv, np.eye(4) / 0.5)  # unchanged by learning
    m.refresh_grams()
    np.testing.assert_allclose(m.gy_inv, gram_inverse(m.state.item_factors, 0.5))
    np.testing.assert_allclose(m.gx_inv, gram_inverse(m.state.user_factors, 0.5))


@pytest.mark.parametrize("factory", [OnlineModel.explicit, OnlineModel.implicit])
def test_save_load_then_continue_identically(tmp_path, factory):
    users, items, values = events(200)
    m = factory(k=4, seed=2)
    m.learn_batch(users[:100], items[:100], values[:100])
    m.save(tmp_path / "m.npz")
    loaded = OnlineModel.load(tmp_path / "m.npz")
    assert loaded.params == m.params and loaded.mode == m.mode
    m.refresh_grams()  # load() refreshes; do the same here so both use the same grams
    pa, _ = m.learn_batch(users[100:], items[100:], values[100:])
    pb, _ = loaded.learn_batch(users[100:], items[100:], values[100:])
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(m.state.item_factors, loaded.state.item_factors)


def test_load_rejects_mismatched_hyper(tmp_path):
    m = OnlineModel.implicit(k=2)
    m.state.hyper = {"reg": 0.1, "bogus": 1}
    m.state.save(tmp_path / "m.npz")
    with pytest.raises(ModelFormatError, match="hyper-parameters"):
        OnlineModel.load(tmp_path / "m.npz")


def test_parameter_validation():
    for bad in ({"lr": -1.0}, {"clip": 0.0}, {"reg": float("nan")}):
        with pytest.raises(ValueError):
            ExplicitParams(**bad)
    for bad in ({"reg": 0.0}, {"alpha": -1.0}):
        with pytest.raises(ValueError):
            OnlineImplicitParams(**bad)
    with pytest.raises(ValueError, match="params are for"):
        OnlineModel(OnlineModel.implicit(k=2).state, ExplicitParams())


def test_explicit_learns_a_low_rank_signal():
    rng = np.random.default_rng(3)
    nu, ni, k, n = 100, 80, 3, 60_000
    tu, ti = rng.normal(0, 1, (nu, k)), rng.normal(0, 1, (ni, k))
    u, i = rng.integers(0, nu, n), rng.integers(0, ni, n)
    r = (3.0 + (tu[u] * ti[i]).sum(1) + rng.normal(0, 0.1, n)).astype(np.float32)
    m = OnlineModel.explicit(k=k, lr=0.02, reg=0.01, seed=0)
    for s in range(0, n, 5_000):
        pred, _ = m.learn_batch(u[s : s + 5000], i[s : s + 5000], r[s : s + 5000])
    rmse_last = float(np.sqrt(np.mean((pred - r[-5000:]) ** 2)))
    assert rmse_last < 0.35 * float(np.std(r)), rmse_last  # far better than the mean


def test_implicit_first_fold_in_matches_exact_resolve():
    # Fixed items, a brand-new user: the fold-in equals implicit's recalculate_user.
    m = OnlineModel.implicit(k=4, reg=0.2, alpha=3.0, update_items=False, item_init_scale=0.5)
    m.learn_batch([f"seed{j}" for j in range(6)], [f"i{j}" for j in range(6)], [1.0] * 6)
    m.refresh_grams()
    m.learn_batch(["new"], ["i2"], [4.0])
    y = m.state.item_factors
    c, p = np.array([12.0], np.float32), np.array([1.0], np.float32)
    exact = resolve_users(y, gram(y, 0.2), np.array([0, 1]), np.array([2]), c, p)
    np.testing.assert_allclose(m.state.user_factors[m.state.users.row("new")], exact[0], 1e-5)


def test_implicit_fold_in_learns_planted_groups():
    rng = np.random.default_rng(4)
    n_users, n_items, n_groups = 60, 30, 3
    ug, ig = np.arange(n_users) % n_groups, np.arange(n_items) % n_groups
    m = OnlineModel.implicit(k=4, reg=0.1, alpha=5.0, item_init_scale=0.1)
    for _ in range(6):  # a few streamed passes, grams refreshed between micro-batches
        u = rng.integers(0, n_users, 400)
        i = np.array([rng.choice(np.flatnonzero(ig == ug[x])) for x in u])
        m.learn_batch([f"u{x}" for x in u], [f"i{x}" for x in i], np.ones(400))
        m.refresh_grams()
    uu, ii = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    scores = m.predict([f"u{x}" for x in uu.ravel()], [f"i{x}" for x in ii.ravel()])
    same = (ug[uu] == ig[ii]).ravel()
    # AUC of "same group" vs "other group" scores: 1.0 is a perfect separation.
    ranks = np.argsort(np.argsort(scores))
    auc = (ranks[same].mean() - (same.sum() - 1) / 2) / (~same).sum()
    assert auc > 0.9, auc
