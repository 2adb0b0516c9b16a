"""Run the docstring examples of the retrain (model arrays, fit, gate) and serving modules."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "online_als.factors",
    "online_als.retrain",
    "online_als.retrain.matrix",
    "online_als.retrain.als_wr",
    "online_als.retrain.implicit_fit",
    "online_als.evaluation.gate",
    "online_als.serving.topn",
    "online_als.serving.similar",
    "online_als.serving.coldstart",
    "online_als.serving.foldin",
    "online_als.serving.explain",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
