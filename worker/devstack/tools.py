"""External tools the stack needs: Debian packages, OpenJDK 17, Maven-resolved server jars."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from worker.devstack.config import StackError

log = logging.getLogger("worker.devstack")

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}
_apt_updated = False


def ensure_debian_package(package: str, binary: str | Path) -> None:
    """Install `package` with apt-get when `binary` (a name on PATH or a path) is missing."""
    if _have(binary):
        return
    if os.geteuid() != 0:
        raise StackError(
            f"{binary} is missing and only root can install it: "
            f"sudo apt-get update && sudo apt-get install -y {package}"
        )
    global _apt_updated
    env = {**os.environ, **_APT_ENV}
    log.info("installing Debian package %s (apt-get)", package)
    # A policy-rc.d that answers 101 stops the package from starting its own service on
    # the default port (redis on 6379, ...), which would then look "busy by someone else".
    with _no_service_autostart():
        if not _apt_updated:
            _run(["apt-get", "update", "-q"], env, f"apt-get update (for {package})")
            _apt_updated = True
        _run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
            env,
            f"apt-get install {package}",
        )
    if not _have(binary):
        raise StackError(f"apt-get installed {package} but {binary} is still missing")


def _have(binary: str | Path) -> bool:
    if "/" in str(binary) or "*" in str(binary):
        return any(Path("/").glob(str(binary).lstrip("/")))
    return shutil.which(str(binary)) is not None


class _no_service_autostart:  # noqa: N801 - used as a context manager, reads like one
    path = Path("/usr/sbin/policy-rc.d")

    def __enter__(self) -> None:
        self.created = not self.path.exists()
        if self.created:
            self.path.write_text("#!/bin/sh\nexit 101\n")
            self.path.chmod(0o755)

    def __exit__(self, *exc: object) -> None:
        if self.created:
            self.path.unlink(missing_ok=True)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _last_lines(text: str, n: int = 30) -> str:
    """The last `n` lines of tool output, without colour codes."""
    return "\n".join(_ANSI.sub("", text).splitlines()[-n:])


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed (exit {proc.returncode}):\n{_last_lines(proc.stdout + proc.stderr)}"
        )


@cache
def java_major_version(java: Path) -> int:
    """The feature version (11, 17, 25, ...) of the JVM at `java`."""
    if not os.access(java, os.X_OK):
        raise StackError(
            f"Java not found at {java}: apt-get install -y openjdk-17-jre-headless "
            "or set ONLINE_ALS_STACK_JAVA to an OpenJDK 17 java binary"
        )
    proc = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if proc.returncode != 0 or m is None:
        raise StackError(f"{java} -version failed: {(proc.stderr or proc.stdout).strip()}")
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def require_java(java: Path, allowed: tuple[int, ...], who: str) -> None:
    """Fail clearly unless `java` is one of the `allowed` feature versions."""
    major = java_major_version(java)
    if major not in allowed:
        wanted = " or ".join(str(v) for v in allowed)
        raise StackError(
            f"{who} needs Java {wanted}, but {java} is Java {major}. "
            "Set ONLINE_ALS_STACK_JAVA=/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
        )


_COMPLETE = ".complete"


def resolve_jars(
    name: str, version: str, pom: Path, cache_dir: Path, mvn: str, version_property: str
) -> tuple[Path, bool]:
    """Jars of `pom` (runtime scope) in ``cache_dir/NAME-VERSION``; (dir, resolved_now).

    A finished directory holds a `.complete` list of its jars; when it is intact Maven is not
    run at all. Maven copies into a temporary sibling that is renamed only on success.
    """
    target = cache_dir / f"{name}-{version}"
    if _cache_complete(target):
        return target, False
    ensure_debian_package("maven", mvn)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Two stacks (two runtime dirs) may share the cache: one resolves, the other waits.
    with (cache_dir / f".{name}-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _cache_complete(target):
            return target, False
        _maven_copy(name, version, pom, target, mvn, version_property)
    return target, True


def _maven_copy(
    name: str, version: str, pom: Path, target: Path, mvn: str, version_property: str
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=target.parent))
    try:
        cmd = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
            f"-D{version_property}={version}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        jars = sorted(p.name for p in tmp.glob("*.jar"))
        # Judge Maven by its exit code: resolving Cassandra's parent POM prints harmless ERRORs.
        if proc.returncode != 0 or not jars:
            raise StackError(
                f"Maven could not resolve {name} {version} (exit {proc.returncode}); "
                f"command: {' '.join(cmd)}\n{_last_lines(proc.stdout + proc.stderr)}"
            )
        (tmp / _COMPLETE).write_text("\n".join(jars) + "\n")
        if target.exists():  # an incomplete leftover (interrupted copy, deleted jar)
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _cache_complete(target: Path) -> bool:
    try:
        names = (target / _COMPLETE).read_text().split()
    except OSError:
        return False
    return bool(names) and all(_nonempty(target / n) for n in names)


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


_PLACEHOLDER = re.compile(r"@\{(\w+)\}")


def render_template(src: Path, dst: Path, values: dict[str, object]) -> None:
    """Copy `src` to `dst`, replacing each ``@{name}``; an unknown name is an error."""
    try:
        text = src.read_text()
    except OSError as exc:
        raise StackError(f"config template missing: {src} ({exc})") from exc

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise StackError(f"{src}: no value for placeholder @{{{m.group(1)}}}")
        return str(values[m.group(1)])

    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(_PLACEHOLDER.sub(sub, text))
