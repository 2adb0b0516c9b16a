"""ModelState, IdMap and init_vectors: growth, determinism, snapshots and their validation."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from online_als.idmap import IdMap
from online_als.init import ITEM_SALT, USER_SALT, init_vectors
from online_als.model import FORMAT_VERSION, ModelFormatError, ModelState

# -- IdMap ---------------------------------------------------------------------------------


def test_idmap_rows_and_lookup():
    m = IdMap(["a"])
    assert m.rows_for(["b", "a", "b", 3, np.int64(4)]).tolist() == [1, 0, 1, 2, 3]
    assert m.rows_for(np.array(["a", "zz"]), add=False).tolist() == [0, -1]
    assert m.rows_for(np.array([3, 4]), add=False).tolist() == [2, 3]
    assert m.ids == ["a", "b", "3", "4"] and len(m) == 4 and 3 in m and "3" in m
    assert m.row("nope") == -1 and 2.5 not in m
    assert m.rows_for([]).dtype == np.int64


@pytest.mark.parametrize("bad", [1.0, None, b"x", True])
def test_idmap_rejects_non_str_non_int(bad):
    with pytest.raises(TypeError, match="str or int"):
        IdMap().rows_for(["ok", bad])


def test_idmap_rejects_empty_string_without_partial_adds():
    m = IdMap(["a"])
    with pytest.raises(ValueError, match="empty"):
        m.rows_for(["new", ""])
    assert m.ids == ["a"] and m.row("new") == -1


def test_idmap_utf8_round_trip_and_duplicates():
    m = IdMap(["a", "é", "🙂", "x" * 300])
    data, off = m.to_utf8()
    assert IdMap.from_utf8(data, off) == m
    with pytest.raises(ValueError, match="duplicate"):
        IdMap.from_list(["a", "a"])
    with pytest.raises(ValueError, match="offsets"):
        IdMap.from_utf8(data, off[:-1])


# -- init_vectors --------------------------------------------------------------------------


def test_init_vectors_deterministic_per_id_whatever_the_batch():
    whole = init_vectors(["a", "b", "c"], 7, 42, 0.1)
    parts = np.vstack([init_vectors(["c"], 7, 42, 0.1), init_vectors(["a", "b"], 7, 42, 0.1)])
    np.testing.assert_array_equal(whole, parts[[1, 2, 0]])
    np.testing.assert_array_equal(init_vectors([5], 7, 42, 0.1), init_vectors(["5"], 7, 42, 0.1))
    assert whole.dtype == np.float32 and whole.flags.c_contiguous and whole.shape == (3, 7)


def test_init_vectors_depend_on_seed_salt_and_scale():
    base = init_vectors(["a"], 8, 1, 0.1, salt=USER_SALT)
    assert not np.array_equal(base, init_vectors(["a"], 8, 2, 0.1, salt=USER_SALT))
    assert not np.array_equal(base, init_vectors(["a"], 8, 1, 0.1, salt=ITEM_SALT))
    np.testing.assert_allclose(init_vectors(["a"], 8, 1, 0.3, salt=USER_SALT), base * 3, 1e-6)
    assert not init_vectors(["a", "b"], 8, 1, 0.0).any()


def test_init_vectors_are_normal_and_fast():
    ids = [f"id-{j}" for j in range(10_000)]
    t0 = time.perf_counter()
    v = init_vectors(ids, 64, 0, 1.0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, elapsed  # ~0.05 s on one core; generous for a loaded CI box
    assert abs(v.mean()) < 0.01 and abs(v.std() - 1) < 0.01
    assert np.isfinite(v).all() and len({row.tobytes() for row in v}) == len(ids)


@pytest.mark.parametrize("k,scale", [(0, 0.1), (3, -1.0), (3, float("nan"))])
def test_init_vectors_validation(k, scale):
    with pytest.raises(ValueError):
        init_vectors(["a"], k, 0, scale)


# -- ModelState ----------------------------------------------------------------------------


def test_growth_keeps_rows_and_initialises_new_ids():
    s = ModelState("explicit", 5, seed=3)
    s.ensure_users(["a", "b"])
    s.user_factors[0] = 1.0
    s.user_bias[1] = 2.0
    rows = s.ensure_users([f"u{j}" for j in range(500)] + ["a"])
    assert rows[-1] == 0 and s.n_users == 502 and s._uf.shape[0] >= 502
    assert (s.user_factors[0] == 1.0).all() and s.user_bias[1] == 2.0
    np.testing.assert_array_equal(
        s.user_factors[2:], init_vectors([f"u{j}" for j in range(500)], 5, 3, 0.1, salt=USER_SALT)
    )
    assert not s.user_bias[2:].any()
    s.ensure_items(["x"])
    assert s.item_factors.shape == (1, 5) and s.item_bias.shape == (1,)


def test_growth_is_amortised():
    s = ModelState("implicit", 4)
    capacities = set()
    for j in range(1000):
        s.ensure_items([f"i{j}"])
        capacities.add(s._if.shape[0])
    assert len(capacities) <= 6  # geometric: 64, 128, ..., 1024


def test_running_global_mean():
    s = ModelState("explicit", 2)
    s.observe_ratings(np.array([4.0, 2.0, 100.0]), np.array([1, 1, 0], np.uint8))
    s.observe_ratings(np.array([3.0]), np.array([1], np.uint8))
    assert s.global_mean == pytest.approx(3.0) and s.n_ratings == 3


def filled_state(mode="explicit") -> ModelState:
    s = ModelState(mode, 3, seed=9, global_mean=3.5, hyper={"lr": 0.01})
    s.ensure_users(["alice", "bob", 7, "ünï🙂"])
    s.ensure_items(["i1", "i2"])
    s.user_bias[:] = [0.1, 0.2, 0.3, 0.4]
    s.n_ratings = 12
    return s


@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_save_load_round_trip(tmp_path, mode):
    s = filled_state(mode)
    s.save(tmp_path / "m.npz")
    t = ModelState.load(tmp_path / "m.npz")
    assert (t.mode, t.k, t.seed, t.global_mean, t.n_ratings, t.hyper) == (
        mode, 3, 9, 3.5, 12, {"lr": 0.01},
    )  # fmt: skip
    assert t.users.ids == ["alice", "bob", "7", "ünï🙂"] and t.items.ids == ["i1", "i2"]
    for name in ("user_factors", "item_factors", "user_bias", "item_bias"):
        np.testing.assert_array_equal(getattr(t, name), getattr(s, name))
    assert ModelState.read_meta(tmp_path / "m.npz")["format_version"] == FORMAT_VERSION
    assert list(tmp_path.iterdir()) == [tmp_path / "m.npz"]  # no temp file left behind
    t.ensure_users(["new"])  # a loaded state still grows
    assert t.n_users == 5


def test_empty_state_round_trip(tmp_path):
    ModelState("implicit", 2).save(tmp_path / "e.npz")
    t = ModelState.load(tmp_path / "e.npz")
    assert t.n_users == t.n_items == 0 and t.user_factors.shape == (0, 2)


def rewrite(tmp_path, **changes):
    filled_state().save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    for key, value in changes.items():
        if key.startswith("meta_"):
            meta[key[5:]] = value
        elif value is None:
            del arrays[key]
        else:
            arrays[key] = value
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"meta_format_version": FORMAT_VERSION + 1}, "upgrade online-als"),
        ({"meta_format_version": 0}, "format_version"),
        ({"meta_format": "other"}, "format"),
        ({"meta_k": "3"}, "'k'"),
        ({"meta_n_users": 9}, "metadata says"),
        ({"user_factors": np.zeros((4, 3), np.float64)}, "expected float32"),
        ({"item_factors": np.zeros((2, 4), np.float32)}, r"expected float32\(2, 3\)"),
        ({"item_bias": np.array([0.0, np.nan], np.float32)}, "NaN/Inf"),
        ({"user_ids_offsets": None}, "missing arrays"),
        ({"user_ids_utf8": np.frombuffer(b"aaaaaaaaaaaaaaaaaaaaa", np.uint8)}, "id table"),
    ],
)
def test_load_validation_errors(tmp_path, changes, match):
    with pytest.raises(ModelFormatError, match=match):
        ModelState.load(rewrite(tmp_path, **changes))


def test_load_rejects_non_snapshots(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    np.save(tmp_path / "one.npy", np.zeros(3))
    np.savez(tmp_path / "nometa.npz", a=np.zeros(1))
    for name, match in [("junk.npz", "not an online-als"), ("one.npy", "single .npy"),
                        ("nometa.npz", "no 'meta'")]:  # fmt: skip
        with pytest.raises(ModelFormatError, match=match):
            ModelState.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        ModelState.load(tmp_path / "absent.npz")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "both"},
        {"k": 0},
        {"k": 2.0},
        {"user_init_scale": -1.0},
        {"global_mean": float("inf")},
    ],  # fmt: skip
)
def test_constructor_validation(kwargs):
    args = {"mode": "explicit", "k": 2, **kwargs}
    with pytest.raises(ValueError):
        ModelState(args.pop("mode"), args.pop("k"), **args)


def test_copy_is_deep():
    s = filled_state()
    t = s.copy()
    t.user_factors[0] = 42.0
    t.ensure_users(["zzz"])
    assert not (s.user_factors[0] == 42.0).any() and s.n_users == 4 and t.n_users == 5
