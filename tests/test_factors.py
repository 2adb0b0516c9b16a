"""Factors and ModelArrays: one side's arrays checked on construction, a version as a state."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.factors import Factors, ModelArrays


def test_factors_convert_and_check_their_shapes() -> None:
    f = Factors(["a", "b"], np.ones((2, 3)), [0, 1])
    assert f.vectors.dtype == np.float32 and f.biases.dtype == np.float32
    assert len(f) == 2 and f.rank == 3 and f.aux is None and f.id_list() == ["a", "b"]
    with pytest.raises(ValueError, match="biases"):
        Factors(["a", "b"], np.ones((2, 3)), [0])
    with pytest.raises(ValueError, match="ids"):
        Factors(["a"], np.ones((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="aux state"):
        f.with_aux(np.ones((1, 4)))
    with pytest.raises(ValueError, match="no ids"):
        Factors(None, np.ones((2, 3)), [0, 1]).id_list()
    with pytest.raises(ValueError, match="rank"):
        ModelArrays("explicit", f, Factors(["x"], np.ones((1, 2)), [0]))


def test_state_takes_the_global_mean_unless_given_one() -> None:
    users = Factors(["a"], np.ones((1, 2)), [0.5])
    m = ModelArrays("explicit", users, Factors(["x", "y"], np.eye(2), [0, 1]), 3.5)
    s = m.state(seed=7)
    assert s.global_mean == 3.5 and s.seed == 7 and s.n_items == 2
    np.testing.assert_array_equal(s.item_bias, [0, 1])
    assert m.state(global_mean=3.0).global_mean == 3.0  # as materialize passes it
    s.user_factors[:] = 0  # a copy: the arrays are untouched
    assert users.vectors.all()
