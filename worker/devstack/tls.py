"""Throwaway TLS material and credentials for the secure local stack (``stack up --secure``).

A private CA (openssl), one server certificate for 127.0.0.1/localhost, a client certificate,
PKCS12 key/trust stores for the JVM servers (keytool), and random passwords, all under
``<runtime_dir>/tls`` with mode 0600. Created once and reused; delete the directory to rotate.
Nothing here is fit for production: the CA key sits next to the certificates.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from worker.devstack.config import StackConfig, StackError

APP_USER = "online_als"  # the application's user on all three servers
KAFKA_ADMIN = "admin"  # Kafka's inter-broker SCRAM user
SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class TlsMaterial:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    @property
    def keystore(self) -> Path:
        return self.dir / "server.p12"

    @property
    def truststore(self) -> Path:
        return self.dir / "truststore.p12"

    def password_file(self, name: str) -> Path:
        """``redis``, ``kafka``, ``cassandra`` (the app user), ``kafka_admin``, ``store``."""
        return self.dir / f"{name}.password"

    def password(self, name: str) -> str:
        return self.password_file(name).read_text()


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if p.returncode != 0:
        raise StackError(f"tls: {what} failed (exit {p.returncode}): {p.stderr.strip()[-600:]}")


def _keytool(config: StackConfig) -> str:
    sibling = config.java.parent / "keytool"
    found = str(sibling) if sibling.exists() else shutil.which("keytool")
    if not found:
        raise StackError("tls: keytool not found (it comes with the JDK); install openjdk-17")
    return found


def ensure_tls(config: StackConfig) -> TlsMaterial:
    """Create (once) the CA, certificates, stores and passwords; return where they are."""
    if not shutil.which("openssl"):
        raise StackError("tls: openssl not found; apt-get install openssl")
    tls = TlsMaterial(config.runtime_dir / "tls")
    if (tls.dir / "done").exists():
        return tls
    tls.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls.dir, 0o700)
    for name in ("redis", "kafka", "cassandra", "kafka_admin", "store"):
        path = tls.password_file(name)
        if not path.exists():
            path.write_text(secrets.token_urlsafe(18))
    d = str(tls.dir)
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
          "-subj", "/CN=online-als throwaway CA", "-keyout", f"{d}/ca.key", "-out", str(tls.ca),
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign,cRLSign"],
         "CA")
    ext = tls.dir / "server.ext"
    ext.write_text(f"subjectAltName=IP:{config.host},IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n")
    for who, cn in (("server", "localhost"), ("client", APP_USER)):
        _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
              "-keyout", f"{d}/{who}.key", "-out", f"{d}/{who}.csr"], f"{who} key")
        _run(["openssl", "x509", "-req", "-in", f"{d}/{who}.csr", "-CA", str(tls.ca),
              "-CAkey", f"{d}/ca.key", "-CAcreateserial", "-days", "3650",
              "-extfile", str(ext), "-out", f"{d}/{who}.pem"], f"{who} certificate")
    store_pw = tls.password("store")
    _run(["openssl", "pkcs12", "-export", "-in", str(tls.server_cert), "-inkey", str(tls.server_key),
          "-certfile", str(tls.ca), "-name", "server", "-out", str(tls.keystore),
          "-passout", f"file:{tls.password_file('store')}"], "PKCS12 keystore")
    tls.truststore.unlink(missing_ok=True)
    _run([_keytool(config), "-importcert", "-noprompt", "-alias", "ca", "-file", str(tls.ca),
          "-storetype", "PKCS12", "-keystore", str(tls.truststore), "-storepass", store_pw],
         "PKCS12 truststore")
    for path in tls.dir.iterdir():
        os.chmod(path, 0o600)
    (tls.dir / "done").write_text("")
    return tls


# Redis roles (docs/operations.md, "Roles"): user -> (password file name, ACL rules). Later
# rules win, so "-@dangerous" after "+@read" takes KEYS and the like back out.
REDIS_ROLES: dict[str, tuple[str, str]] = {
    # admin: retrain, rollback, restore, snapshots, the CLI (secure.env's user)
    APP_USER: ("redis", "~* &* +@all"),
    # worker: reads, writes and its scripts on the keys; no server administration
    f"{APP_USER}_worker": ("redis_worker", "~* &* -@all +@read +@write +@scripting "
                                           "+@connection +@transaction -@dangerous +info"),
    # serving: reads only; read-only scripts (EVAL_RO), which Redis keeps from writing
    f"{APP_USER}_serving": ("redis_serving", "~* resetchannels -@all +@read +@connection "
                                             "+eval_ro +evalsha_ro -@dangerous"),
}


def ensure_password(tls: TlsMaterial, name: str) -> Path:
    """The password file ``name`` (created, random, mode 0600, when missing: a stack made
    before a role existed gets it on its next start)."""
    path = tls.password_file(name)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18))
        os.chmod(path, 0o600)
    return path


def redis_acl(tls: TlsMaterial) -> str:
    """ACL file text: the default user off, one user per role (:data:`REDIS_ROLES`), each
    with the SHA-256 hash of its password."""
    lines = ["user default off"]
    for user, (password, rules) in REDIS_ROLES.items():
        digest = hashlib.sha256(ensure_password(tls, password).read_text().encode()).hexdigest()
        lines.append(f"user {user} on #{digest} {rules}")
    return "\n".join(lines) + "\n"


def client_env(config: StackConfig, tls: TlsMaterial) -> dict[str, str]:
    """``ONLINE_ALS_*`` settings that reach the secure stack; passwords by file, never inline."""
    host = config.host
    return {
        "ONLINE_ALS_KAFKA__BOOTSTRAP_SERVERS": f"{host}:{config.kafka_port}",
        "ONLINE_ALS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "ONLINE_ALS_KAFKA__SASL_MECHANISM": SCRAM_MECHANISM,
        "ONLINE_ALS_KAFKA__SASL_USERNAME": APP_USER,
        "ONLINE_ALS_KAFKA__SASL_PASSWORD_FILE": str(tls.password_file("kafka")),
        "ONLINE_ALS_KAFKA__SSL_CA_LOCATION": str(tls.ca),
        "ONLINE_ALS_REDIS__HOST": host,
        "ONLINE_ALS_REDIS__PORT": str(config.redis_port),
        "ONLINE_ALS_REDIS__TLS": "true",
        "ONLINE_ALS_REDIS__TLS_CA_FILE": str(tls.ca),
        "ONLINE_ALS_REDIS__USERNAME": APP_USER,
        "ONLINE_ALS_REDIS__PASSWORD_FILE": str(tls.password_file("redis")),
        "ONLINE_ALS_CASSANDRA__HOSTS": host,
        "ONLINE_ALS_CASSANDRA__PORT": str(config.cassandra_port),
        "ONLINE_ALS_CASSANDRA__TLS": "true",
        "ONLINE_ALS_CASSANDRA__TLS_CA_FILE": str(tls.ca),
        "ONLINE_ALS_CASSANDRA__USERNAME": APP_USER,
        "ONLINE_ALS_CASSANDRA__PASSWORD_FILE": str(tls.password_file("cassandra")),
    }


def write_env_file(config: StackConfig, tls: TlsMaterial) -> Path:
    """``<runtime_dir>/secure.env``: ``set -a; . FILE`` points online-als at the secure stack."""
    path = config.runtime_dir / "secure.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in client_env(config, tls).items()))
    return path


def summary(config: StackConfig, tls: TlsMaterial) -> str:
    return json.dumps({"env_file": str(write_env_file(config, tls)), "ca": str(tls.ca),
                       "user": APP_USER}, indent=None)
