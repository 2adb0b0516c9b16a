"""``online-als produce``: replay a rating file, a PostgreSQL table/query or a synthetic
stream into Kafka, paced or as fast as possible, with a progress bar and a summary."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from confluent_kafka import KafkaException
from tqdm import tqdm

from online_als.datasets import Ratings
from online_als.model import MODES
from producers import synthetic
from producers.producer import Mode, RatingProducer, replay
from producers.sources import file_chunks, implicit_from_ratings, limit_rows
from worker.cli.common import (
    EXIT_DOWN,
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    add_common,
    emit,
    kafka_down_line,
    settings_from,
)
from worker.config.base import mask_credentials
from worker.stores.kafka import ensure_topics

log = logging.getLogger("online_als.produce")

EXAMPLES = """examples:
  online-als produce /work/shared/data/movielens/ml-100k/u.data.gz
  online-als produce ratings.csv --rate 2000 --limit 50000 --format binary
  online-als produce u.data.gz --implicit-from-ratings          # like/view/dislike events
  online-als produce --synthetic --n-events 1000000 --rate 5000 --drift 0.5
  online-als produce --postgres 'host=/tmp port=5432 dbname=app' --table ratings
  PGPASSWORD=... online-als produce --postgres 'host=db user=app dbname=app' --table ratings
  online-als produce --postgres-file /run/secrets/pg_dsn --table ratings   # DSN with password

