"""`online-als stack up|down|status`. Exit codes: 0 ok, 1 failure, 3 a server is down (status).

Wiring into another argparse CLI::

    sub = parser.add_subparsers(dest="command")
    add_stack_parser(sub)
    args = parser.parse_args()
    sys.exit(args.func(args))
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from worker.devstack.config import ALL_COMPONENTS, CORE_COMPONENTS, StackConfig, StackError
from worker.devstack.stack import Stack, select_components

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_DOWN = 3

_PORTS_HELP = (
    "Ports (env overrides): Kafka 9092 / controller 9093 (ONLINE_ALS_STACK_KAFKA_PORT, "
    "..._KAFKA_CONTROLLER_PORT), Redis 6379 (..._REDIS_PORT), Cassandra CQL 9042 / storage 7000 "
    "(..._CASSANDRA_PORT, ..._CASSANDRA_STORAGE_PORT), Prometheus 9090, PostgreSQL 5432. "
    "Runtime dir ~/.cache/online-als/stack (ONLINE_ALS_STACK_DIR)."
)


def _components(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in ALL_COMPONENTS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {','.join(ALL_COMPONENTS)}")
    return names


def add_stack_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
) -> argparse.ArgumentParser:
    """Register ``stack up|down|status`` on `subparsers`; each sets ``args.func(args) -> int``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, help="runtime dir (default ~/.cache/online-als/stack)")
    common.add_argument(
        "--only", type=_components, metavar="A,B", help=f"only these of {','.join(ALL_COMPONENTS)}"
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common.add_argument(
        "--secure", action="store_true",
        help="the secure stack: TLS + auth on Redis 6390, Kafka SASL_SSL 9192, Cassandra 9142, "
        "runtime dir ~/.cache/online-als/stack-secure (ONLINE_ALS_STACK_SECURE_DIR); runs "
        "beside the normal stack; client settings in <dir>/secure.env")

    stack = subparsers.add_parser(
        "stack",
        help="run the local Kafka/Redis/Cassandra stack",
        description="Local servers on 127.0.0.1 for development and tests. " + _PORTS_HELP,
    )
    sub = stack.add_subparsers(dest="stack_command", metavar="{up,down,status}", required=True)

    up = sub.add_parser(
        "up",
        parents=[common],
        help="start servers and wait until ready",
        description=f"Start {', '.join(CORE_COMPONENTS)} (default) and wait until each is "
        "ready. Already-running servers are left alone. " + _PORTS_HELP,
    )
    up.add_argument(
        "--with", dest="with_", type=_components, metavar="A,B",
        help="also start optional components (prometheus,postgres,redis-replica,serving)",
    )  # fmt: skip
    up.add_argument("--json", action="store_true", help="print per-server step timings as JSON")
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser(
        "down", parents=[common], help="stop servers by their recorded PIDs",
        description="SIGTERM each recorded PID, wait, then SIGKILL; remove the PID files.",
    )  # fmt: skip
    down.set_defaults(func=_cmd_down)

    status = sub.add_parser(
        "status", parents=[common], help="is each server's PID alive and its port answering?",
        description="Exit 0 when every reported server runs, 3 when one is down.",
    )  # fmt: skip
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)
    return stack


def _stack(args: argparse.Namespace) -> Stack:
    _setup_logging(args.verbose)
    overrides = {"runtime_dir": args.dir.expanduser().resolve()} if args.dir else {}
    if getattr(args, "secure", False):
        return Stack(StackConfig.secure_from_env(**overrides))
    return Stack(StackConfig.from_env(**overrides))


def _cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        stack = _stack(args)
        reports = stack.up(select_components(args.only, args.with_))
    except StackError as exc:
        print(f"stack up failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    logging.getLogger("worker.devstack").info("stack up done in %.1fs", time.monotonic() - t0)
    if stack.config.secure and not args.json:
        from worker.devstack.tls import TlsMaterial, write_env_file

        env_file = write_env_file(stack.config, TlsMaterial(stack.config.runtime_dir / "tls"))
        print(f"secure stack up; point online-als at it with: set -a; . {env_file}; set +a")
    if args.json:
        out = {
            n: {"started": r.started, "pid": r.pid, "steps": r.steps} for n, r in reports.items()
        }
        print(json.dumps(out, indent=2))
    return EXIT_OK


def _cmd_down(args: argparse.Namespace) -> int:
    try:
        stopped = _stack(args).down(args.only)
    except StackError as exc:
        print(f"stack down failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        statuses = _stack(args).status(args.only)
    except StackError as exc:
        print(f"stack status failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps({n: s.to_dict() for n, s in statuses.items()}, indent=2))
    else:
        print(f"{'server':<11}{'state':<9}{'pid':>8}{'port':>7}{'rss MiB':>9}  detail")
        for s in statuses.values():
            rss = f"{s.rss_mib:.0f}" if s.rss_mib is not None else "-"
            state = "running" if s.running else "DOWN"
            print(f"{s.name:<11}{state:<9}{s.pid or '-':>8}{s.port:>7}{rss:>9}  {s.detail}")
    return EXIT_OK if all(s.running for s in statuses.values()) else EXIT_DOWN


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("worker.devstack")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[stack %(asctime)s] %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.devstack up|down|status``."""
    parser = argparse.ArgumentParser(prog="online-als")
    add_stack_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stack", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
