"""``online-als``: one CLI for the stack, the worker, and operations.

Exit codes: 0 success, 1 failure, 2 bad usage or configuration, 3 something is down/missing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from worker.config import ConfigError, Settings, load_config, parse_set_flags

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_DOWN = 0, 1, 2, 3

# subcommand -> "module:function" registering its parser; each module owns its subcommand
SUBCOMMANDS: dict[str, str] = {
    "stack": "worker.stack.cli:add_stack_parser",
    "worker": "worker.cli:_add_worker_parser",
    "archive": "worker.ops_cli:add_archive_parser",
    "config": "worker.cli:_add_config_parser",
    "retrain": "worker.ops_cli:add_retrain_parser",
    "restore": "worker.ops_cli:add_restore_parser",
    "snapshots": "worker.ops_cli:add_snapshots_parser",
    "rollback": "worker.ops_cli:add_rollback_parser",
    "demo": "worker.demo:add_demo_parser",
    "evaluate": "worker.eval_cli:add_evaluate_parser",
    "tune": "worker.eval_cli:add_tune_parser",
    "produce": "producers.cli:add_produce_parser",
    "recommend": "worker.serving_cli:add_recommend_parser",
    "similar": "worker.serving_cli:add_similar_parser",
}


def add_common(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand takes: config file, --set overrides, --json, --log-level."""
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (or ONLINE_ALS_CONFIG)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                        help="override one setting, e.g. --set model.rank=32 (repeatable)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_config(getattr(args, "config", None), parse_set_flags(getattr(args, "set", [])))


def emit(args: argparse.Namespace, payload: Any, human: Callable[[Any], str] | None = None) -> None:
    if getattr(args, "json", False) or human is None:
        print(json.dumps(payload, indent=None if getattr(args, "json", False) else 2, default=str))
    else:
        print(human(payload))


def _add_worker_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a streaming worker (Kafka -> kernels -> Redis)",
                       description="Consume ratings from Kafka and keep the factors in Redis fresh.")
    add_common(p)
    p.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                   help="exit after this many idle seconds (burst mode for replays and tests)")
    p.add_argument("--no-metrics-server", action="store_true", help="do not serve /metrics")
    p.set_defaults(func=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from worker.loop import Worker
    from worker.metrics import WorkerMetrics, start_http_server

    settings = settings_from(args)
    logging.getLogger("online_als").info("settings: %s", json.dumps(settings.redacted(), default=str))
    metrics = WorkerMetrics(window=settings.worker.prequential_window)
    server = None
    if not args.no_metrics_server:
        server = start_http_server(settings.metrics.host, settings.metrics.port, metrics.registry)
    worker = Worker(settings, metrics, server)
    worker.install_signal_handlers()
    worker.run(idle_exit_s=args.idle_exit)
    return EXIT_OK


def _add_config_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    add_common(p)
    p.set_defaults(func=_show_config)


def _show_config(args: argparse.Namespace) -> int:
    emit(args, settings_from(args).redacted())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="online-als",
        description="Streaming ALS recommender: Kafka -> numba updates -> Redis, Cassandra.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for spec in SUBCOMMANDS.values():
        module, func = spec.split(":")
        getattr(importlib.import_module(module), func)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"online-als: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
