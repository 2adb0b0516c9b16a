"""``produce --postgres``: a throwaway PostgreSQL cluster (port 55432, socket in a temp dir).

PostgreSQL refuses to run as root, so as root the cluster runs as user ``postgres``; its temp
dir sits directly under /tmp (world-traversable), not under pytest's private tmp_path.
With ``CI=true`` a cluster that cannot start fails the test; elsewhere it skips.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online_als.datasets import concat, load_movielens_100k, sort_by_time
from producers.postgres import iter_postgres_chunks
from tests.conftest import StackInfo, unavailable
from tests.test_producers_kafka import consume_all, topic  # noqa: F401 - fixture
from worker.cli.main import main
from worker.events import DecodeConfig, decode_batch

PORT = 55432


def _pg_tool(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _ensure_postgres() -> tuple[str, str]:
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if (initdb is None or pg_ctl is None) and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "postgresql"], check=False,
                       capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable("PostgreSQL is not installed (apt-get install -y postgresql)")
    assert initdb is not None and pg_ctl is not None
    return initdb, pg_ctl


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    initdb, pg_ctl = _ensure_postgres()
    root = Path(tempfile.mkdtemp(prefix="oals-pg-", dir="/tmp"))
    data, sock, logfile = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        for d in (root, sock):
            shutil.chown(d, "postgres", "postgres")
        as_user = {"user": "postgres", "group": "postgres"}

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **as_user)

    started = False
    try:
        proc = run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-sync")
        if proc.returncode:
            unavailable(f"postgres initdb failed: {proc.stderr[-2000:]}")
        # No TCP listener: the socket lives in our dir, so parallel runs cannot collide.
        opts = f"-p {PORT} -k {sock} -c listen_addresses='' -c fsync=off"
        proc = run(pg_ctl, "-D", str(data), "-l", str(logfile), "-o", opts, "-w", "-t", "60",
                   "start")
        if proc.returncode:
            log = logfile.read_text()[-2000:] if logfile.exists() else ""
            unavailable(f"postgres did not start: {proc.stderr[-1000:]} {log}")
        started = True
        yield f"host={sock} port={PORT} dbname=postgres user=postgres"
    finally:
        if started:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def ml100k_table(pg_dsn: str) -> str:
    """ML-100K in a table, rows shuffled so only ORDER BY can give time order."""
    import psycopg

    r = load_movielens_100k()
    order = np.random.default_rng(0).permutation(len(r))
    with psycopg.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE ml100k (user_id text, item_id text, rating real, ts bigint)")
        with cur.copy("COPY ml100k (user_id, item_id, rating, ts) FROM STDIN") as copy:
            for j in order.tolist():
                copy.write_row((r.user_ids[j], r.item_ids[j], float(r.values[j]),
                                int(r.timestamps[j])))
        cur.execute("CREATE TABLE clicks (userid int, movieid int, event text, "
                    "time timestamptz)")
        cur.execute("INSERT INTO clicks VALUES (1, 10, 'view', '2020-01-01 00:00:10+00'), "
                    "(2, 11, 'like', '2020-01-01 00:00:05+00'), (1, 12, NULL, NULL)")
    return "ml100k"


def test_chunks_are_bounded_and_time_ordered(pg_dsn: str, ml100k_table: str) -> None:
    chunks = list(iter_postgres_chunks(pg_dsn, table=ml100k_table, chunk_rows=30_000,
                                       itersize=5_000))
    assert [len(c) for c in chunks] == [30_000, 30_000, 30_000, 10_000]
    got = concat(chunks)
    assert np.all(np.diff(got.timestamps) >= 0)
    want = load_movielens_100k()
    assert sorted(zip(got.user_ids.tolist(), got.item_ids.tolist(), strict=True)) == sorted(
        zip(want.user_ids.tolist(), want.item_ids.tolist(), strict=True))


def test_query_aliases_and_timestamptz(pg_dsn: str, ml100k_table: str) -> None:
    r = concat(list(iter_postgres_chunks(pg_dsn, query="SELECT * FROM clicks")))
    # NULL time sorts last in PostgreSQL and becomes 0 (unknown: the worker uses Kafka time).
    assert r.user_ids.tolist() == ["2", "1", "1"]
    assert r.timestamps.tolist() == [1577836805, 1577836810, 0]
    assert r.events is not None and r.events.tolist() == ["like", "view", ""]
    with pytest.raises(ValueError, match="lack"):
        list(iter_postgres_chunks(pg_dsn, query="SELECT user_id FROM ml100k"))


@pytest.mark.stack
def test_produce_postgres_sends_all_in_time_order(
        stack: StackInfo, pg_dsn: str, ml100k_table: str, topic: str,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["produce", "--postgres", pg_dsn, "--table", ml100k_table, "--topic", topic,
                 "--json", "--no-progress", "--itersize", "7000",
                 "--set", f"kafka.bootstrap_servers={stack.bootstrap}",
                 "--set", "kafka.partitions=1"])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["sent"], summary["delivered"], summary["failed"]) == (100_000, 100_000, 0)
    msgs = consume_all(stack.bootstrap, topic, 100_000)
    decoded = decode_batch([m.value() for m in msgs], None, DecodeConfig())
    assert len(decoded) == 100_000 and not decoded.rejects
    got = decoded.ratings
    assert np.all(np.diff(got.timestamps) >= 0)  # one partition: the global order survives
    want = sort_by_time(load_movielens_100k())
    got_by_ts: dict[int, set[tuple[str, str]]] = defaultdict(set)
    want_by_ts: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for u, i, t in zip(got.user_ids.tolist(), got.item_ids.tolist(), got.timestamps.tolist(),
                       strict=True):
        got_by_ts[int(t)].add((u, i))
    for u, i, t in zip(want.user_ids.tolist(), want.item_ids.tolist(),
                       want.timestamps.tolist(), strict=True):
        want_by_ts[int(t)].add((u, i))
    assert got_by_ts == want_by_ts


@pytest.mark.stack
def test_produce_reads_the_dsn_from_a_file(
        stack: StackInfo, pg_dsn: str, ml100k_table: str, topic: str,  # noqa: F811
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--postgres-file``: the DSN (password included, in real use) never on the command line."""
    dsn_file = tmp_path / "pg_dsn"
    dsn_file.write_text(pg_dsn + "\n")
    code = main(["produce", "--postgres-file", str(dsn_file), "--query", "SELECT * FROM ml100k LIMIT 50",
                 "--topic", topic, "--json", "--no-progress",
                 "--set", f"kafka.bootstrap_servers={stack.bootstrap}",
                 "--set", "kafka.partitions=1"])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["sent"], summary["delivered"], summary["failed"]) == (50, 50, 0)
