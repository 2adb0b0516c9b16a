"""The life cycle every local server shares: prepare, spawn, wait until ready, status, stop.

A server is ours only through the PID file we wrote when we spawned it; `stop` signals that
PID and nothing else, after checking that its command line is still the server's (PID reuse).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from worker.devstack import proc
from worker.devstack.config import ENV_PREFIX, StackConfig, StackError

log = logging.getLogger("worker.devstack")


@dataclass
class ServerStatus:
    """What `status` found: `running` means the PID is alive AND the main port answers."""

    name: str
    running: bool
    pid: int | None
    pid_alive: bool
    port: int
    port_open: bool
    rss_mib: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StartReport:
    """What `up` did for one server, with the seconds each step took."""

    name: str
    started: bool
    pid: int | None
    steps: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.started:
            return f"{self.name}: already running (pid {self.pid})"
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.steps.items())
        return f"{self.name}: pid {self.pid}; {steps}; total {sum(self.steps.values()):.1f}s"


class Server(ABC):
    """One local server process. Subclasses fill in how to prepare, run and probe it."""

    name: ClassVar[str]
    start_timeout_s: ClassVar[float] = 60.0
    stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.home = config.runtime_dir / self.name
        self.log_dir = self.home / "logs"
        self.pid_file = config.runtime_dir / "run" / f"{self.name}.pid"
        self.out_file = self.log_dir / f"{self.name}.out"
        self.steps: dict[str, float] = {}
        self._log_offset = 0
        self._out_offset = 0
        self._popen: subprocess.Popen[bytes] | None = None
        self._wait_pid = 0
        self.spawned_at = self._deadline = 0.0

    # ---- what subclasses provide -------------------------------------------------------
    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Every TCP port the server binds, keyed by its StackConfig field; client port first."""

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    @property
    @abstractmethod
    def log_file(self) -> Path:
        """The server's own log, where readiness lines appear."""

    @abstractmethod
    def prepare(self) -> None:
        """Install / resolve, write configs, format; each step timed with `self.step`."""

    def is_ready(self, new_log: str) -> bool:
        """Beyond the open port: is it really serving? `new_log` is log text since spawn."""
        return True

    def cmd_marker(self) -> str:
        """A string in /proc/PID/cmdline that tells our server from an unrelated process."""
        return str(self.home)

    def spawn_user(self) -> str | None:
        """Unix user to run as (None = the current one)."""
        return None

    def spawn_env(self) -> dict[str, str] | None:
        """Environment of the server process (None = inherit ours)."""
        return None

    # ---- shared behaviour --------------------------------------------------------------
    @property
    def port(self) -> int:
        return next(iter(self.ports().values()))

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Time one start-up step and log it."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.steps[label] = self.steps.get(label, 0.0) + time.monotonic() - t0
            log.info("%s: %s %.1fs", self.name, label, self.steps[label])

    def recorded_pid(self) -> int | None:
        """The PID in our PID file if that process still runs our server, else None."""
        pid = proc.read_pid(self.pid_file)
        if pid is None or not proc.pid_alive(pid):
            return None
        if self.cmd_marker() not in proc.cmdline(pid):
            return None  # the PID was reused by an unrelated process
        return pid

    def status(self) -> ServerStatus:
        pid_in_file = proc.read_pid(self.pid_file)
        pid = self.recorded_pid()
        port_open = proc.port_open(self.config.host, self.port)
        if pid is not None and port_open:
            detail = "running"
        elif pid is not None:
            detail = "process alive but port closed (starting, or hung)"
        elif pid_in_file is not None:
            detail = f"dead (stale pid file, pid {pid_in_file})"
        else:
            detail = "not started"
        if pid is None and port_open:
            owner = proc.port_owner(self.port)
            detail += f"; port {self.port} is held by another process (pid {owner})"
        return ServerStatus(
            name=self.name,
            running=pid is not None and port_open,
            pid=pid if pid is not None else pid_in_file,
            pid_alive=pid is not None,
            port=self.port,
            port_open=port_open,
            rss_mib=proc.rss_mib(pid) if pid is not None else None,
            detail=detail,
        )

    def check_ports_free(self) -> None:
        """Fail clearly when another process already listens on one of our ports."""
        for field_name, port in self.ports().items():
            if proc.port_open(self.config.host, port, timeout=0.5):
                owner = proc.port_owner(port)
                who = f"pid {owner}: {proc.cmdline(owner)[:120]}" if owner else "unknown pid"
                raise StackError(
                    f"{self.name}: port {port} on {self.config.host} is busy, held by another "
                    f"process ({who}). Stop that process, or pick another port with "
                    f"{ENV_PREFIX}{field_name.upper()}=..."
                )

    def spawn(self) -> int:
        """Start the server in its own session (it outlives the CLI); record its PID."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = proc.file_size(self.log_file)
        self._out_offset = proc.file_size(self.out_file)
        cmd = self.command()
        log.debug("%s: %s", self.name, " ".join(cmd))
        with self.out_file.open("ab") as out:
            p = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,  # Ctrl-C on the CLI must not reach the servers
                user=self.spawn_user(),
                env=self.spawn_env(),
                close_fds=True,
            )
        proc.write_pid(self.pid_file, p.pid)
        self._popen = p  # keep it so the child is reaped if it dies while we wait
        return p.pid

    def expect_ready(self, pid: int) -> None:
        """Arm `poll_ready` for `pid`: the hard start timeout counts from now."""
        self._wait_pid = pid
        self.spawned_at = time.monotonic()
        self._deadline = self.spawned_at + self.start_timeout_s * self.config.timeout_scale

    def poll_ready(self) -> bool:
        """One readiness check; raises StackError when the server died or timed out."""
        pid = self._wait_pid
        code = self._exit_code(pid)
        if code is not None or not proc.pid_alive(pid):
            self._fail(f"died during start (exit code {code})", pid)
        if proc.port_open(self.config.host, self.port, timeout=1.0) and self.is_ready(
            proc.read_from(self.log_file, self._log_offset)
        ):
            return True
        if time.monotonic() > self._deadline:
            waited = time.monotonic() - self.spawned_at
            self._fail(f"not ready after {waited:.0f}s (hard timeout)", pid, kill=True)
        return False

    def wait_ready(self, pid: int) -> None:
        """Block until the server answers; StackError when it dies or the timeout passes."""
        self.expect_ready(pid)
        while not self.poll_ready():
            time.sleep(0.25)

    def _exit_code(self, pid: int) -> int | None:
        """Exit code if `pid` is the child we spawned and it has exited (reaps it)."""
        popen = self._popen
        return popen.poll() if popen is not None and popen.pid == pid else None

    def _fail(self, why: str, pid: int, kill: bool = False) -> None:
        if kill:
            proc.terminate(pid, 10.0, self.stop_signal)
        self.pid_file.unlink(missing_ok=True)
        raise StackError(f"{self.name}: {why}\n{self.log_excerpt()}")

    def log_excerpt(self, lines: int = 30) -> str:
        """The last lines of the console output and of the server log, for error messages."""
        parts = []
        offsets = {self.out_file: self._out_offset, self.log_file: self._log_offset}
        for path, offset in offsets.items():
            # Prefer what this start wrote; the files are appended to across restarts.
            text = proc.read_from(path, offset).splitlines()[-lines:] or proc.tail(path, lines)
            if text:
                parts.append(f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or f"(no log output in {self.log_dir})"

    def stop(self) -> bool:
        """Stop our recorded PID (SIGTERM, wait, SIGKILL); remove the PID file.

        Returns True when a process was stopped."""
        pid = self.recorded_pid()
        stopped = False
        if pid is not None:
            t0 = time.monotonic()
            killed = proc.terminate(pid, self.config.stop_timeout_s, self.stop_signal)
            how = "SIGKILL after timeout" if killed else "clean"
            log.info("%s: stopped pid %d (%s) %.1fs", self.name, pid, how, time.monotonic() - t0)
            stopped = True
        self.pid_file.unlink(missing_ok=True)
        return stopped

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig`` (default SIGKILL: a crash, not a stop) to our recorded PID; the PID file
        stays, so ``up`` finds it stale and starts the server again. Returns the PID."""
        pid = self.recorded_pid()
        if pid is not None:
            os.kill(pid, sig)
            if sig == signal.SIGKILL:
                deadline = time.monotonic() + 10
                while proc.pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
            log.info("%s: sent signal %d to pid %d", self.name, sig, pid)
        return pid

    def ensure_dirs(self, *dirs: Path) -> None:
        for d in (self.home, self.log_dir, *dirs):
            d.mkdir(parents=True, exist_ok=True)

    def deploy_file(self, *parts: str) -> Path:
        return self.config.deploy_dir.joinpath(*parts)


def java_env() -> dict[str, str]:
    """Environment for JVMs: drop options injected by the caller's shell that could clash."""
    env = dict(os.environ)
    for var in ("JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH"):
        env.pop(var, None)
    return env
