"""Chunked CSR building: duplicates summed / last kept, ids mapped, memory compaction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from online_als.idmap import IdMap
from online_als.retrain.matrix import MatrixBuilder, build_matrix


def _chunks(seed: int, n_chunks: int = 12, size: int = 400):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(0, 40, size),
            rng.integers(0, 25, size),
            rng.standard_normal(size).astype(np.float32),
        )
        for _ in range(n_chunks)
    ]


@pytest.mark.parametrize("compact_min", [1, 500, 1 << 20])
def test_sum_matches_scipy_coo(compact_min: int) -> None:
    chunks = _chunks(0)
    b = MatrixBuilder("sum", compact_min=compact_min)
    for c in chunks:
        b.add(*c)
    m = b.build()
    assert m.users is not None and m.items is not None
    u = np.concatenate([c[0] for c in chunks])
    i = np.concatenate([c[1] for c in chunks])
    v = np.concatenate([c[2] for c in chunks]).astype(np.float64)
    ref = sp.coo_matrix(
        (v, (m.users.rows_for(u, add=False), m.items.rows_for(i, add=False))), shape=m.shape
    ).toarray()
    np.testing.assert_allclose(m.matrix.toarray(), ref, atol=1e-5)
    assert m.matrix.dtype == np.float32 and m.matrix.indices.dtype == np.int32
    assert m.matrix.has_sorted_indices and m.events == 12 * 400


@pytest.mark.parametrize("compact_min", [1, 700, 1 << 20])
def test_last_keeps_latest_value(compact_min: int) -> None:
    chunks = _chunks(1)
    b = MatrixBuilder("last", compact_min=compact_min)
    for c in chunks:
        b.add(*c)
    m = b.build()
    assert m.users is not None and m.items is not None
    want: dict[tuple[str, str], float] = {}
    for u, i, v in chunks:
        for a, c, x in zip(u.tolist(), i.tolist(), v.tolist(), strict=True):
            want[(str(a), str(c))] = x
    dense = m.matrix.toarray()
    assert m.matrix.nnz == len(want)
    for (u, i), x in want.items():
        assert dense[m.users.row(u), m.items.row(i)] == np.float32(x)


def test_string_ids_existing_maps_and_zero_sums() -> None:
    users = IdMap(["old"])
    m = build_matrix(
        [
            (["a", "b"], ["x", "y"], [1.0, 2.0]),
            (np.array(["a", "b"]), ["x", "y"], [-1.0, 1.0]),
            (["c"], ["x"], None),
        ],
        "sum",
        users=users,
    )
    assert m.users is users and users.ids == ["old", "a", "b", "c"]
    assert m.items is not None and m.items.ids == ["x", "y"]
    # ("a","x") sums to 0 -> unobserved; "old" keeps row 0 with no entries
    assert m.matrix.toarray().tolist() == [[0, 0], [0, 0], [0, 3], [1, 0]]
    assert m.matrix.nnz == 2


def test_explicit_keeps_zero_rating_and_drops_non_finite() -> None:
    m = build_matrix([(["u", "u", "v"], ["i", "j", "i"], [0.0, np.nan, 4.0])], "last")
    assert m.dropped == 1 and m.events == 3 and m.matrix.nnz == 2
    assert m.items is not None and m.items.ids == ["i", "j"]  # j was mapped before the drop


def test_rows_mode_and_shape() -> None:
    m = build_matrix([(np.array([0, 2]), np.array([1, 1]), [1.0, 2.0])], "sum", ids_are_rows=True)
    assert m.users is None and m.shape == (3, 2)
    m = build_matrix(
        [(np.array([0]), np.array([0]), [1.0])], "sum", ids_are_rows=True, shape=(5, 4)
    )
    assert m.shape == (5, 4)
    with pytest.raises(ValueError):
        build_matrix([(np.array([-1]), np.array([0]), [1.0])], "sum", ids_are_rows=True)
    with pytest.raises(TypeError):
        build_matrix([(np.array([0.5]), np.array([0]), [1.0])], "sum", ids_are_rows=True)


def test_builder_misuse() -> None:
    with pytest.raises(ValueError):
        MatrixBuilder("mean")  # type: ignore[arg-type]
    b = MatrixBuilder("sum")
    with pytest.raises(ValueError):
        b.add(["a"], ["x", "y"], [1.0])
    b.build()
    with pytest.raises(RuntimeError):
        b.add(["a"], ["x"], [1.0])
