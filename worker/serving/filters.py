"""Business filters of a recommend call: excluded ids, an include-only candidate set, and item
attributes (``categories``, or any attribute stored under ``<P>:attr:...``).

:class:`ItemFilters` is what ``filter=`` of every :class:`~worker.serving.client.ServingClient`
recommend call (and ``similar_items``, ``popular``) also accepts; it resolves to one boolean
mask over the version's item rows, which the int8-prefiltered top-N kernel takes directly.
Rules, all of them applied together:

* ``exclude``: these ids are never returned (on top of the user's seen items);
* ``include``: only these ids may be returned (``None``: every item);
* ``attributes``: ``{name: values}``, the item must have at least one of the values for *each*
  name (OR within an attribute, AND across attributes);
* ``exclude_attributes``: ``{name: values}``, an item with any of these values is dropped.

>>> f = ItemFilters(exclude=("50",), categories=("Comedy", "Drama"))
>>> f.attributes
{'category': ('Comedy', 'Drama')}
>>> ItemFilters().empty
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from worker.serving.attributes import AttributeSets
from worker.serving.cache import VersionCache

CATEGORY = "category"  # the attribute ``categories=`` refers to


def _norm(m: Mapping[str, Iterable[str]] | None) -> dict[str, tuple[str, ...]]:
    return {str(k): tuple(str(v) for v in vs) for k, vs in (m or {}).items()}


@dataclass(frozen=True, init=False)
class ItemFilters:
    """See the module docstring. ``categories``/``exclude_categories`` are shorthands for the
    attribute named ``category``."""

    exclude: tuple[str, ...] = ()
    include: frozenset[str] | None = None
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exclude_attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __init__(self, exclude: Iterable[str] = (), include: Iterable[str] | None = None,
                 attributes: Mapping[str, Iterable[str]] | None = None,
                 exclude_attributes: Mapping[str, Iterable[str]] | None = None, *,
                 categories: Iterable[str] | None = None,
                 exclude_categories: Iterable[str] | None = None) -> None:
        attrs, not_attrs = _norm(attributes), _norm(exclude_attributes)
        if categories is not None:
            attrs[CATEGORY] = attrs.get(CATEGORY, ()) + tuple(categories)
        if exclude_categories is not None:
            not_attrs[CATEGORY] = not_attrs.get(CATEGORY, ()) + tuple(exclude_categories)
        object.__setattr__(self, "exclude", tuple(str(i) for i in exclude))
        object.__setattr__(self, "include",
                           None if include is None else frozenset(str(i) for i in include))
        object.__setattr__(self, "attributes", attrs)
        object.__setattr__(self, "exclude_attributes", not_attrs)

    @property
    def empty(self) -> bool:
        return not (self.exclude or self.include is not None or self.attributes
                    or self.exclude_attributes)

    @property
    def needs_attributes(self) -> bool:
        return bool(self.attributes or self.exclude_attributes)

    def mask(self, cache: VersionCache, attrs: AttributeSets | None) -> npt.NDArray[np.bool_]:
        """``True`` for the rows of ``cache`` that may be returned."""
        if self.include is not None:
            allow = np.zeros(len(cache), dtype=bool)
            allow[cache.known_rows(self.include)] = True
        else:
            allow = np.ones(len(cache), dtype=bool)
        if self.needs_attributes:
            if attrs is None:
                raise ValueError("attribute filters need the attribute sets")
            for name, values in self.attributes.items():
                allow &= attrs.mask(cache, name, values)
            for name, values in self.exclude_attributes.items():
                allow &= ~attrs.mask(cache, name, values)
        if self.exclude:
            allow[cache.known_rows(self.exclude)] = False
        return allow