A password never goes on the command line (``ps`` shows it): libpq reads it from PGPASSWORD
or ~/.pgpass, or give the whole DSN in a file with --postgres-file.
"""


def add_produce_parser(sub: Any) -> None:
    """Register ``produce`` on the ``online-als`` sub-parsers."""
    p = sub.add_parser(
        "produce", help="replay ratings/events into Kafka (files, PostgreSQL, synthetic)",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    src = p.add_argument_group("source (one of)")
    src.add_argument("file", nargs="?", help="rating file: .data (TAB), .dat (::), .csv, "
                     ".parquet, each optionally gzipped")
    src.add_argument("--synthetic", action="store_true", help="planted-factor synthetic stream")
    src.add_argument("--postgres", metavar="DSN", help="PostgreSQL connection string, without "
                     "a password (PGPASSWORD or ~/.pgpass, or use --postgres-file)")
    src.add_argument("--postgres-file", metavar="PATH", help="a file holding the DSN (may hold "
                     "the password; e.g. a mounted secret)")
    src.add_argument("--table", help="with --postgres: table (or schema.table) to read")
    src.add_argument("--query", help="with --postgres: SELECT giving user_id,item_id,"
                     "rating|event,ts")

    out = p.add_argument_group("events")
    out.add_argument("--topic", help="target topic (default: kafka.topic from the settings)")
    out.add_argument("--format", choices=("json", "binary"), default="json", dest="wire")
    out.add_argument("--mode", choices=MODES,
                     help="explicit ratings or implicit events (default: model.mode)")
    out.add_argument("--implicit-from-ratings", action="store_true",
                     help="map ratings to events (implies --mode implicit): >= --like-min like, "
                     "<= --dislike-max dislike, else view")
    out.add_argument("--like-min", type=float, default=4.0)
    out.add_argument("--dislike-max", type=float, default=2.0)
    out.add_argument("--send-weights", action="store_true",
                     help="implicit: send a row's finite value as the event's weight override")
    out.add_argument("--event-id-prefix", help="JSON only: add event_id PREFIX1, PREFIX2, ...")
    out.add_argument("--kafka-timestamp", choices=("produce", "event"), default="produce",
                     help="Kafka message time: now, or the event's ts (beware retention)")

    pace = p.add_argument_group("pacing")
    pace.add_argument("--rate", type=float, default=0, metavar="N",
                      help="events per second (token bucket); 0 = as fast as possible")
    pace.add_argument("--limit", type=int, metavar="N", help="send at most N events")
    pace.add_argument("--chunk-rows", type=int, default=100_000, help="rows read per chunk")
    pace.add_argument("--no-progress", action="store_true", help="no progress bar")

    files = p.add_argument_group("files")
    files.add_argument("--file-format", default="auto",
                       choices=("auto", "data", "dat", "csv", "parquet"))
    files.add_argument("--order", choices=("time", "file"), default="time",
                       help="replay in timestamp order (default) or as stored")
    files.add_argument("--memory-rows", type=int, default=5_000_000,
                       help="rows sorted in memory; larger files use an external merge")
    files.add_argument("--spill-dir", help="directory for the external merge's runs")
    files.add_argument("--itersize", type=int, default=10_000,
                       help="PostgreSQL rows per server-side cursor round trip")

    syn = p.add_argument_group("synthetic (defaults: the MovieLens 20M shape)")
    syn.add_argument("--n-events", type=int, default=synthetic.ML20M["n_events"])
    syn.add_argument("--n-users", type=int, default=synthetic.ML20M["n_users"])
    syn.add_argument("--n-items", type=int, default=synthetic.ML20M["n_items"])
    syn.add_argument("--rank", type=int, default=16, help="planted factor rank")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--drift", type=float, default=0.0,
                     help="item-factor rotation over the stream, radians")
    syn.add_argument("--item-alpha", type=float, default=0.9, help="item popularity exponent")
    syn.add_argument("--user-alpha", type=float, default=0.6, help="user activity exponent")

    kafka = p.add_argument_group("kafka producer")
    kafka.add_argument("--linger-ms", type=float, default=20)
    kafka.add_argument("--batch-size", type=int, default=1 << 20, help="bytes per batch")
    kafka.add_argument("--compression", default="lz4",
                       choices=("none", "gzip", "snappy", "lz4", "zstd"))
    kafka.add_argument("--queue-max-messages", type=int,
                       help="librdkafka queue.buffering.max.messages")
    kafka.add_argument("-X", dest="producer_config", action="append", default=[],
                       metavar="KEY=VALUE", help="any librdkafka producer property (repeatable)")
    kafka.add_argument("--no-create-topic", action="store_true",
                       help="do not create the topic (kafka.partitions partitions) if missing")
    kafka.add_argument("--flush-timeout", type=float, default=120.0, metavar="SECONDS")
    p.set_defaults(func=run_produce)


def _postgres_dsn(args: argparse.Namespace) -> str:
    """The DSN from --postgres (refused when it holds a password) or --postgres-file."""
    if args.postgres_file:
        try:
            with open(args.postgres_file, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise ValueError(f"--postgres-file {args.postgres_file}: {exc.strerror}") from None
    if mask_credentials(args.postgres) != args.postgres:
        raise ValueError("--postgres: the DSN holds a password, which `ps` shows to every user; "
                         "put it in PGPASSWORD or ~/.pgpass, or the whole DSN in a file "
                         "(--postgres-file PATH)")
    return str(args.postgres)


def _source(args: argparse.Namespace, mode: Mode) -> tuple[str, Iterator[Ratings], int | None]:
    """(description, chunks, total rows if known)."""
    given = [bool(args.file), args.synthetic, bool(args.postgres or args.postgres_file)]
    if sum(given) != 1 or (args.postgres and args.postgres_file):
        raise ValueError("give exactly one source: FILE, --synthetic, --postgres DSN or "
                         "--postgres-file PATH")
    if args.postgres or args.postgres_file:
        from producers.postgres import iter_postgres_chunks

        if (args.table is None) == (args.query is None):
            raise ValueError("--postgres needs exactly one of --table or --query")
        chunks = iter_postgres_chunks(
            _postgres_dsn(args), table=args.table, query=args.query, chunk_rows=args.chunk_rows,
            itersize=args.itersize, order="time" if args.order == "time" else "source")
        return f"postgres:{args.table or 'query'}", chunks, None
    if args.synthetic:
        gen = synthetic.generate(
            args.n_events, args.n_users, args.n_items, k=args.rank, seed=args.seed,
            mode=mode, drift=args.drift, chunk_rows=args.chunk_rows,
            item_alpha=args.item_alpha, user_alpha=args.user_alpha)
        return "synthetic", gen, args.n_events
    if not Path(args.file).is_file():
        raise FileNotFoundError(f"rating file not found: {args.file}")
    chunks = file_chunks(args.file, chunk_rows=args.chunk_rows, fmt=args.file_format,
                         order=args.order, memory_rows=args.memory_rows,
                         spill_dir=args.spill_dir)
    return str(args.file), chunks, None


def _mode(args: argparse.Namespace, default: str) -> Mode:
    mode = "implicit" if args.implicit_from_ratings else str(args.mode or default)
    if mode not in MODES:
        raise ValueError(f"mode must be explicit or implicit, got {mode!r}")
    return cast(Mode, mode)


def _implicit_view(chunks: Iterator[Ratings], args: argparse.Namespace) -> Iterator[Ratings]:
    """Map ratings to events when asked; warn once if implicit rows carry no event type."""
    warned = False
    for chunk in chunks:
        if args.implicit_from_ratings and chunk.events is None:
            chunk = implicit_from_ratings(chunk, args.like_min, args.dislike_max)
        elif chunk.events is None and not warned:
            log.warning("implicit mode and the source has no event column: sending the values "
                        "as raw weights (use --implicit-from-ratings to map ratings to events)")
            warned = True
        yield chunk


def _config_pairs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"-X {pair!r}: expected KEY=VALUE, e.g. -X acks=all")
        out[key.strip()] = value.strip()
    return out


def _human(s: dict[str, Any]) -> str:
    lines = [
        f"{s['source']} -> {s['topic']} ({s['format']}, {s['mode']}): "
        f"{s['sent']:,} sent, {s['delivered']:,} delivered, {s['failed']:,} failed, "
        f"{s['skipped']:,} skipped in {s['seconds']:.2f} s ({s['rate_eps']:,.0f} events/s)"
    ]
    if s["queue_full_waits"]:
        lines.append(f"  local queue full {s['queue_full_waits']:,} times (waited, none dropped)")
    for reason, n in {**s["failure_reasons"], **s["skip_reasons"]}.items():
        lines.append(f"  {n:,} x {reason}")
    return "\n".join(lines)


def run_produce(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        mode = _mode(args, settings.model.mode)
        description, chunks, total = _source(args, mode)
        extra = _config_pairs(args.producer_config)
        if args.limit is not None:
            total = args.limit if total is None else min(total, args.limit)
        producer = RatingProducer(
            settings.kafka, args.topic, fmt=args.wire, mode=mode,
            linger_ms=args.linger_ms, batch_size=args.batch_size, compression=args.compression,
            queue_max_messages=args.queue_max_messages, send_weights=args.send_weights,
            event_id_prefix=args.event_id_prefix, kafka_timestamps=args.kafka_timestamp,
            config=extra)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"online-als produce: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.no_create_topic:
        try:
            ensure_topics(settings.kafka, {producer.topic: settings.kafka.partitions}, 15.0)
        except KafkaException as exc:
            print(f"online-als produce: {kafka_down_line(str(exc.args[0].str()))}",
                  file=sys.stderr)
            return EXIT_DOWN
    stream = limit_rows(chunks, args.limit)
    if mode == "implicit":
        stream = _implicit_view(stream, args)
    bar = tqdm(total=total, unit="ev", unit_scale=True, file=sys.stderr, desc="produce",
               disable=True if args.no_progress else None)
    start = time.monotonic()
    try:
        stats = replay(producer, stream, rate=args.rate or None, on_progress=bar.update,
                       flush_timeout=args.flush_timeout)
    finally:
        bar.close()
    seconds = time.monotonic() - start
    summary = {
        "source": description, "topic": producer.topic, "format": args.wire, "mode": mode,
        **stats.as_dict(), "seconds": round(seconds, 3),
        "rate_eps": round(stats.sent / seconds, 1) if seconds > 0 else 0.0,
    }
    emit(args, summary, _human)
    return EXIT_OK if stats.failed == 0 and stats.in_flight == 0 else EXIT_FAIL
