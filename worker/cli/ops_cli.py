"""Operations subcommands: retrain, restore, snapshots, rollback."""

from __future__ import annotations

import argparse
import json
import logging
import time
from contextlib import contextmanager
from typing import Any

from worker.cli.common import (
    EXIT_DOWN,
    EXIT_FAIL,
    EXIT_OK,
    add_common,
    add_service_flags,
    emit,
    settings_from,
)
from worker.config import Settings
from worker.stores.redis.store import RedisStore

log = logging.getLogger("online_als.ops")


@contextmanager
def _stores(settings: Settings, migrated: list[int] | None = None) -> Any:
    """Redis and a migrated Cassandra; ``migrated`` receives the migrations applied now (1
    among them: the keyspace did not exist)."""
    from worker.stores.cassandra.store import CassandraStore

    store = RedisStore.from_settings(settings.redis)
    with CassandraStore(settings.cassandra) as cass:
        applied = cass.migrate()
        if migrated is not None:
            migrated.extend(applied)
        yield store, cass


# -- retrain ---------------------------------------------------------------------------
def add_retrain_parser(sub: Any) -> None:
    p = sub.add_parser("retrain", help="full retrain: fit, gate, snapshot, catch up, switch",
                       description="Retrain from the Cassandra ratings log and promote the "
                                   "model if it passes the quality gate.")
    add_common(p)
    p.add_argument("--warm", action=argparse.BooleanOptionalAction, default=None,
                   help="warm start from the serving factors with fewer iterations")
    p.add_argument("--force", action="store_true", help="ignore retrain.min_new_ratings")
    p.add_argument("--force-promote", action="store_true",
                   help="promote even a candidate the quality gate rejects or cannot check "
                        "(the output and the version's recorded reason say so)")
    p.add_argument("--every", type=float, default=None, metavar="SECONDS",
                   help="keep running: retrain on this period (a scheduler beside the workers)")
    p.set_defaults(func=_retrain)


def _retrain(args: argparse.Namespace) -> int:
    from worker.control.retrain_job import run_retrain
    from worker.control.retrain_metrics import retrain_run

    settings = settings_from(args)
    period = args.every if args.every is not None else settings.retrain.period_s
    while True:
        code = EXIT_OK
        try:
            with retrain_run(settings, serve=bool(period)) as rm, _stores(settings) as (store, cass):
                report = run_retrain(
                    settings, cass, store, warm=args.warm, force=args.force,
                    force_promote=args.force_promote, observe=rm.observe_phase)
                rm.add_rows(report.train_ratings + report.holdout_ratings)
                for name, value in report.metrics.items():
                    rm.set_holdout(name, value)
                for name, value in report.baseline.items():
                    rm.set_holdout(name, value, model="serving")
                if report.version:
                    rm.set_candidate_version(report.version)
                if report.outcome in ("promoted", "rejected"):
                    from worker.control.lifecycle import apply_retention

                    apply_retention(settings, cass, store)
                rm.finish(report.outcome)
            emit(args, report.to_dict(), _human_report)
        except Exception as exc:
            if not period:  # one run: `online-als` prints one line with the documented code
                raise
            log.exception("retrain failed; the current version keeps serving")
            emit(args, {"outcome": "failed", "reason": repr(exc)})
            code = EXIT_FAIL
        if not period:
            return code
        time.sleep(period)


