"""``online-als serve`` (the HTTP API, docs/serving.md#http-api) and ``online-als attributes``
(item attributes for business filters: load from a file, set, show).

Exit codes: 0 ok, 2 bad usage or configuration (a port in use, a bad file), 3 Redis
unreachable.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import socket
import tempfile
from typing import Any

import orjson

from worker.cli.common import EXIT_OK, UsageError, add_common, emit, settings_from

log = logging.getLogger("online_als.serve")

SERVE_EXAMPLES = """examples:
  online-als serve                                  # 127.0.0.1:8080, one process
  online-als serve --host 0.0.0.0 --port 8080 --workers 4
  curl 'http://127.0.0.1:8080/v1/recommend?user=196&n=5&category=Comedy'
"""
ATTR_EXAMPLES = """examples:
  online-als attributes load --file ../shared/data/movielens          # ml-100k genres
  online-als attributes load --file ../shared/data/movielens --dataset ml-latest-small
  online-als attributes load --file brands.csv --name brand           # item_id,values
  online-als attributes set --item 50 --values Comedy,Drama           # while serving
  online-als attributes show [--item 50]
"""


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="HTTP API: recommend, similar, popular, because",
                       description="Serve recommendations over HTTP from the model version "
                       "Redis serves (OpenAPI at /openapi.json). Reads only.",
                       epilog=SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--host", help="address to bind (serve.host, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (serve.port, default 8080; 0 = any free)")
    p.add_argument("--workers", type=int, help="processes behind the port (serve.workers)")
    p.set_defaults(func=_run_serve)


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc})"
            raise UsageError(f"{host}:{port} {why}; pick another with --port or serve.port") \
                from None


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    sets = list(args.set)
    for flag in ("host", "port", "workers"):
        if getattr(args, flag) is not None:
            sets.append(f"serve.{flag}={getattr(args, flag)}")
    args.set = sets
    settings = settings_from(args)
    s = settings.serve
    from worker.stores.redis.store import connect

    connect(settings.redis).ping()  # Redis down: one line and exit code 3, before binding
    _check_port(s.host, s.port)
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401
        loop, http = "uvloop", "httptools"
    except ImportError:  # pragma: no cover - uvicorn[standard] is a dependency
        loop, http = "auto", "auto"
    common = dict(host=s.host, port=s.port, loop=loop, http=http, access_log=False,
                  log_level=str(args.log_level).lower(), lifespan="on")
    log.info("serving on http://%s:%d with %d process(es)", s.host, s.port, s.workers)
    if s.workers == 1:
        from worker.serving.api.app import create_app

        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return EXIT_OK
    mp_dir = tempfile.mkdtemp(prefix="online-als-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
    os.environ["ONLINE_ALS_SERVE_ARGS"] = orjson.dumps(
        {"config": args.config, "set": sets}).decode()
    try:
        uvicorn.run("worker.serving.api.app:app_from_env", factory=True, workers=s.workers,
                    **common)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(mp_dir, ignore_errors=True)
    return EXIT_OK


# -- attributes --------------------------------------------------------------------------------
def add_attributes_parser(sub: Any) -> None:
    p = sub.add_parser("attributes", help="item attributes for filters (categories, ...)",
                       description="Item attributes in Redis (docs/redis-keys.md, <P>:attr...) "
                       "that recommend calls filter on; servers pick up changes within "
                       "serve.refresh_s.", epilog=ATTR_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("action", choices=("load", "set", "show"))
    p.add_argument("--file", metavar="PATH", help="load: MovieLens folder/u.item/movies.csv, "
                   "or a CSV item_id,values ('|' between values)")
    p.add_argument("--dataset", default="ml-100k", choices=("ml-100k", "ml-latest-small"),
                   help="load: which MovieLens genres a data folder gives")
    p.add_argument("--name", default="category", help="the attribute (default category)")
    p.add_argument("--merge", action="store_true",
                   help="load: update the file's items only (default: replace the attribute)")
    p.add_argument("--item", metavar="ITEM_ID", help="set/show: one item")
    p.add_argument("--values", default=None, help="set: comma-separated values ('' = none)")
    p.set_defaults(func=_run_attributes)


def _run_attributes(args: argparse.Namespace) -> int:
    from worker.serving.attributes import (
        read_attribute_file,
        read_attribute_sets,
        read_item_attributes,
        write_attributes,
    )
    from worker.stores.redis.keys import RedisKeys, check_attr_name
    from worker.stores.redis.store import connect

    settings = settings_from(args)
    try:
        check_attr_name(args.name)
    except ValueError as exc:
        raise UsageError(f"--name: {exc}") from None
    client, keys = connect(settings.redis), RedisKeys(settings.redis.key_prefix)
    cluster = settings.redis.cluster
    if args.action == "load":
        if not args.file:
            raise UsageError("attributes load needs --file PATH (e.g. ../shared/data/movielens)")
        try:
            items = read_attribute_file(args.file, args.dataset)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        serial = write_attributes(client, keys, args.name, items, replace=not args.merge,
                                  cluster=cluster)
        values = {v for vs in items.values() for v in vs}
        emit(args, {"attribute": args.name, "items": len(items), "values": len(values),
                    "serial": serial},
             lambda p: f"{p['attribute']}: {p['items']:,} items, {p['values']} values "
                       f"(serial {p['serial']})")
    elif args.action == "set":
        if not args.item or args.values is None:
            raise UsageError("attributes set needs --item ITEM_ID and --values A,B ('' = none)")
        vals = [v for v in args.values.split(",") if v]
        serial = write_attributes(client, keys, args.name, {args.item: vals}, cluster=cluster)
        emit(args, {"item": args.item, args.name: vals, "serial": serial},
             lambda p: f"{args.item}: {args.name}={','.join(vals)} (serial {serial})")
    elif args.item:
        emit(args, {"item": args.item, **read_item_attributes(client, keys, args.item)})
    else:
        sets = read_attribute_sets(client, keys)
        emit(args, {"serial": sets.serial, "attributes": {
            n: {v: len(ids) for v, ids in vs.items()} for n, vs in sets.sets.items()}})
    return EXIT_OK
