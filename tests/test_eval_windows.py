"""The time-window ranking protocol and its evaluator."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.datasets import Ratings
from online_als.evaluation.windows import evaluate_windows, window_protocol


def _data() -> Ratings:
    rng = np.random.default_rng(0)
    n = 2_000
    return Ratings.from_columns(
        rng.integers(0, 50, n),
        rng.integers(0, 100, n),
        rng.integers(1, 6, n),
        rng.integers(0, 10_000, n),
    )


def test_windows_partition_the_holdout() -> None:
    r = _data()
    pos = r.take(r.values >= 4).sort_by_time()
    splits = list(window_protocol(r, n_windows=4, holdout_fraction=0.2))
    assert len(splits) == 4
    sizes = [len(s.window) for s in splits]
    assert sum(sizes) == round(len(pos) * 0.2) and max(sizes) - min(sizes) <= 1
    assert len(splits[0].history) == len(pos) - sum(sizes)
    for a, b in zip(splits, splits[1:], strict=False):
        assert len(b.history) == len(a.history) + len(a.window)
        assert len(b.new_history) == len(a.window)
    assert len(splits[0].new_history) == len(splits[0].history)
    for s in splits:
        assert np.all(s.window.values >= 4) and np.all(s.history.values >= 4)
        assert s.history.timestamps.max() <= s.window.timestamps.min()
        hist_pairs = set(zip(s.history.user_ids.tolist(), s.history.item_ids.tolist(), strict=True))
        hist_users = set(s.history.user_ids.tolist())
        expected: dict[str, set[str]] = {}
        for u, i in zip(s.window.user_ids.tolist(), s.window.item_ids.tolist(), strict=True):
            if u in hist_users and (u, i) not in hist_pairs:
                expected.setdefault(u, set()).add(i)
        assert s.users.tolist() == sorted(expected)
        for u, rel, seen in zip(s.users.tolist(), s.relevant, s.seen, strict=True):
            assert set(rel.tolist()) == expected[u] and len(rel) == len(expected[u])
            assert set(seen.tolist()) == {i for (v, i) in hist_pairs if v == u}


def test_evaluator_with_oracle_and_null_recommenders() -> None:
    r = _data()
    splits = {s.index: s for s in window_protocol(r)}
    calls: list[int] = []

    def oracle(users, n, exclude):
        s = splits[calls[-1]]
        lookup = dict(zip(s.users.tolist(), s.relevant, strict=True))
        return [lookup[u][:n] for u in users.tolist()]

    ev = evaluate_windows(
        r, oracle, k=10, before_window=lambda s: calls.append(s.index), user_batch=7
    )
    assert calls == [0, 1, 2, 3]
    assert ev.mean_ndcg == pytest.approx(1.0)
    # recall is 1 unless a user has more than k relevant items
    assert 0.9 < ev.mean_recall <= 1.0
    assert ev.n_users.tolist() == [len(s.users) for s in splits.values()]

    ev0 = evaluate_windows(r, lambda users, n, exclude: np.full((len(users), n), "nope"), k=10)
    assert ev0.mean_ndcg == 0.0 and ev0.mean_recall == 0.0
    summary = ev.summary()
    assert set(summary) == {"ndcg@10", "recall@10", "windows"} and len(summary["windows"]) == 4


def test_exclude_is_the_users_history() -> None:
    r = Ratings.from_columns(list("aabab"), list("xyxzw"), [5, 4, 5, 5, 5], range(5))
    seen_args = []

    def rec(users, n, exclude):
        seen_args.append((users.tolist(), [e.tolist() for e in exclude]))
        return [["z"]] * len(users)

    ev = evaluate_windows(r, rec, k=2, n_windows=1, holdout_fraction=0.4)
    assert seen_args == [(["a", "b"], [["x", "y"], ["x"]])]
    assert ev.recall.tolist() == pytest.approx([0.5])  # a: z hit; b: w missed