def _human_report(r: dict[str, Any]) -> str:
    lines = [f"retrain: {r['outcome']}" + (f" (version {r['version']})" if r["version"] else "")
             + (" by --force-promote, past the gate" if r.get("forced") else "")]
    if r.get("gate"):
        lines.append(f"  gate: {r['gate']}")
    if r["reason"]:
        lines.append(f"  reason: {r['reason']}")
    if r["metrics"]:
        lines.append("  holdout: " + ", ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items()))
    if r["baseline"]:
        lines.append("  current: " + ", ".join(f"{k}={v:.4f}" for k, v in r["baseline"].items()))
    lines.append(f"  train ratings {r['train_ratings']}, holdout {r['holdout_ratings']}, "
                 f"replayed {r['replayed_events']}")
    lines.append("  phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["seconds"].items()))
    return "\n".join(lines)


# -- restore ---------------------------------------------------------------------------
def add_restore_parser(sub: Any) -> None:
    p = sub.add_parser("restore", help="rebuild Redis from Cassandra after a loss",
                       description="Load the serving version into Redis as of the end of the "
                                   "archived ratings log (its newest stream snapshot plus the log "
                                   "after it) and set checkpoints there; workers then continue "
                                   "from Kafka.")
    add_common(p)
    p.add_argument("--force", action="store_true", help="replace what Redis holds now")
    p.set_defaults(func=_restore)


def _restore(args: argparse.Namespace) -> int:
    from worker.control.lifecycle import load_lock, restore

    settings = settings_from(args)
    migrated: list[int] = []
    with _stores(settings, migrated) as (store, cass), load_lock(store, wait_s=600) as held:
        if not held:
            print("online-als restore: another process is loading a version; try again later")
            return EXIT_DOWN
        try:
            report = restore(settings, cass, store, force=args.force,
                             keyspace_created=1 in migrated)
        except LookupError as exc:  # the message says what Cassandra holds and what to do
            print(f"online-als restore: {exc}")
            return EXIT_DOWN
    emit(args, report.to_dict(), lambda r: (
        f"restored version {r['version']}: {r['users']} users, {r['items']} items, "
        f"{r['log_events']} log events ({r['replayed']} replayed after the snapshot) in "
        f"{r['seconds']:.1f}s; workers resume at {r['checkpoints']}"))
    return EXIT_OK


# -- archive ---------------------------------------------------------------------------
def add_archive_parser(sub: Any) -> None:
    p = sub.add_parser("archive", help="run the archiver (Kafka -> the Cassandra ratings log)",
                       description="Write every accepted event to the Cassandra ratings log, "
                                   "contiguously per partition, and take stream snapshots of "
                                   "the serving version. Run one or more beside the workers.")
    add_common(p)
    add_service_flags(p)
    p.set_defaults(func=_archive)


def _archive(args: argparse.Namespace) -> int:
    from worker.control.archive import Archiver
    from worker.metrics import start_http_server

    settings = settings_from(args)
    archiver = Archiver(settings)
    server = None
    if not args.no_metrics_server:
        server = start_http_server(settings.metrics.host, settings.metrics.port,
                                   archiver.metrics.registry)
        server.ready = True
    archiver.install_signal_handlers()
    try:
        archiver.run(idle_exit_s=args.idle_exit)
    finally:
        if server is not None:
            server.close()
    return EXIT_OK


# -- snapshots -------------------------------------------------------------------------
def add_snapshots_parser(sub: Any) -> None:
    p = sub.add_parser("snapshots", help="list or show model versions (snapshots)")
    add_common(p)
    p.add_argument("action", choices=["list", "show", "prune"], nargs="?", default="list")
    p.add_argument("version", type=int, nargs="?", help="version number for 'show'")
    p.set_defaults(func=_snapshots)


def _snapshots(args: argparse.Namespace) -> int:
    if args.action == "show" and args.version is None:
        from worker.cli.common import UsageError

        raise UsageError("snapshots show needs a version number, e.g. "
                         "`online-als snapshots show 3` (see `snapshots list`)")
    settings = settings_from(args)
    with _stores(settings) as (store, cass):
        current = store.current_version()
        if args.action == "prune":
            from worker.control.lifecycle import apply_retention

            emit(args, {"deleted": apply_retention(settings, cass, store)})
            return EXIT_OK
        if args.action == "show":
            meta = cass.get_version(args.version)
            if meta is None:
                print(f"no version {args.version}")
                return EXIT_DOWN
            payload = {**meta.__dict__, "current": meta.version == current,
                       "resident": store.read_meta(meta.version) is not None}
            emit(args, payload, lambda d: "\n".join(f"{k:>12}: {v}" for k, v in d.items()))
            return EXIT_OK
        rows = [{"version": v.version, "status": v.status, "current": v.version == current,
                 "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created_at)),
                 "cutoff": v.cutoff, "metrics": v.metrics} for v in cass.list_versions()]
        emit(args, rows, _table)
    return EXIT_OK


def _cutoff_summary(cutoff: Any) -> str:
    """``{partition: offset}`` as "N partitions, M offsets"; anything else whole, never cut
    mid-object (``snapshots show N --json`` has the full cutoff)."""
    if not cutoff:
        return "-"
    if isinstance(cutoff, dict) and all(isinstance(v, int) for v in cutoff.values()):
        n = len(cutoff)
        return f"{n} partition{'s' if n != 1 else ''}, {sum(cutoff.values()):,} offsets"
    return json.dumps(cutoff, separators=(",", ":"))


def _table(rows: list[dict[str, Any]]) -> str:
    out = [f"{'ver':>4} {'status':<11} {'created (UTC)':<19}  {'cutoff':<28} metrics"]
    for r in rows:
        mark = "*" if r["current"] else " "
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items())
        out.append(f"{r['version']:>3}{mark} {r['status']:<11} {r['created']:<19}  "
                   f"{_cutoff_summary(r['cutoff']):<28} {metrics}")
    return "\n".join(out + ["(* = serving now)"])


# -- rollback --------------------------------------------------------------------------
def add_rollback_parser(sub: Any) -> None:
    p = sub.add_parser("rollback", help="serve an earlier model version again",
                       description="Switch the serving pointer to version N, loading it from "
                                   "Cassandra first when it is not resident in Redis.")
    add_common(p)
    p.add_argument("--to", type=int, required=True, metavar="N", help="version to serve")
    p.add_argument("--reason", default="manual rollback", help="recorded with the switch")
    p.set_defaults(func=_rollback)


def _rollback(args: argparse.Namespace) -> int:
    from worker.control.lifecycle import rollback

    settings = settings_from(args)
    with _stores(settings) as (store, cass):
        try:
            result = rollback(settings, cass, store, args.to, args.reason)
        except LookupError as exc:
            print(f"online-als rollback: {exc}")
            return EXIT_DOWN
    emit(args, result, lambda r: (
        f"serving version {r['to']} (was {r['from']}); "
        f"{'loaded from Cassandra' if r['loaded_from_cassandra'] else 'resident in Redis'}; "
        f"{r['seconds'] * 1000:.1f} ms"))
    return EXIT_OK
