"""``online-als``: one CLI for the stack, the worker, and operations.

Exit codes: 0 success, 1 failure, 2 bad usage or configuration, 3 something is down/missing.
Errors a user can cause print one line (what, and how to fix it) on stderr; :func:`main` maps
exceptions to exit codes centrally (:func:`exit_code_for`), so subcommands may simply raise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from worker.cli.common import (
    EXIT_DOWN,
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    NothingToDo,
    UsageError,
    add_common,
    add_service_flags,
    emit,
    kafka_down_line,
    mask_log_credentials,
    settings_from,
)
from worker.cli.demo import add_demo_parser
from worker.cli.eval_cli import add_evaluate_parser, add_tune_parser
from worker.cli.ops_cli import (
    add_archive_parser,
    add_restore_parser,
    add_retrain_parser,
    add_rollback_parser,
    add_snapshots_parser,
)
from worker.cli.produce import add_produce_parser
from worker.cli.serve_cli import add_attributes_parser, add_serve_parser
from worker.cli.serving_cli import add_recommend_parser, add_similar_parser
from worker.cli.simulate_cli import add_simulate_parser
from worker.config import ConfigError
from worker.config.base import mask_credentials
from worker.devstack.cli import add_stack_parser


def _add_worker_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a streaming worker (Kafka -> kernels -> Redis)",
                       description="Consume ratings from Kafka and keep the factors in Redis fresh.")
    add_common(p)
    add_service_flags(p)
    p.set_defaults(func=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from worker.metrics import WorkerMetrics, start_http_server
    from worker.runtime.loop import Worker

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


# subcommand -> the function that registers its parser. Each module owns its subcommand;
# this table is the one place that composes them (imported, not loaded by name).
SUBCOMMANDS: dict[str, Callable[[Any], object]] = {
    "stack": add_stack_parser,
    "worker": _add_worker_parser,
    "archive": add_archive_parser,
    "config": _add_config_parser,
    "retrain": add_retrain_parser,
    "restore": add_restore_parser,
    "snapshots": add_snapshots_parser,
    "rollback": add_rollback_parser,
    "demo": add_demo_parser,
    "simulate": add_simulate_parser,
    "evaluate": add_evaluate_parser,
    "tune": add_tune_parser,
    "produce": add_produce_parser,
    "recommend": add_recommend_parser,
    "similar": add_similar_parser,
    "serve": add_serve_parser,
    "attributes": add_attributes_parser,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="online-als",
        description="Streaming ALS recommender: Kafka -> numba updates -> Redis, Cassandra.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in SUBCOMMANDS.values():
        register(sub)
    return parser


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def exit_code_for(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that ended a subcommand."""
    import ssl

    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text \
            or "certificate verify failed" in text:
        return EXIT_USAGE, (f"the server's TLS certificate is not trusted ({_one_line(text, 160)});"
                            " set the CA that signed it: redis.tls_ca_file, "
                            "cassandra.tls_ca_file or kafka.ssl_ca_location")
    if isinstance(exc, ConfigError | UsageError):
        return EXIT_USAGE, str(exc) if isinstance(exc, ConfigError) else _one_line(str(exc))
    if isinstance(exc, NothingToDo):
        return EXIT_DOWN, _one_line(str(exc))
    if isinstance(exc, UnicodeDecodeError):
        return EXIT_USAGE, ("an input is not UTF-8 text (binary file?): "
                            f"{_one_line(str(exc), 120)}; pass a text file (CSV, TSV, MovieLens)")
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        what = getattr(exc, "filename", None)
        detail = f"{exc.strerror}: {what}" if what and exc.strerror else str(exc)
        return EXIT_USAGE, f"{_one_line(detail)}; check the path"
    if isinstance(exc, ssl.SSLError):
        return EXIT_DOWN, (f"TLS handshake failed ({_one_line(str(exc), 160)}); check the tls/ssl "
                           "CA file settings match the server's certificate")
    mod = type(exc).__module__
    if mod.startswith("redis"):
        if "Authentication" in name or "NOPERM" in str(exc) or "WRONGPASS" in str(exc):
            return EXIT_USAGE, (f"Redis refused the credentials ({_one_line(str(exc), 160)}); fix "
                                "redis.username/redis.password")
        if "Connection" in name or "Timeout" in name or "ClusterDown" in name:
            return EXIT_DOWN, (f"Redis is not reachable ({_one_line(str(exc), 200)}); start it "
                               "(`online-als stack up`) or fix redis.host/redis.port/redis.tls")
    if name in ("CassandraUnavailable", "NoHostAvailable", "OperationTimedOut"):
        code = EXIT_USAGE if "refused the credentials" in str(exc) else EXIT_DOWN
        return code, _one_line(str(exc))
    if name == "AuthenticationFailed":
        return EXIT_USAGE, "Cassandra refused the credentials; fix cassandra.username/password"
    if name == "NoModelError":
        return EXIT_DOWN, _one_line(str(exc))
    if name == "KafkaException":
        err: Any = exc.args[0] if exc.args else None
        text = str(err.str()) if hasattr(err, "str") else str(exc)
        from worker.stores.kafka import LIBRDKAFKA_LOG

        failure = LIBRDKAFKA_LOG.last_failure or ""
        if "Authentication" in text or "SASL" in text or "authentication" in failure.lower():
            return EXIT_USAGE, (f"Kafka refused the credentials ({_one_line(text, 200)}); fix "
                                "kafka.sasl_username/kafka.sasl_password")
        if any(word in text.lower() for word in ("transport", "brokers are down", "timed out",
                                                 "resolve")):
            return EXIT_DOWN, kafka_down_line(text)
        return EXIT_DOWN, (f"Kafka error ({_one_line(text, 200)}); start it or fix "
                           "kafka.bootstrap_servers/kafka.security_protocol")
    if isinstance(exc, ConnectionError | TimeoutError):
        return EXIT_DOWN, _one_line(str(exc))
    return EXIT_FAIL, (f"{name}: {_one_line(str(exc), 300)} (rerun with --log-level DEBUG for "
                       "the traceback)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )
    mask_log_credentials()  # a password in a URL never reaches the terminal or a log file
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if args.command not in ("worker", "archive") and logging.getLogger().level > logging.DEBUG:
        # the driver logs a traceback when no node answers; the one-line error says it all
        logging.getLogger("cassandra.cluster").setLevel(logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_FAIL
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line and an exit code
        code, message = exit_code_for(exc)
        logging.getLogger("online_als").debug("%s failed", args.command, exc_info=True)
        print(f"online-als {args.command}: {mask_credentials(message)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
