"""TLS and authentication settings: validation, secrets from files, never echoed (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import ConfigError, load_config
from worker.stores.kafka import client_config


def _error(**env: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(environ={f"ONLINE_ALS_{k}": v for k, v in env.items()})
    return str(err.value)


def test_a_mistyped_secret_is_not_echoed() -> None:
    text = _error(REDIS__PASSWD="hunter2")
    assert "hunter2" not in text and "redis.password" in text  # a suggestion, no value
    text = _error(KAFKA__SASL_PASSWORD="hunter2", KAFKA__SECURITY_PROTOCOL="SASL_SSL")
    assert "hunter2" not in text and "sasl_mechanism" in text
    text = _error(CASSANDRA__PORT="hunter")
    assert "hunter" in text  # a non-secret value is shown: it helps
    assert "\n" not in _error(MODEL__RATING_MIN="6")  # one problem, one line


def test_contradictory_settings_fail_at_start(tmp_path: Path) -> None:
    assert "rating_min" in _error(MODEL__RATING_MIN="6")
    assert "rating_min" in _error(MODEL__RATING_MIN="5", MODEL__RATING_MAX="5")
    assert "event_weights" in _error(MODEL__EVENT_WEIGHTS="view")
    assert "redis.tls=true" in _error(REDIS__TLS_CA_FILE=str(tmp_path))
    assert "does not exist" in _error(REDIS__TLS="true", REDIS__TLS_CA_FILE="/no/such/ca.pem")
    assert "go together" in _error(REDIS__TLS="true", REDIS__TLS_CERT_FILE=str(tmp_path))
    assert "redis.password" in _error(REDIS__USERNAME="app")
    assert "cassandra.password" in _error(CASSANDRA__USERNAME="app")
    assert "SASL_SSL" in _error(KAFKA__SASL_MECHANISM="PLAIN")
    assert "SSL or SASL_SSL" in _error(KAFKA__SSL_CA_LOCATION=str(tmp_path))


def test_secrets_come_from_files_and_reach_the_clients(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cfg = load_config(environ={
        "ONLINE_ALS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "ONLINE_ALS_KAFKA__SASL_MECHANISM": "scram-sha-512",
        "ONLINE_ALS_KAFKA__SASL_USERNAME": "app",
        "ONLINE_ALS_KAFKA__SASL_PASSWORD_FILE": str(pw),
        "ONLINE_ALS_KAFKA__SSL_CA_LOCATION": str(ca),
        "ONLINE_ALS_REDIS__PASSWORD_FILE": str(pw),
        "ONLINE_ALS_REDIS__USERNAME": "app",
    })
    assert cfg.redis.password is not None and cfg.redis.password.get_secret_value() == "s3cret"
    conf = client_config(cfg.kafka)
    assert conf["sasl.password"] == "s3cret" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["ssl.ca.location"] == str(ca)
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert "s3cret" not in str(cfg.redacted()) and "s3cret" not in repr(cfg)
    text = _error(REDIS__PASSWORD_FILE=str(tmp_path / "missing"))
    assert "redis.password_file" in text and "s3cret" not in text
