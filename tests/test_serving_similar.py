"""Cosine neighbours of items and users; zero vectors never returned."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.serving import SimilarityIndex, normalize_rows


def test_similar_items_exclude_self_and_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    f = rng.standard_normal((200, 8)).astype(np.float32)
    f[17] = 0.0
    idx = SimilarityIndex(f)
    rows, sims = idx.similar(5, 10)
    assert 5 not in rows and 17 not in rows and rows.size == 10
    unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-30)
    cos = unit @ unit[5]
    cos[[5, 17]] = -np.inf
    assert rows.tolist() == np.argsort(-cos)[:10].tolist()
    np.testing.assert_allclose(sims, cos[rows], rtol=1e-5, atol=1e-5)
    with_self, _ = idx.similar(5, 1, exclude_self=False)
    assert with_self.tolist() == [5]
    assert idx.similar(5, 5, exclude=rows[:2])[0].tolist() == rows[2:7].tolist()
    assert idx.similar_to_vector(np.zeros(8), 3)[0].size == 0
    with pytest.raises(IndexError):
        idx.similar(200, 3)


def test_similar_users_and_normalize() -> None:
    users = np.array([[1, 0], [2, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    rows, sims = SimilarityIndex(users).similar(0, 3)
    assert rows.tolist() == [1, 2, 3]
    assert sims[-1] == pytest.approx(-1.0)
    unit, valid = normalize_rows(np.array([[3, 4], [0, 0]], dtype=np.float32))
    assert unit.tolist() == [[0.6000000238418579, 0.800000011920929], [0, 0]]
    assert valid.tolist() == [True, False]
