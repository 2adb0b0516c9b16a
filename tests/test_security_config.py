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


def test_plain_over_a_plaintext_listener_is_refused_unless_allowed(
        capsys: pytest.CaptureFixture[str]) -> None:
    """SASL PLAIN sends the password as is: over SASL_PLAINTEXT anyone on the path reads it.
    Refused at start (exit 2, the setting named, the password not echoed) unless
    kafka.allow_plain_over_plaintext=true; SCRAM (a challenge, no password on the wire) and
    SASL_SSL are accepted."""
    from worker.cli.main import main

    plain = dict(KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA__SASL_MECHANISM="PLAIN",
                 KAFKA__SASL_USERNAME="app", KAFKA__SASL_PASSWORD="hunter2")
    text = _error(**plain)
    assert "kafka.allow_plain_over_plaintext" in text and "clear text" in text, text
    assert "hunter2" not in text
    cfg = load_config(environ={f"ONLINE_ALS_{k}": v for k, v in plain.items()}
                      | {"ONLINE_ALS_KAFKA__ALLOW_PLAIN_OVER_PLAINTEXT": "true"})
    assert client_config(cfg.kafka)["sasl.mechanism"] == "PLAIN"
    scram = plain | {"KAFKA__SASL_MECHANISM": "SCRAM-SHA-512"}
    assert load_config(environ={f"ONLINE_ALS_{k}": v for k, v in scram.items()})
    args = [x for k, v in plain.items() for x in ("--set", f"{k.lower().replace('__', '.')}={v}")]
    assert main(["worker", "--no-metrics-server", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "allow_plain_over_plaintext" in err, err
    assert "hunter2" not in err
