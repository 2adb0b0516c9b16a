"""What every ``online-als`` subcommand module shares: exit codes, the errors that
map to them, the common flags, settings loading and output.

Exit codes: 0 success, 1 failure, 2 bad usage or configuration, 3 something is down/missing.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import Any

from worker.config import Settings, load_config, parse_set_flags
from worker.config.base import mask_credentials

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_DOWN = 0, 1, 2, 3


class UsageError(Exception):
    """A bad argument or input file: one line on stderr, exit 2."""


class NothingToDo(Exception):
    """Nothing to act on (no model, no such version): one line on stderr, exit 3."""


class MaskCredentials(logging.Filter):
    """Masks URL and DSN passwords in every record a handler writes (a Pushgateway URL with
    ``user:password@`` must not reach a log file or a terminal; :func:`mask_credentials`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = mask_credentials(text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


def mask_log_credentials() -> None:
    """Install :class:`MaskCredentials` on every handler of the root logger."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskCredentials) for f in handler.filters):
            handler.addFilter(MaskCredentials())


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def kafka_down_line(error: str) -> str:
    """The one line for Kafka not answering: the client's error and, where librdkafka logged
    one, its last connection failure (which broker, and how it failed)."""
    from worker.stores.kafka import LIBRDKAFKA_LOG

    cause = one_line(error, 160)
    failure = LIBRDKAFKA_LOG.last_failure
    if failure:
        cause += f"; last: {one_line(failure, 200)}"
    return (f"Kafka is not reachable ({cause}); start it (`online-als stack up --only kafka`) "
            "or fix kafka.bootstrap_servers/kafka.security_protocol")


def add_common(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand takes: config file, --set overrides, --json, --log-level."""
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (or ONLINE_ALS_CONFIG)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                        help="override one setting, e.g. --set model.rank=32 (repeatable)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")


def add_service_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the long-running consumers (``worker``, ``archive``)."""
    parser.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                        help="exit after this many idle seconds (burst mode for replays and "
                             "tests)")
    parser.add_argument("--no-metrics-server", action="store_true", help="do not serve /metrics")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_config(getattr(args, "config", None), parse_set_flags(getattr(args, "set", [])))


def emit(args: argparse.Namespace, payload: Any, human: Callable[[Any], str] | None = None) -> None:
    if getattr(args, "json", False) or human is None:
        print(json.dumps(payload, indent=None if getattr(args, "json", False) else 2, default=str))
    else:
        print(human(payload))
