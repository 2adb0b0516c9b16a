"""A throwaway PostgreSQL cluster (initdb + postgres) with trust auth on loopback (optional).

PostgreSQL refuses to run as root, so as root the cluster belongs to `config.postgres_user`.
That user must reach the data directory: when the runtime dir sits under a private home
(/root is mode 700) the cluster lives in /var/tmp instead, linked from the runtime dir.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path

from worker.devstack.config import StackConfig, StackError
from worker.devstack.servers import Server
from worker.devstack.tools import ensure_debian_package

READY_LINE = "database system is ready to accept connections"


def _pg_bin(tool: str) -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if not found:
        raise StackError(f"postgres: no /usr/lib/postgresql/*/bin/{tool}")
    return found[-1]


def _world_traversable(path: Path) -> bool:
    """True when every ancestor of `path` lets any user pass (o+x)."""
    for d in [path, *path.parents]:
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except FileNotFoundError:
            continue  # will be created by us with a default mode
    return True


class PostgresServer(Server):
    name = "postgres"
    start_timeout_s = 60.0
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM waits for clients to leave

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.user = config.postgres_user if os.geteuid() == 0 else None
        if self.user is None or _world_traversable(config.runtime_dir):
            self.cluster_dir = self.home / "data"
        else:
            tag = hashlib.sha256(str(config.runtime_dir).encode()).hexdigest()[:10]
            self.cluster_dir = Path("/var/tmp") / f"online-als-postgres-{tag}" / "data"

    def ports(self) -> dict[str, int]:
        return {"postgres_port": self.config.postgres_port}

    @property
    def log_file(self) -> Path:
        return self.out_file  # the postmaster logs to stderr

    def prepare(self) -> None:
        with self.step("install"):
            ensure_debian_package("postgresql", "/usr/lib/postgresql/*/bin/initdb")
        with self.step("initdb"):
            self.initdb()

    def initdb(self) -> None:
        self.ensure_dirs()
        link = self.home / "data"
        if self.cluster_dir != link and not link.is_symlink():
            link.symlink_to(self.cluster_dir)
        if (self.cluster_dir / "PG_VERSION").exists():
            return
        self.cluster_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            for d in (self.cluster_dir.parent, self.cluster_dir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        self.cluster_dir.chmod(0o700)
        cmd = [
            str(_pg_bin("initdb")),
            "-D", str(self.cluster_dir),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",  # throwaway cluster
        ]  # fmt: skip
        p = subprocess.run(
            cmd, capture_output=True, text=True, user=self.user, cwd="/", timeout=120, check=False
        )
        if p.returncode != 0:
            out = "\n".join((p.stdout + p.stderr).splitlines()[-30:])
            raise StackError(f"postgres: initdb failed (exit {p.returncode}):\n{out}")

    def command(self) -> list[str]:
        return [
            str(_pg_bin("postgres")),
            "-D", str(self.cluster_dir),
            "-p", str(self.config.postgres_port),
            "-c", f"listen_addresses={self.config.host}",
            "-c", f"unix_socket_directories={self.cluster_dir}",
            # Throwaway data: durability off for speed.
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip

    def cmd_marker(self) -> str:
        return str(self.cluster_dir)

    def spawn_user(self) -> str | None:
        return self.user

    def is_ready(self, new_log: str) -> bool:
        return READY_LINE in new_log
