"""What ``restore`` found when Cassandra has no version to restore, and what to do about it.

"No promoted version" alone does not tell an operator whether they point at the wrong
keyspace, whether Cassandra lost its data, or whether the versions are there but none served.
:func:`nothing_to_restore` reads what the keyspace does hold (its schema migrations, the
versions and their statuses, the switch log, the ratings log, the archive checkpoints) and
ends with the step that fits what it found.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from worker.config import Settings


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _schema(cass: Any, created_now: bool | None) -> str:
    ks = cass.settings.keyspace
    rows = cass.db.session.execute(
        f"SELECT version, applied_at FROM {ks}.schema_migrations")
    applied = sorted((int(v), at) for v, at in rows)
    if not applied:
        return f"keyspace {ks}: exists, but no schema migration is recorded"
    first = applied[0][1]
    since = (f", schema created {_when(first.replace(tzinfo=dt.UTC).timestamp())}"
             if first is not None else "")
    how = " (it did not exist: this command just created it)" if created_now else ""
    return (f"keyspace {ks}: exists{how}{since}, migrations "
            f"{[v for v, _ in applied]}")


def _versions(cass: Any) -> tuple[str, list[Any]]:
    versions = cass.list_versions()
    if not versions:
        return "model_versions: none", versions
    statuses = Counter(v.status for v in versions)
    listed = ", ".join(f"{v.version} {v.status}" for v in versions[-10:])
    more = f" (newest 10 of {len(versions)})" if len(versions) > 10 else ""
    return (f"model_versions: {len(versions)} ("
            + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
            + f"): {listed}{more}"), versions


def _log(cass: Any, topic: str) -> tuple[str, str, bool]:
    high = cass.log_high_offsets(topic)
    ranges = cass.archive_ranges(topic)
    log_line = (f"ratings log of topic {topic!r}: no rows" if not high else
                f"ratings log of topic {topic!r}: rows in {len(high)} partition(s), next offset "
                + ", ".join(f"[{p}] {o}" for p, o in sorted(high.items())))
    ckpt_line = (f"archive checkpoints of {topic!r}: none (no archiver has written this log)"
                 if not ranges else
                 f"archive checkpoints of {topic!r}: complete for "
                 + ", ".join(f"[{p}] {r.start}..{r.next - 1}" if r.next > r.start
                             else f"[{p}] nothing yet" for p, r in sorted(ranges.items())))
    return log_line, ckpt_line, bool(high or ranges)


def nothing_to_restore(settings: Settings, cass: Any, created_now: bool | None = None) -> str:
    """The error text of a restore that found no serving version: what Cassandra holds and the
    next step. ``created_now``: the caller's migrate created the keyspace a moment ago."""
    c = settings.cassandra
    where = f"cassandra {','.join(c.hosts)}:{c.port}"
    lines = [f"Cassandra holds no promoted model version to restore. {where} holds:"]
    try:
        lines.append("  " + _schema(cass, created_now))
        versions_line, versions = _versions(cass)
        lines.append("  " + versions_line)
        switches = cass.list_switches(limit=1)
        lines.append("  switch log: " + (f"last switch to version {switches[0].version} at "
                                         f"{_when(switches[0].at)}" if switches else "empty"))
        log_line, ckpt_line, has_log = _log(cass, settings.kafka.topic)
        lines += ["  " + log_line, "  " + ckpt_line]
    except Exception as exc:  # the explanation must never hide the original refusal
        lines.append(f"  (reading it failed: {exc!r})")
        return "\n".join(lines)
    lines.append("What to do: " + _advice(settings, versions, has_log, created_now))
    return "\n".join(lines)


def _advice(settings: Settings, versions: list[Any], has_log: bool,
            created_now: bool | None) -> str:
    ks = settings.cassandra.keyspace
    servable = [v.version for v in versions if v.status in ("rolled_back", "rejected")]
    if servable:
        return (f"versions {servable} can serve again: `online-als rollback --to "
                f"{servable[-1]}` loads one from Cassandra into Redis and switches to it.")
    if has_log:
        return ("the ratings log is there, but no version ever served: `online-als retrain "
                "--force` fits one from the log and serves it (no restore needed after it).")
    lost = ("this command just created the keyspace, so " if created_now else "")
    return (f"Cassandra is empty: {lost}check that cassandra.keyspace ({ks!r}), "
            "cassandra.hosts and kafka.topic name the deployment you mean. If they do, "
            "Cassandra lost its data: restore the keyspace from a backup or snapshot "
            "(nodetool refresh / sstableloader), then run restore again. A new deployment "
            "has nothing to restore: start the workers, they bootstrap an empty model, and "
            "the archiver fills the log from Kafka.")
