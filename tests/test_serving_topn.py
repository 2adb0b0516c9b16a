"""Top-N: exclusions, mask and callable filters, explicit biases, batch == single, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp

from online_als.serving import top_n, top_n_batch, top_n_scores
from online_als.serving._kernels import (
    dense_scores,
    dense_scores_reference,
    top_k_rows,
    top_k_rows_reference,
)

RNG = np.random.default_rng(0)
ITEM_F = RNG.standard_normal((500, 16)).astype(np.float32)
ITEM_B = RNG.standard_normal(500).astype(np.float32)


def _brute(scores: np.ndarray, n: int, banned: np.ndarray) -> list[int]:
    rows = [r for r in np.lexsort((np.arange(scores.size), -scores)) if not banned[r]]
    return rows[:n]


def test_kernels_match_their_twins() -> None:
    x = RNG.standard_normal(16).astype(np.float32)
    a, b = np.empty(500, np.float32), np.empty(500, np.float32)
    dense_scores(ITEM_F, x, a)
    dense_scores_reference(ITEM_F, x, b)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    s = np.round(a, 1)  # many ties
    s[::7] = -np.inf
    for m in (1, 5, 40, 500, 800):
        np.testing.assert_array_equal(top_k_rows(s, m), top_k_rows_reference(s, m))


def test_excludes_seen_and_respects_mask() -> None:
    x = RNG.standard_normal(16).astype(np.float32)
    seen = RNG.choice(500, 60, replace=False)
    allow = RNG.random(500) < 0.5
    rows, scores = top_n(x, ITEM_F, 20, exclude=seen, allow=allow)
    banned = ~allow
    banned[seen] = True
    assert rows.tolist() == _brute(ITEM_F @ x, 20, banned)
    np.testing.assert_allclose(scores, (ITEM_F @ x)[rows], rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores) <= 0)


def test_callable_filter_sees_only_candidates() -> None:
    x = RNG.standard_normal(16).astype(np.float32)
    asked: list[int] = []

    def in_stock(rows: np.ndarray) -> np.ndarray:
        asked.extend(rows.tolist())
        return rows % 3 == 0

    rows, _ = top_n(x, ITEM_F, 10, exclude=[0, 3], allow=in_stock)
    banned = np.arange(500) % 3 != 0
    banned[[0, 3]] = True
    assert rows.tolist() == _brute(ITEM_F @ x, 10, banned)
    assert len(asked) == len(set(asked)) < 500  # each asked once, not the whole catalogue
    rows, _ = top_n(x, ITEM_F, 10, allow=lambda r: np.zeros(r.shape, bool))
    assert rows.size == 0


def test_explicit_scores_include_biases_and_small_catalogues() -> None:
    x = RNG.standard_normal(16).astype(np.float32)
    rows, scores = top_n(x, ITEM_F, 5, item_bias=ITEM_B, user_bias=0.3, global_mean=3.5)
    want = 3.5 + 0.3 + ITEM_B + ITEM_F @ x
    assert rows.tolist() == _brute(want, 5, np.zeros(500, bool))
    np.testing.assert_allclose(scores, want[rows], rtol=1e-5, atol=1e-4)
    rows, _ = top_n_scores(np.array([1.0, 3.0, 2.0]), 10, exclude=[1])
    assert rows.tolist() == [2, 0]
    assert top_n_scores(np.array([1.0]), 0)[0].size == 0


@pytest.mark.parametrize("as_sparse", [True, False])
def test_batch_equals_single(as_sparse: bool) -> None:
    users = RNG.standard_normal((37, 16)).astype(np.float32)
    seen = [RNG.choice(500, RNG.integers(0, 30), replace=False) for _ in range(37)]
    ub = RNG.standard_normal(37).astype(np.float32)
    mask = RNG.random(500) < 0.8
    if as_sparse:
        exclude = sp.lil_matrix((37, 500), dtype=np.float32)
        for u, s in enumerate(seen):
            exclude[u, s] = 1.0
        ex = exclude.tocsr()
    rows, scores = top_n_batch(users, ITEM_F, 10, exclude=ex if as_sparse else seen,
                               allow=mask, item_bias=ITEM_B, user_bias=ub, global_mean=3.0,
                               chunk=8)  # fmt: skip
    for u in range(37):
        r1, s1 = top_n(users[u], ITEM_F, 10, exclude=seen[u], allow=mask, item_bias=ITEM_B,
                       user_bias=float(ub[u]), global_mean=3.0)  # fmt: skip
        assert rows[u].tolist() == r1.tolist()
        np.testing.assert_allclose(scores[u], s1, rtol=1e-5, atol=1e-4)
    cal_rows, _ = top_n_batch(users[:3], ITEM_F, 4, allow=lambda r: r < 100)
    assert np.all((cal_rows >= 0) & (cal_rows < 100))
    pad_rows, pad_scores = top_n_batch(users[:2], ITEM_F[:3], 5)
    assert pad_rows[:, 3:].tolist() == [[-1, -1], [-1, -1]] and np.isneginf(pad_scores[:, 3:]).all()


def test_single_user_top10_is_fast() -> None:
    rng = np.random.default_rng(1)
    item_f = rng.standard_normal((26_744, 64)).astype(np.float32)
    x = rng.standard_normal(64).astype(np.float32)
    seen = rng.choice(26_744, 100, replace=False)
    top_n(x, item_f, 10, exclude=seen)  # compile / warm caches
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        top_n(x, item_f, 10, exclude=seen)
        times.append(time.perf_counter() - t0)
    assert float(np.median(times)) < 1e-3, f"median {np.median(times) * 1e3:.3f} ms"


# -- the int8 prefilter: exactly the full pass, at a fraction of the float32 work ---------------
def _prefilter_case(n_items: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    item_f = (rng.standard_normal((n_items, k)) / np.sqrt(k)).astype(np.float32)
    item_b = (rng.standard_normal(n_items) * 0.3).astype(np.float32)
    return item_f, item_b


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1].view(np.int32), b[1].view(np.int32))  # same bits


@pytest.mark.parametrize("explicit", [True, False])
def test_prefilter_top_n_is_the_full_pass_bit_for_bit(explicit: bool) -> None:
    from online_als.serving.prefilter import QuantizedItems

    item_f, item_b = _prefilter_case(5000, 64, 1)
    index = QuantizedItems(item_f, item_b if explicit else None)
    rng = np.random.default_rng(2)
    used = 0
    for t in range(200):
        x = (rng.standard_normal(64) / 8).astype(np.float32)
        ex = rng.integers(0, 5000, 100)
        mask = rng.random(5000) > 0.3 if t % 3 == 0 else None
        bias = {"item_bias": item_b, "user_bias": float(rng.standard_normal()),
                "global_mean": 3.5} if explicit else {}
        n = int(rng.integers(1, 30))
        full = top_n(x, item_f, n, exclude=ex, allow=mask, **bias)  # type: ignore[arg-type]
        got = index.top_n(x, n, exclude=ex, allow=mask,
                          **{k: v for k, v in bias.items() if k != "item_bias"})  # type: ignore[arg-type]
        assert got is not None
        used += 1
        _same(full, got)
        _same(full, top_n(x, item_f, n, exclude=ex, allow=mask, index=index,
                          **bias))  # type: ignore[arg-type]
    assert used == 200


def test_prefilter_keeps_ties_and_edge_cases() -> None:
    from online_als.serving.prefilter import QuantizedItems

    rng = np.random.default_rng(3)
    # coarse values: many exact ties in score, resolved by lower row as in the full pass
    item_f = rng.integers(-2, 3, (3000, 8)).astype(np.float32)
    item_b = rng.integers(-1, 2, 3000).astype(np.float32)
    index = QuantizedItems(item_f, item_b)
    for _ in range(50):
        x = rng.integers(-2, 3, 8).astype(np.float32)
        full = top_n(x, item_f, 10, exclude=[0, 5], item_bias=item_b, user_bias=0.5,
                     global_mean=1.0)
        got = index.top_n(x, 10, exclude=[0, 5], user_bias=0.5, global_mean=1.0)
        if got is not None:  # many ties can mean many candidates: then the full pass decides
            _same(full, got)
    # all but three rows excluded: fewer than n come back, as before
    keep = np.array([7, 70, 700])
    ex = np.setdiff1d(np.arange(3000), keep)
    got = top_n(item_f[0], item_f, 10, exclude=ex, index=index, item_bias=item_b)
    _same(top_n(item_f[0], item_f, 10, exclude=ex, item_bias=item_b), got)
    assert got[0].size == 3
    # non-finite items or user vectors: no index shortcut
    bad = item_f.copy()
    bad[3, 0] = np.nan
    assert QuantizedItems(bad).top_n(x, 10) is None
    assert index.top_n(np.full(8, np.inf, np.float32), 10) is None


def test_candidate_kernel_matches_its_twin_and_keeps_the_top() -> None:
    from online_als.serving.prefilter import (
        QuantizedItems,
        candidate_rows,
        candidate_rows_reference,
    )

    item_f, item_b = _prefilter_case(4000, 32, 4)
    index = QuantizedItems(item_f, item_b)
    rng = np.random.default_rng(5)
    for _ in range(30):
        x = (rng.standard_normal(32) / 6).astype(np.float32)
        blocked = np.ones(index.scale.shape[0], dtype=bool)
        blocked[:4000] = rng.random(4000) < 0.1
        args = (index.q, x, index.scale, index.slack, index.bias, 3.5,
                float(np.linalg.norm(x.astype(np.float64))), 1e-5, blocked, 10)
        got, ref = candidate_rows(*args), candidate_rows_reference(*args)
        full = top_n(x, item_f, 10, exclude=np.flatnonzero(blocked[:4000]), item_bias=item_b,
                     global_mean=3.5)[0]
        assert set(full) <= set(got) and set(full) <= set(ref)
        # float32 (kernel) and float64 (twin) may differ only at the cut-off
        assert len(set(got) ^ set(ref)) <= 2
        assert np.all(np.diff(got) > 0)


def test_dense_scores_of_gathered_rows_are_the_same_bits() -> None:
    item_f, _ = _prefilter_case(3000, 64, 6)
    x = RNG.standard_normal(64).astype(np.float32)
    full = np.empty(3000, np.float32)
    dense_scores(item_f, x, full)
    rows = np.sort(np.random.default_rng(7).choice(3000, 40, replace=False))
    part = np.empty(40, np.float32)
    dense_scores(item_f[rows], x, part)
    np.testing.assert_array_equal(part.view(np.int32), full[rows].view(np.int32))


@pytest.mark.parametrize("k", [30, 64])  # 30: the features left over by the 4-wide passes
def test_fused_prefilter_kernel_matches_its_twin_and_the_full_pass(k: int) -> None:
    from online_als.serving.prefilter import (
        QuantizedItems,
        prefilter_top,
        prefilter_top_reference,
    )

    item_f, item_b = _prefilter_case(3000, k, 8)
    rng = np.random.default_rng(9)
    for explicit in (True, False):
        index = QuantizedItems(item_f, item_b if explicit else None)
        for t in range(40):
            x = (rng.standard_normal(k) / 6).astype(np.float32)
            c32 = np.float32(3.5 + rng.standard_normal()) if explicit else np.float32(0.0)
            seen = rng.integers(0, 3000, 60)
            # -1 (an unknown id) and rows past the catalogue are ignored, not wrapped
            exclude = np.concatenate([seen, [-1, 3000, 10**6]]).astype(np.int64)
            allow = rng.random(3000) > 0.2 if t % 2 else np.empty(0, np.bool_)
            args = (index.q, x, index.scale, index.slack, index.bias, c32, 1e-4, index.ymax,
                    index.bmax, exclude, allow, 3000, 10, index.item_f, index.item_b,
                    explicit, 3000 // 8)
            rows, scores, ok = prefilter_top(*args)
            r_rows, r_scores, r_ok = prefilter_top_reference(*args)
            assert ok and r_ok
            np.testing.assert_allclose(scores, r_scores, rtol=1e-5, atol=1e-5)
            assert len(set(rows) ^ set(r_rows)) <= 2  # float32 vs float64 only at the cut-off
            bias = {"item_bias": item_b, "user_bias": float(c32) - 3.5,
                    "global_mean": 3.5} if explicit else {}
            full = top_n(x, item_f, 10, exclude=seen, allow=allow if t % 2 else None,
                         **bias)  # type: ignore[arg-type]
            _same(full, (rows, scores))
            got = index.top_rows(x, 10, c32, exclude, allow)
            assert got is not None
            _same(full, got)
        # non-finite user vector, too many candidates: the caller runs the full pass
        bad = np.full(k, np.nan, np.float32)
        assert index.top_rows(bad, 10, np.float32(0), np.empty(0, np.int64)) is None
        assert prefilter_top(index.q, x, index.scale, index.slack, index.bias, np.float32(0),
                             1e-4, index.ymax, index.bmax, np.empty(0, np.int64),
                             np.empty(0, np.bool_), 3000, 10, index.item_f, index.item_b,
                             explicit, 0)[2] is False


def test_prefilter_top_n_keeps_the_full_pass_argument_rules() -> None:
    from online_als.serving.prefilter import QuantizedItems

    item_f, item_b = _prefilter_case(2000, 16, 10)
    index = QuantizedItems(item_f, item_b)
    x = item_f[3] * 4
    # negative rows wrap as in NumPy indexing; a boolean exclude mask works as rows
    for ex in ([-1, -2, 5], np.arange(2000) % 7 == 0):
        full = top_n(x, item_f, 10, exclude=ex, item_bias=item_b)
        got = index.top_n(x, 10, exclude=ex)
        assert got is not None
        _same(full, got)
    # arguments the full pass rejects are left to it (it raises)
    assert index.top_n(x, 10, exclude=[2000]) is None
    assert index.top_n(x, 10, allow=np.ones(5, bool)) is None
    assert index.top_n(x[:8], 10) is None
    with pytest.raises(ValueError):
        top_n(x[:8], item_f, 10, index=index)
