"""Settings of the servers: Kafka, Redis, Cassandra (addresses, TLS, credentials, bounds)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from worker.config.base import (
    _cert_and_key,
    _readable_files,
    _Section,
)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "ratings"
    dead_letter_topic: str = "ratings.dlq"
    group_id: str = "online-als"
    partitions: int = Field(6, ge=1, description="partitions created for the topic when missing")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="with a SASL_* security_protocol")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(None, description="or sasl_password_file=PATH")
    allow_plain_over_plaintext: bool = Field(
        False, description="let sasl_mechanism=PLAIN send the password in clear over "
                           "SASL_PLAINTEXT (refused unless true; use SASL_SSL or SCRAM)")
    ssl_ca_location: str | None = Field(
        None, description="PEM CA bundle that signed the brokers' certificates (SSL, SASL_SSL)")
    ssl_certificate_location: str | None = Field(None, description="client certificate (PEM), mTLS")
    ssl_key_location: str | None = Field(None, description="its private key (PEM)")
    ssl_key_password: SecretStr | None = Field(
        None, description="when the key is encrypted; or ssl_key_password_file=PATH")
    ssl_endpoint_identification: bool = Field(
        True, description="check the broker's host name against its certificate")
    session_timeout_ms: int = Field(10000, ge=1000)

    @field_validator("sasl_mechanism", mode="before")
    @classmethod
    def _upper_mechanism(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol={self.security_protocol} needs kafka.sasl_mechanism "
                "(SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN), kafka.sasl_username and "
                "kafka.sasl_password (or kafka.sasl_password_file)")
        if (self.security_protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN"
                and not self.allow_plain_over_plaintext):
            raise ValueError(
                "kafka.sasl_mechanism=PLAIN over security_protocol=SASL_PLAINTEXT sends the "
                "password in clear text; use SASL_SSL or a SCRAM mechanism, or set "
                "kafka.allow_plain_over_plaintext=true to accept that")
        if not sasl and self.sasl_mechanism:
            raise ValueError(f"kafka.sasl_mechanism is set but security_protocol is "
                             f"{self.security_protocol}; use SASL_SSL (or unset the mechanism)")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        files = {"ssl_ca_location": self.ssl_ca_location,
                 "ssl_certificate_location": self.ssl_certificate_location,
                 "ssl_key_location": self.ssl_key_location}
        if not tls and any(files.values()):
            raise ValueError("kafka.ssl_* files are set but security_protocol is "
                             f"{self.security_protocol}; use SSL or SASL_SSL")
        _cert_and_key("kafka", "ssl_certificate_location", self.ssl_certificate_location,
                      "ssl_key_location", self.ssl_key_location)
        _readable_files("kafka", files)
        return self


class RedisSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    username: str | None = Field(None, description="ACL user (Redis 6+); unset: the default user")
    password: SecretStr | None = Field(None, description="or password_file=PATH")
    tls: bool = Field(False, description="connect with TLS (rediss://)")
    tls_ca_file: str | None = Field(None, description="PEM CA bundle that signed the server's "
                                    "certificate; unset: the system's CAs")
    tls_cert_file: str | None = Field(None, description="client certificate (PEM), when the "
                                      "server asks for one (tls-auth-clients)")
    tls_key_file: str | None = Field(None, description="its private key (PEM)")
    tls_check_hostname: bool = Field(
        True, description="check the server's host name against its certificate")
    key_prefix: str = "oals"
    cluster: bool = False
    socket_timeout_s: float = Field(5.0, gt=0)
    max_keys_per_script: int = Field(
        64, ge=1, le=10000, description="vector keys one worker script call touches: Redis "
        "serves nothing else while a script runs, so this bounds the pause serving apps see "
        "(64 keys: about 0.7 ms of Redis work at k=64)")

    @model_validator(mode="after")
    def _consistent_security(self) -> RedisSettings:
        files = {"tls_ca_file": self.tls_ca_file, "tls_cert_file": self.tls_cert_file,
                 "tls_key_file": self.tls_key_file}
        if not self.tls and any(files.values()):
            raise ValueError("redis.tls_* files are set but redis.tls is false; set redis.tls=true")
        if self.username and not self.password:
            raise ValueError("redis.username needs redis.password (or redis.password_file)")
        _cert_and_key("redis", "tls_cert_file", self.tls_cert_file, "tls_key_file",
                      self.tls_key_file)
        _readable_files("redis", files)
        return self

    @field_validator("key_prefix")
    @classmethod
    def _prefix_has_no_braces(cls, value: str) -> str:
        if not value or "{" in value or "}" in value or " " in value:
            raise ValueError("use a non-empty prefix without braces or spaces, e.g. 'oals'")
        return value


class CassandraSettings(_Section):
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = Field(9042, ge=1, le=65535)
    keyspace: str = "online_als"
    username: str | None = Field(None, description="PasswordAuthenticator user")
    password: SecretStr | None = Field(None, description="or password_file=PATH")
    tls: bool = Field(False, description="client-to-node encryption")
    tls_ca_file: str | None = Field(None, description="PEM CA bundle that signed the nodes' "
                                    "certificates; unset: the system's CAs")
    tls_cert_file: str | None = Field(None, description="client certificate (PEM), when the "
                                      "nodes require one (require_client_auth)")
    tls_key_file: str | None = Field(None, description="its private key (PEM)")
    tls_check_hostname: bool = Field(
        True, description="check each node's address against its certificate")
    replication: str = Field(
        "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        description="CQL replication map; NetworkTopologyStrategy in production",
    )
    local_dc: str = "datacenter1"
    enabled: bool = True

    @field_validator("keyspace")
    @classmethod
    def _keyspace_is_identifier(cls, value: str) -> str:
        if not value.replace("_", "").isalnum() or value[0].isdigit() or len(value) > 48:
            raise ValueError("use letters, digits and '_' (max 48, not starting with a digit)")
        return value

    @field_validator("hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(h.strip() for h in value.split(",") if h.strip())
        return value

    @model_validator(mode="after")
    def _consistent_security(self) -> CassandraSettings:
        files = {"tls_ca_file": self.tls_ca_file, "tls_cert_file": self.tls_cert_file,
                 "tls_key_file": self.tls_key_file}
        if not self.tls and any(files.values()):
            raise ValueError("cassandra.tls_* files are set but cassandra.tls is false; "
                             "set cassandra.tls=true")
        if self.username and not self.password:
            raise ValueError("cassandra.username needs cassandra.password (or "
                             "cassandra.password_file)")
        _cert_and_key("cassandra", "tls_cert_file", self.tls_cert_file, "tls_key_file",
                      self.tls_key_file)
        _readable_files("cassandra", files)
        return self


#: The online_als.defaults constant of each learner setting (for the fix in error messages).
