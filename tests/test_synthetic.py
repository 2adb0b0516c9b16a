"""Synthetic generator: determinism, shapes, popularity, arrival of new ids, drift."""

from __future__ import annotations

import inspect
import itertools
import tracemalloc

import numpy as np
import pytest

from online_als.datasets import Ratings, concat
from producers.synthetic import ML20M, SyntheticConfig, _rotate, generate, iter_blocks, plant


def stream(n: int = 50_000, users: int = 2_000, items: int = 500, **kw: object) -> Ratings:
    return concat(list(generate(n, users, items, k=8, **kw)))  # type: ignore[arg-type]


def test_deterministic_in_seed_and_independent_of_chunk_rows() -> None:
    a = stream(seed=7, chunk_rows=10_000)
    b = stream(seed=7, chunk_rows=70_001)
    for col in ("user_ids", "item_ids", "values", "timestamps"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col))
    c = stream(seed=8)
    assert not np.array_equal(a.item_ids, c.item_ids)


def test_shapes_dtypes_and_time() -> None:
    chunks = list(generate(25_000, 300, 100, k=4, seed=1, chunk_rows=10_000))
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_000]
    r = concat(chunks)
    assert r.user_ids.dtype.kind == "U" and r.item_ids.dtype.kind == "U"
    assert r.values.dtype == np.float32 and r.timestamps.dtype == np.float64
    assert r.events is None
    assert np.all(np.diff(r.timestamps) >= 0)
    assert r.timestamps[0] >= SyntheticConfig().start_ts
    assert set(np.unique(r.values).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.2 < float(r.values.mean()) < 3.8


def test_implicit_events_follow_the_configured_fractions() -> None:
    r = stream(seed=2, mode="implicit")
    assert r.events is not None and np.isnan(r.values).all()
    kinds, counts = np.unique(r.events, return_counts=True)
    share = dict(zip(kinds.tolist(), (counts / len(r)).tolist(), strict=True))
    assert share["like"] == pytest.approx(0.2, abs=0.02)
    assert share["dislike"] == pytest.approx(0.1, abs=0.02)
    assert share["view"] == pytest.approx(0.7, abs=0.03)


def test_popularity_is_a_power_law() -> None:
    # Everyone active from the start and no head flattening: counts ~ rank ** -alpha.
    r = stream(200_000, 2_000, 2_000, seed=3, initial_fraction=1.0, zipf_shift=0.0,
               item_alpha=1.0, user_alpha=0.7)
    for ids, alpha in ((r.item_ids, 1.0), (r.user_ids, 0.7)):
        counts = np.sort(np.unique(ids, return_counts=True)[1])[::-1].astype(float)
        rank = np.arange(1, counts.shape[0] + 1)
        sel = slice(3, 300)
        slope = np.polyfit(np.log(rank[sel]), np.log(counts[sel]), 1)[0]
        assert slope == pytest.approx(-alpha, abs=0.12)
    # Defaults: a heavy head, as in MovieLens (top 10% of items get most events).
    d = stream(seed=3)
    counts = np.sort(np.unique(d.item_ids, return_counts=True)[1])[::-1]
    assert counts[: len(counts) // 10].sum() > 0.4 * len(d)


def test_ids_appear_progressively_and_all_appear() -> None:
    n, users, items = 60_000, 3_000, 800
    r = stream(n, users, items, seed=4)
    planted = plant(SyntheticConfig(n_events=n, n_users=users, n_items=items, k=8, seed=4))
    for ids, debut, total in ((r.user_ids, planted.user_debut, users),
                              (r.item_ids, planted.item_debut, items)):
        uniq, first = np.unique(ids, return_index=True)
        assert uniq.shape[0] == total  # every id shows up
        rows = uniq.astype(np.int64) - 1
        np.testing.assert_array_equal(first, debut[rows])  # first event exactly at its debut
        order = np.argsort(rows)
        assert np.all(np.diff(first[order]) >= 0)  # id j + 1 never appears before id j
        seen_half = np.unique(ids[: n // 2]).shape[0]
        assert 0.3 * total < seen_half < 0.8 * total


def test_drift_changes_values_more_as_time_goes_on() -> None:
    base = stream(seed=5)
    drifted = stream(seed=5, drift=3.0)
    np.testing.assert_array_equal(base.user_ids, drifted.user_ids)
    np.testing.assert_array_equal(base.timestamps, drifted.timestamps)
    differ = base.values != drifted.values
    tenth = len(base) // 10
    assert differ[:tenth].mean() < 0.5 * differ[-tenth:].mean()
    assert differ[-tenth:].mean() > 0.3


def test_rotation_preserves_norms() -> None:
    v = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    out = _rotate(v, np.linspace(0, 3, 20))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(v, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(out[:, 4], v[:, 4])  # odd k: the last axis stays put


def test_ml20m_defaults_stream_in_bounded_memory() -> None:
    assert SyntheticConfig().n_events == 20_000_263 == ML20M["n_events"]
    defaults = inspect.signature(generate).parameters
    assert (defaults["n_users"].default, defaults["n_items"].default) == (138_493, 26_744)
    tracemalloc.start()
    try:
        first = list(itertools.islice(generate(chunk_rows=200_000), 2))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [len(c) for c in first] == [200_000, 200_000]
    assert peak < 200 << 20  # factors + tables + a couple of chunks, not 20M rows


def test_blocks_and_validation() -> None:
    planted = plant(SyntheticConfig(n_events=70_000, n_users=10, n_items=10, k=2))
    assert [len(b) for b in iter_blocks(planted)] == [65_536, 70_000 - 65_536]
    with pytest.raises(ValueError):
        SyntheticConfig(n_users=0)
    with pytest.raises(ValueError):
        SyntheticConfig(mode="both")  # type: ignore[arg-type]
