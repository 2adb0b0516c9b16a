"""The OpenAPI 3.1 description of ``online-als serve``, served at ``/openapi.json``.

Written by hand (the service is Starlette, chosen over FastAPI for its per-request cost:
``benchmarks/bench_asgi_overhead.py``); ``tests/test_serving_http.py`` checks that every route
of the app is described here and every described route exists.
"""

from __future__ import annotations

from typing import Any

_ID = {"type": "string"}
_IDS = {"type": "array", "items": _ID}


def _q(name: str, desc: str, schema: dict[str, Any] | None = None,
       required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": desc,
            "schema": schema or {"type": "string"}}


_N = _q("n", "how many results (1..serve.max_n)", {"type": "integer", "minimum": 1,
                                                   "default": 10})
FILTER_PARAMS = [
    _q("exclude", "item ids never returned (comma-separated or repeated)", _IDS),
    _q("include", "only these item ids may be returned", _IDS),
    _q("category", "keep items with any of these categories (attribute `category`)", _IDS),
    _q("exclude_category", "drop items with any of these categories", _IDS),
    _q("attr", "NAME:VALUE; keep items having the value (OR within a name, AND across "
       "names)", _IDS),
    _q("exclude_attr", "NAME:VALUE; drop items having the value", _IDS),
]
_FILTERS_BODY = {
    "exclude": _IDS, "include": _IDS, "categories": _IDS, "exclude_categories": _IDS,
    "attributes": {"type": "object", "additionalProperties": _IDS},
    "exclude_attributes": {"type": "object", "additionalProperties": _IDS},
}
_RESULTS = {"application/json": {"schema": {"$ref": "#/components/schemas/Results"}}}
_ERRORS = {
    "400": {"description": "a bad parameter (the message names it)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    "503": {"description": "no model version in Redis yet, or Redis unreachable",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    "500": {"description": "an unexpected failure (logged with its traceback)",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
}


def _get(summary: str, params: list[dict[str, Any]], content: dict[str, Any] | None = None,
         errors: bool = True) -> dict[str, Any]:
    return {"summary": summary, "parameters": params,
            "responses": {"200": {"description": "ok", "content": content or _RESULTS},
                          **(_ERRORS if errors else {})}}


_RECOMMEND_BODY = {
    "type": "object",
    "properties": {"user": _ID, "items": {"oneOf": [
        {"type": "object", "additionalProperties": {"oneOf": [{"type": "number"},
                                                               {"type": "string"}]}}, _IDS]},
        "n": {"type": "integer"}, "include_seen": {"type": "boolean"}, **_FILTERS_BODY},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "online-als serving API", "version": "1",
             "description": "Recommendations from the model version Redis serves "
             "(docs/serving.md#http-api). Every call answers from one model version, named "
             "in the reply."},
    "paths": {
        "/v1/recommend": {
            "get": _get("Top-n items for a known user (`user`) or an anonymous one (`items`)", [
                _q("user", "a user id as sent in the events"),
                _q("items", "anonymous user: ITEM[:VALUE],... (ratings, weights or implicit "
                   "event names; value 1 when left out); nothing is written", _IDS),
                _N, _q("include_seen", "do not exclude the user's seen items",
                       {"type": "boolean", "default": False}), *FILTER_PARAMS]),
            "post": {"summary": "As GET, with a JSON body (long id lists, ids with commas)",
                     "requestBody": {"content": {"application/json": {
                         "schema": _RECOMMEND_BODY}}},
                     "responses": {"200": {"description": "ok", "content": _RESULTS},
                                   **_ERRORS}},
        },
        "/v1/because": {"get": _get(
            "The user's seen items that contribute most to their score for `item`",
            [_q("user", "user id", required=True), _q("item", "item id", required=True),
             {**_N, "schema": {"type": "integer", "default": 5}}])},
        "/v1/similar": {"get": _get("Items with the most cosine-similar factors",
                                    [_q("item", "item id", required=True), _N,
                                     *FILTER_PARAMS])},
        "/v1/popular": {"get": _get("Items with the most events", [_N, *FILTER_PARAMS])},
        "/healthz": {"get": _get("The process answers", [], {"text/plain": {}}, errors=False)},
        "/readyz": {"get": {"summary": "A model version is loaded and Redis answered the last "
                            "check", "responses": {"200": {"description": "ready"},
                                                   "503": {"description": "not ready"}}}},
        "/metrics": {"get": _get("Prometheus metrics (all worker processes)", [],
                                 {"text/plain": {}}, errors=False)},
        "/openapi.json": {"get": _get("This description", [], {"application/json": {}},
                                      errors=False)},
    },
    "components": {"schemas": {
        "Results": {"type": "object", "required": ["version", "source", "items"],
                    "properties": {
                        "version": {"type": "integer", "description": "the model version"},
                        "source": {"enum": ["model", "popular", "unknown"]},
                        "items": {"type": "array", "items": {
                            "type": "object", "required": ["id", "score"],
                            "properties": {"id": _ID, "score": {"type": "number"}}}}}},
        "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
    }},
}
