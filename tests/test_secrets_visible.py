"""No secret anywhere a person sees it (issue 23, item 4): URL and DSN passwords are masked in
``online-als config``, in the logs of a real retrain, in error lines, and refused on the
command line (``ps`` shows every argument)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import Isolated, StackInfo, make_settings
from worker.config import environ_for
from worker.stores.cassandra.store import CassandraStore

SECRET = "hunter2-not-for-eyes"
GATEWAY = f"http://ops:{SECRET}@127.0.0.1:9/"  # port 9 (discard): nothing listens


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], capture_output=True,
                          text=True, timeout=180, env=env)


def test_config_masks_a_password_in_a_url() -> None:
    proc = _cli("config", "--json", "--set", f"metrics.pushgateway={GATEWAY}")
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert '"pushgateway": "http://ops:****@127.0.0.1:9/"' in proc.stdout


@pytest.mark.stack
def test_a_retrain_pushing_to_a_gateway_with_a_password_never_logs_it(
        stack: StackInfo, isolated: Isolated) -> None:
    """A real retrain run (nothing new to fit) pushes its metrics to a Pushgateway URL with
    credentials that is down: the failure is logged, with the URL masked."""
    settings = make_settings(stack, isolated, **{"cassandra.enabled": True,
                                                 "metrics.pushgateway": GATEWAY})
    env = environ_for(settings)
    try:
        proc = _cli("retrain", env=env)
        out = proc.stdout + proc.stderr
        assert "could not push retrain metrics to http://ops:****@127.0.0.1:9/" in out, out[-3000:]
        assert SECRET not in out
    finally:
        with CassandraStore(settings.cassandra) as cass:
            cass.drop_keyspace()


def test_a_postgres_dsn_with_a_password_on_the_command_line_is_refused() -> None:
    proc = _cli("produce", "--postgres", f"host=127.0.0.1 user=app password={SECRET}",
                "--table", "ratings")
    assert proc.returncode == 2, proc.stderr
    assert "PGPASSWORD" in proc.stderr and "--postgres-file" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    url = _cli("produce", "--postgres", f"postgresql://app:{SECRET}@127.0.0.1/app",
               "--table", "ratings")
    assert url.returncode == 2 and SECRET not in url.stdout + url.stderr
