"""The secure local stack (``online-als stack up --secure``): TLS and authentication on all three.

- Redis: TLS only (``--port 0``), the default user off, one ACL user per role
  (``worker.devstack.tls.REDIS_ROLES``): ``online_als`` (admin), ``online_als_worker``,
  ``online_als_serving`` (reads only).
- Kafka: one SASL_SSL listener, SCRAM-SHA-512 users (``admin`` inter-broker, ``online_als``)
  created when the storage is formatted.
- Cassandra: client encryption required, ``PasswordAuthenticator``; the roles ``online_als``
  (admin, no superuser) and ``online_als_worker`` (SELECT, MODIFY) are made with the built-in
  ``cassandra`` superuser, whose password is then randomised (:func:`secure_cql_setup`).

It runs beside the normal stack: other ports (Redis 6390, Kafka 9192/9193, Cassandra
9142/7100) and another runtime dir (``~/.cache/online-als/stack-secure``). Certificates and
passwords: :mod:`worker.devstack.tls`; ``<runtime_dir>/secure.env`` holds the client settings.
"""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import time
from pathlib import Path

from worker.devstack.cassandra import CassandraServer
from worker.devstack.config import StackConfig, StackError
from worker.devstack.kafka import KafkaServer
from worker.devstack.redis import REDIS_SERVER, RedisServer
from worker.devstack.servers import java_env
from worker.devstack.tls import (
    APP_USER,
    KAFKA_ADMIN,
    SCRAM_MECHANISM,
    TlsMaterial,
    ensure_password,
    ensure_tls,
    redis_acl,
)
from worker.devstack.tools import render_template


def client_context(tls: TlsMaterial) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.check_hostname = False  # readiness probes only; clients check the host name
    return ctx


class SecureRedisServer(RedisServer):
    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.tls = TlsMaterial(config.runtime_dir / "tls")
        self.acl_file = self.home / "users.acl"

    def prepare(self) -> None:
        super().prepare()
        with self.step("tls"):
            self.tls = ensure_tls(self.config)
            self.acl_file.write_text(redis_acl(self.tls))
            self.acl_file.chmod(0o600)

    def command(self) -> list[str]:
        t = self.tls
        return [
            REDIS_SERVER,
            "--bind", self.config.host,
            "--port", "0",  # no plaintext port at all
            "--tls-port", str(self.config.redis_port),
            "--tls-cert-file", str(t.server_cert),
            "--tls-key-file", str(t.server_key),
            "--tls-ca-cert-file", str(t.ca),
            "--tls-auth-clients", "optional",  # a client certificate is checked when sent
            "--aclfile", str(self.acl_file),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.home / "data"),
            "--logfile", str(self.log_file),
        ]  # fmt: skip

    def cmd_marker(self) -> str:
        return "redis-server"

    def is_ready(self, new_log: str) -> bool:
        return tls_ping(self.config.host, self.config.redis_port, self.tls)


def reload_redis_acl(config: StackConfig) -> None:
    """Rewrite a running secure Redis's ACL file and load it (``ACL LOAD`` as the admin
    user): a Redis started before a role was added gets it without a restart."""
    import redis

    server = SecureRedisServer(config)
    server.tls = ensure_tls(config)
    server.acl_file.write_text(redis_acl(server.tls))
    server.acl_file.chmod(0o600)
    client = redis.Redis(host=config.host, port=config.redis_port, ssl=True,
                         ssl_ca_certs=str(server.tls.ca), ssl_check_hostname=False,
                         username=APP_USER, password=server.tls.password("redis"))
    try:
        client.execute_command("ACL", "LOAD")
    finally:
        client.close()


def tls_ping(host: str, port: int, tls: TlsMaterial, timeout: float = 1.0) -> bool:
    """True when Redis answers over TLS (any reply: unauthenticated PING gets NOAUTH)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                client_context(tls).wrap_socket(raw) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64)[:1] in (b"+", b"-")
    except (OSError, ssl.SSLError):
        return False


class SecureKafkaServer(KafkaServer):
    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.tls = TlsMaterial(config.runtime_dir / "tls")

    def prepare(self) -> None:
        with self.step("tls"):
            self.tls = ensure_tls(self.config)
        super().prepare()

    def write_config(self) -> None:
        self.ensure_dirs(self.data_dir)
        t = self.tls
        render_template(self.deploy_file("kafka", "server-secure.properties"), self.properties, {
            "host": self.config.host, "port": self.config.kafka_port,
            "controller_port": self.config.kafka_controller_port, "data_dir": self.data_dir,
            "admin_user": KAFKA_ADMIN, "admin_password": t.password("kafka_admin"),
            "keystore": t.keystore, "truststore": t.truststore,
            "store_password": t.password("store"),
        })
        self.properties.chmod(0o600)
        self.log4j.write_text(self.deploy_file("kafka", "log4j2.xml").read_text())

    def format_storage(self) -> None:
        """As KafkaServer's, plus the SCRAM users in the bootstrap metadata (KIP-900)."""
        if (self.data_dir / "meta.properties").exists():
            return
        scram = [
            f"{SCRAM_MECHANISM}=[name={KAFKA_ADMIN},password={self.tls.password('kafka_admin')}]",
            f"{SCRAM_MECHANISM}=[name={APP_USER},password={self.tls.password('kafka')}]",
        ]
        cmd = [*self.java_prefix(), "kafka.tools.StorageTool", "format",
               "--cluster-id", self.cluster_id(), "--config", str(self.properties),
               "--ignore-formatted", *[a for s in scram for a in ("--add-scram", s)]]
        p = subprocess.run(cmd, capture_output=True, text=True, env=java_env(), timeout=120,
                           check=False)
        if p.returncode != 0:  # the output names no password: only the tail of the error
            out = "\n".join((p.stdout + p.stderr).splitlines()[-10:])
            raise StackError(f"kafka: storage format failed (exit {p.returncode}):\n{out}")


