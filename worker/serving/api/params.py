"""Request parameters of the HTTP API: the query string (GET) or a JSON body (POST) -> typed
arguments of the serving client, with one clear message per bad parameter.

>>> q = Query.from_query_string(b"user=196&n=5&exclude=50,181&category=Com%C3%A9die")
>>> q.text("user"), q.integer("n", 10, 1, 100), q.filters(100).exclude
('196', 5, ('50', '181'))
>>> q.filters(100).attributes
{'category': ('Comédie',)}
>>> Query.from_query_string(b"user=196").filters(100) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from worker.serving.filters import ItemFilters

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


class BadRequest(ValueError):
    """A request parameter is missing or malformed (HTTP 400, the message says which)."""


@dataclass(frozen=True)
class Query:
    """Parameters as ``name -> list of values`` (GET: repeated or comma-separated; POST: JSON
    strings, numbers, booleans, lists, and objects for ``items``/``attributes``)."""

    values: Mapping[str, list[Any]]
    split: bool = True  # comma-separated lists (a query string; JSON lists are lists already)

    @classmethod
    def from_query_string(cls, qs: bytes) -> Query:
        """A raw query string (what ASGI hands over): ``a=1&b=x%2Cy``. Plain ASCII without
        ``%``/``+`` is split directly (most requests; Starlette's parser costs ~10x more)."""
        try:
            text = qs.decode()
        except UnicodeDecodeError:
            raise BadRequest("the query string is not UTF-8") from None
        out: dict[str, list[Any]] = {}
        if "%" in text or "+" in text:
            pairs = parse_qsl(text, keep_blank_values=True)
        else:
            pairs = [(k, v) for k, _, v in (p.partition("=") for p in text.split("&") if p)]
        for k, v in pairs:
            out.setdefault(k, []).append(v)
        return cls(out)

    @classmethod
    def from_json(cls, body: Any) -> Query:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        return cls({str(k): (v if isinstance(v, list) else [v]) for k, v in body.items()},
                   split=False)

    def raw(self, name: str) -> Any:
        vs = self.values.get(name)
        return vs[-1] if vs else None

    def text(self, name: str, required: bool = True) -> str | None:
        v = self.raw(name)
        if v is None or v == "":
            if required:
                raise BadRequest(f"missing parameter {name!r}")
            return None
        if not isinstance(v, str | int):
            raise BadRequest(f"{name!r} must be a string")
        return str(v)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        v = self.raw(name)
        if v is None or v == "":
            return default
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise BadRequest(f"{name!r} must be an integer, got {v!r}") from None
        if not lo <= n <= hi:
            raise BadRequest(f"{name!r} must be between {lo} and {hi}, got {n}")
        return n

    def flag(self, name: str) -> bool:
        v = self.raw(name)
        if isinstance(v, bool) or v is None:
            return bool(v)
        if str(v).lower() in _TRUE | _FALSE:
            return str(v).lower() in _TRUE
        raise BadRequest(f"{name!r} must be true or false, got {v!r}")

    def ids(self, name: str, limit: int) -> list[str] | None:
        """A list of ids: repeated and/or comma-separated in a query, a JSON list in a body."""
        vs = self.values.get(name)
        if vs is None:
            return None
        out: list[str] = []
        for v in vs:
            if isinstance(v, str) and self.split and name in _COMMA:
                out += [p for p in v.split(",") if p]
            elif isinstance(v, str | int):
                out.append(str(v))
            else:
                raise BadRequest(f"{name!r} must hold strings")
        if len(out) > limit:
            raise BadRequest(f"{name!r} holds {len(out)} ids; at most {limit} "
                             "(serve.max_ids)")
        return out

    def attrs(self, name: str, limit: int) -> dict[str, list[str]]:
        """``attr=name:value`` pairs (query) or ``{"name": [values]}`` (JSON)."""
        v = self.raw(name)
        if isinstance(v, dict):
            return {str(k): [str(x) for x in (xs if isinstance(xs, list) else [xs])]
                    for k, xs in v.items()}
        out: dict[str, list[str]] = {}
        for pair in self.ids(name, limit) or []:
            key, sep, value = pair.partition(":")
            if not sep or not key:
                raise BadRequest(f"{name!r} takes NAME:VALUE (e.g. {name}=brand:acme), got "
                                 f"{pair!r}")
            out.setdefault(key, []).append(value)
        return out

    def filters(self, limit: int) -> ItemFilters | None:
        """The business filters every recommend call takes (docs/serving.md#filters); None
        when the request has none."""
        if _FILTER_KEYS.isdisjoint(self.values):
            return None
        try:
            return ItemFilters(
                exclude=self.ids("exclude", limit) or (),
                include=self.ids("include", limit),
                attributes=self.attrs("attributes" if "attributes" in self.values else "attr",
                                      limit),
                exclude_attributes=self.attrs(
                    "exclude_attributes" if "exclude_attributes" in self.values
                    else "exclude_attr", limit),
                categories=self.ids("category", limit) or self.ids("categories", limit),
                exclude_categories=(self.ids("exclude_category", limit)
                                    or self.ids("exclude_categories", limit)))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def ratings(self, name: str, limit: int) -> dict[str, float | str]:
        """Anonymous user's items: ``items=50:5,181:4`` or ``items=50,181`` (value 1) in a
        query; ``{"50": 5}`` or ``["50", "181"]`` in JSON. Values may be implicit event names."""
        v = self.raw(name)
        out: dict[str, float | str] = {}
        if isinstance(v, dict) and not self.split:
            pairs = [(str(k), x) for k, x in v.items()]
        else:
            pairs = []
            for p in self.ids(name, limit) or []:
                item, sep, value = p.rpartition(":") if ":" in p else (p, "", "1")
                pairs.append((item, value))
        for item, value in pairs:
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[item] = float(value)
            else:
                try:
                    out[item] = float(value)
                except (TypeError, ValueError):
                    out[item] = str(value)
        if not out:
            raise BadRequest(f"{name!r} needs at least one item (items=50:5,181:4)")
        if len(out) > limit:
            raise BadRequest(f"{name!r} holds {len(out)} items; at most {limit}")
        return out


_COMMA = frozenset({"exclude", "include", "category", "categories", "exclude_category",
                    "exclude_categories", "attr", "exclude_attr", "items"})
_FILTER_KEYS = frozenset({"exclude", "include", "category", "categories", "exclude_category",
                          "exclude_categories", "attr", "attributes", "exclude_attr",
                          "exclude_attributes"})
