"""``online-als serve``: the HTTP API over the serving client (Starlette under uvicorn).

``app`` builds the routes, ``params`` parses requests, ``openapi`` describes them, ``metrics``
counts them. Spec: docs/serving.md#http-api.
"""
