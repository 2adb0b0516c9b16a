"""ImplicitEventMap: defaults, parsing, vectorised (c, p), errors that say how to fix."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.events import (
    DEFAULT_WEIGHTS,
    ImplicitEventMap,
    confidence_preference_from_weights,
)


def test_defaults():
    m = ImplicitEventMap()
    assert dict(m.weights) == {
        "view": 1.0, "click": 1.0, "like": 4.0, "dislike": -4.0, "neutral": 0.5, "purchase": 8.0,
    }  # fmt: skip
    assert m.alpha == 1.0 and m.types[0] == "view" and m.weights is not DEFAULT_WEIGHTS


def test_confidence_preference_names_and_codes_agree():
    m = ImplicitEventMap(alpha=2.0)
    names = np.array(["purchase", "dislike", "neutral", "view", "dislike"])
    c, p = m.confidence_preference(names)
    assert c.dtype == p.dtype == np.float32
    assert c.tolist() == [16.0, 8.0, 1.0, 2.0, 8.0] and p.tolist() == [1, 0, 1, 1, 0]
    codes = np.array([m.types.index(t) for t in names], np.int32)
    c2, p2 = m.confidence_preference(codes)
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(p, p2)
    assert m.confidence_preference(["like"])[0].tolist() == [8.0]  # plain list
    assert m.confidence_preference([])[0].shape == (0,)


def test_vectorised_on_a_large_batch():
    m = ImplicitEventMap()
    types = np.random.default_rng(0).choice(list(m.types), 200_000)
    c, _ = m.confidence_preference(types)
    expect = np.abs(np.array([m.weights[t] for t in types[:100]]))
    np.testing.assert_array_equal(c[:100], expect)


def test_from_string_round_trip_and_spaces():
    m = ImplicitEventMap.from_string(" view=1, like = 4 ,dislike=-4,", alpha=3)
    assert dict(m.weights) == {"view": 1.0, "like": 4.0, "dislike": -4.0} and m.alpha == 3.0
    assert ImplicitEventMap.from_string(m.to_string(), alpha=3) == m
    assert hash(m) == hash(ImplicitEventMap.from_string(m.to_string(), alpha=3))


@pytest.mark.parametrize(
    "spec,match",
    [
        ("view=1,like4", "expected type=weight"),
        ("view=one", "expected type=weight"),
        ("=3", "expected type=weight"),
        ("", "empty event map"),
        ("view=1,view=2", "appears twice"),
        ("view=0", "non-zero"),
        ("view=nan", "finite"),
    ],
)
def test_from_string_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        ImplicitEventMap.from_string(spec)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": float("inf")}, "alpha"),
        ({"weights": {}}, "non-empty"),
        ({"weights": {"a b": 1.0}}, "without"),
        ({"weights": {"a": "1"}}, "number"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImplicitEventMap(**kwargs)


def test_unknown_types_and_codes_explain_the_fix():
    m = ImplicitEventMap.from_string("view=1,like=4")
    with pytest.raises(ValueError, match=r"unknown event type 'share'.*from_string\("):
        m.confidence_preference(["view", "share"])
    with pytest.raises(ValueError, match="codes are 0..1"):
        m.confidence_preference(np.array([0, 2]))
    with pytest.raises(TypeError):
        m.confidence_preference(np.array([1.5]))


def test_frozen():
    m = ImplicitEventMap()
    with pytest.raises(AttributeError):
        m.alpha = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        m.weights["view"] = 3.0  # type: ignore[index]


def test_weights_helper_marks_non_finite_as_nan():
    c, p = confidence_preference_from_weights([2.0, -3.0, np.nan, np.inf], alpha=0.5)
    assert c[:2].tolist() == [1.0, 1.5] and np.isnan(c[2:]).all() and p.tolist() == [1, 0, 0, 0]
