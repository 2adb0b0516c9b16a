"""Implicit event types -> (confidence, preference), with ``implicit``'s convention.

An event of weight ``w`` has confidence ``c = alpha * |w|`` and preference ``p = 1`` if
``w > 0`` else ``0``: a dislike (negative weight) is a confident "not preferred". Unobserved
items keep weight 1 and preference 0 (see ``online_als.kernels.implicit_foldin``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"view": 1.0, "click": 1.0, "like": 4.0, "dislike": -4.0, "neutral": 0.5, "purchase": 8.0}
)
_EXAMPLE = "view=1,like=4,dislike=-4"


def confidence_preference_from_weights(
    weights: NDArray[Any] | Iterable[float], alpha: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``(alpha * |w|, w > 0)`` as float32 arrays. Non-finite weights pass through as NaN
    confidence, which the kernels' guard refuses."""
    w = np.asarray(weights, np.float64)
    c = (alpha * np.abs(w)).astype(np.float32)
    p = (w > 0).astype(np.float32)
    bad = ~np.isfinite(w)
    c[bad] = np.nan
    p[bad] = 0.0
    return c, p


@dataclass(frozen=True)
class ImplicitEventMap:
    """Event type -> weight, plus ``alpha``.

    Codes are positions in :attr:`types` (insertion order), for producers that send ints.

    >>> m = ImplicitEventMap.from_string("view=1,like=4,dislike=-4", alpha=2.0)
    >>> c, p = m.confidence_preference(["like", "view", "dislike"])
    >>> c.tolist(), p.tolist()
    ([8.0, 2.0, 8.0], [1.0, 1.0, 0.0])
    """

    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.alpha, int | float) or not (
            math.isfinite(self.alpha) and self.alpha > 0
        ):
            raise ValueError(f"alpha must be finite and > 0, got {self.alpha!r}")
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise ValueError(f"weights must be a non-empty mapping, e.g. {_EXAMPLE!r}")
        clean: dict[str, float] = {}
        for name, w in self.weights.items():
            if not isinstance(name, str) or not name.strip() or any(ch in name for ch in ",= "):
                raise ValueError(
                    f"event type {name!r}: use a non-empty name without ',', '=' or spaces"
                )
            if not isinstance(w, int | float) or isinstance(w, bool):
                raise ValueError(f"weight of {name!r} must be a number, got {w!r}")
            if not math.isfinite(w) or w == 0:
                raise ValueError(
                    f"weight of {name!r} is {w!r}: use a finite non-zero number "
                    "(negative = dislike), or drop the type"
                )
            clean[name] = float(w)
        object.__setattr__(self, "weights", MappingProxyType(clean))
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "_table", np.array(list(clean.values()), np.float64))

    def __hash__(self) -> int:
        return hash((tuple(self.weights.items()), self.alpha))

    @property
    def types(self) -> tuple[str, ...]:
        """Event types in code order."""
        return tuple(self.weights)

    @classmethod
    def from_string(cls, spec: str, alpha: float = 1.0) -> ImplicitEventMap:
        """Parse ``"view=1,like=4,dislike=-4"`` (spaces around items are ignored)."""
        weights: dict[str, float] = {}
        for item in spec.split(","):
            if not item.strip():
                continue
            name, sep, value = item.partition("=")
            name = name.strip()
            try:
                if not sep or not name:
                    raise ValueError
                w = float(value)
            except ValueError:
                raise ValueError(
                    f"bad entry {item.strip()!r} in event map {spec!r}: expected type=weight, "
                    f"e.g. {_EXAMPLE!r}"
                ) from None
            if name in weights:
                raise ValueError(f"event type {name!r} appears twice in {spec!r}")
            weights[name] = w
        if not weights:
            raise ValueError(f"empty event map {spec!r}: expected e.g. {_EXAMPLE!r}")
        return cls(weights, alpha)

    def to_string(self) -> str:
        """Inverse of :meth:`from_string` (alpha not included)."""
        return ",".join(f"{k}={v:g}" for k, v in self.weights.items())

    def weights_for(self, event_types: Iterable[Any] | NDArray[Any]) -> NDArray[np.float64]:
        """Weight of each event: names (str) or integer codes, vectorised."""
        table: NDArray[np.float64] = self._table  # type: ignore[attr-defined]
        arr = np.asarray(event_types if isinstance(event_types, np.ndarray) else list(event_types))
        if arr.size == 0:
            return np.zeros(0, np.float64)
        if arr.dtype.kind in "iu":
            if arr.min() < 0 or arr.max() >= len(table):
                bad = arr[(arr < 0) | (arr >= len(table))][0]
                raise ValueError(
                    f"event code {bad} out of range: codes are 0..{len(table) - 1} for {self.types}"
                )
            return table[arr]
        if arr.dtype.kind not in "UO":
            raise TypeError(f"event types must be str names or int codes, got dtype {arr.dtype}")
        uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
        try:
            per_type = np.array([self.weights[str(t)] for t in uniq], np.float64)
        except KeyError as exc:
            raise ValueError(
                f"unknown event type {exc.args[0]!r}; known: {', '.join(self.types)}. Add it, "
                f"e.g. ImplicitEventMap.from_string('{self.to_string()},{exc.args[0]}=1')"
            ) from None
        return per_type[inverse.reshape(arr.shape)]

    def confidence_preference(
        self, event_types: Iterable[Any] | NDArray[Any]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``(c, p)`` float32 arrays for names or codes: ``c = alpha |w|``, ``p = w > 0``."""
        return confidence_preference_from_weights(self.weights_for(event_types), self.alpha)
