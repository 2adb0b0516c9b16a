"""Run the docstring examples of the evaluation and dataset modules."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "online_als.ratings",
    "online_als.datasets.readers",
    "online_als.datasets.movielens",
    "online_als.evaluation.metrics",
    "online_als.evaluation.splits",
    "online_als.evaluation.prequential",
    "online_als.evaluation.tuning",
    "online_als.evaluation.simulation",
    "online_als.evaluation.windows",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