class SecureCassandraServer(CassandraServer):
    start_timeout_s = 240.0

    def __init__(self, config: StackConfig) -> None:
        super().__init__(config)
        self.tls = TlsMaterial(config.runtime_dir / "tls")

    def prepare(self) -> None:
        with self.step("tls"):
            self.tls = ensure_tls(self.config)
        super().prepare()

    def write_config(self) -> None:
        super().write_config()
        t = self.tls
        with self.yaml.open("a") as fh:
            fh.write(
                "\n# --- stack up --secure ---\n"
                "authenticator: PasswordAuthenticator\n"
                "authorizer: CassandraAuthorizer\n"  # the roles' GRANTs are enforced
                "client_encryption_options:\n"
                "  enabled: true\n"
                "  optional: false\n"
                f"  keystore: {t.keystore}\n"
                f"  keystore_password: {t.password('store')}\n"
                f"  truststore: {t.truststore}\n"
                f"  truststore_password: {t.password('store')}\n"
                "  store_type: PKCS12\n"
                "  require_client_auth: false\n"
            )
        self.yaml.chmod(0o600)

    def command(self) -> list[str]:
        cmd = super().command()
        # the built-in superuser exists at once instead of after 10 s
        return [cmd[0], "-Dcassandra.superuser_setup_delay_ms=0", *cmd[1:]]

    def is_ready(self, new_log: str) -> bool:
        if "Startup complete" not in new_log:
            return False
        now = time.monotonic()
        if now < self._next_cql_try:
            return False
        self._next_cql_try = now + 2.0
        return secure_cql_setup(self.config.host, self.config.cassandra_port, self.tls)


CASSANDRA_WORKER = f"{APP_USER}_worker"


def cassandra_role_statements(tls: TlsMaterial) -> list[str]:
    """The secure stack's Cassandra roles (``docs/operations.md``, Roles), idempotent: the app
    role ``online_als`` (admin: every permission on the keyspaces, DDL included, but no
    superuser: no roles, no system keyspaces) and ``online_als_worker`` (SELECT and MODIFY
    only: workers and archivers on a keyspace the admin migrated)."""
    def q(name: str) -> str:
        return ensure_password(tls, name).read_text().replace("'", "''")

    return [
        f"CREATE ROLE IF NOT EXISTS {APP_USER} WITH PASSWORD = '{q('cassandra')}' "
        "AND LOGIN = true AND SUPERUSER = false",
        f"ALTER ROLE {APP_USER} WITH SUPERUSER = false",  # a stack made when it was one
        f"GRANT ALL PERMISSIONS ON ALL KEYSPACES TO {APP_USER}",
        f"CREATE ROLE IF NOT EXISTS {CASSANDRA_WORKER} WITH PASSWORD = "
        f"'{q('cassandra_worker')}' AND LOGIN = true AND SUPERUSER = false",
        f"GRANT SELECT ON ALL KEYSPACES TO {CASSANDRA_WORKER}",
        f"GRANT MODIFY ON ALL KEYSPACES TO {CASSANDRA_WORKER}",
    ]


def secure_cql_setup(host: str, port: int, tls: TlsMaterial) -> bool:
    """True when the app role can log in over TLS. Logs in as the built-in superuser (its
    first-start password, then a random one) to create or update the roles on every start."""
    from cassandra import AuthenticationFailed
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import Cluster, NoHostAvailable

    driver_log = logging.getLogger("cassandra")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)

    def session_as(user: str, password: str) -> tuple[Cluster, object]:
        cluster = Cluster([host], port=port, ssl_context=client_context(tls),
                          auth_provider=PlainTextAuthProvider(user, password),
                          connect_timeout=10, control_connection_timeout=10)
        try:
            return cluster, cluster.connect()
        except Exception:
            cluster.shutdown()
            raise

    def auth_failed(exc: NoHostAvailable) -> bool:
        return all(isinstance(e, AuthenticationFailed) for e in exc.errors.values())

    admin_pw = tls.password("store") + "-c"
    try:
        fresh = False
        try:
            cluster, session = session_as("cassandra", admin_pw)
        except NoHostAvailable as exc:
            if not auth_failed(exc):
                return False
            cluster, session = session_as("cassandra", "cassandra")
            fresh = True
        try:
            for statement in cassandra_role_statements(tls):
                session.execute(statement)  # type: ignore[attr-defined]
            if fresh:
                pw = admin_pw.replace("'", "''")
                session.execute(f"ALTER ROLE cassandra WITH PASSWORD = '{pw}'")  # type: ignore[attr-defined]
        finally:
            cluster.shutdown()
        cluster, session = session_as(APP_USER, tls.password("cassandra"))
        cluster.shutdown()
        return True
    except Exception:  # noqa: BLE001 - any driver error means "not ready yet"
        return False
    finally:
        driver_log.setLevel(level)


SECURE_SERVER_CLASSES: dict[str, type[RedisServer | KafkaServer | CassandraServer]] = {
    "redis": SecureRedisServer,
    "kafka": SecureKafkaServer,
    "cassandra": SecureCassandraServer,
}


def secure_runtime_dir(normal: Path) -> Path:
    return normal.parent / f"{normal.name}-secure"
