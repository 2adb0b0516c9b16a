"""The configuration object: precedence, validation messages, secrets, the generated doc."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.cli.config_doc import render
from worker.config import ConfigError, load_config, parse_set_flags


def test_precedence_defaults_file_env_cli(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[model]\nrank = 16\nmode = "implicit"\n[kafka]\ntopic = "from-file"\n')
    env = {"ONLINE_ALS_MODEL__RANK": "24", "ONLINE_ALS_CONFIG": str(f)}
    cfg = load_config(overrides={"kafka.topic": "from-cli"}, environ=env)
    assert (cfg.model.rank, cfg.model.mode, cfg.kafka.topic) == (24, "implicit", "from-cli")
    assert cfg.redis.port == 6379  # default untouched


def test_invalid_values_name_the_setting_and_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"model.rank": "0", "redis.key_prefix": "a{b}"}, environ={})
    text = str(err.value)
    assert "model.rank" in text and "ONLINE_ALS_MODEL__RANK" in text and "--set model.rank" in text
    assert "redis.key_prefix" in text
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(overrides={"modle.rank": "3"}, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(path="/nonexistent.toml", environ={})
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_set_flags(["model.rank"])


def test_secrets_are_never_printed() -> None:
    cfg = load_config(environ={"ONLINE_ALS_REDIS__PASSWORD": "hunter2",
                               "ONLINE_ALS_CASSANDRA__PASSWORD": "s3cret"})
    assert cfg.redis.password is not None and cfg.redis.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.redacted())
    assert "s3cret" not in str(cfg.redacted())


def test_settings_are_frozen() -> None:
    cfg = load_config(environ={})
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        cfg.model.rank = 3  # type: ignore[misc]


def test_configuration_doc_is_in_sync() -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == render(), "regenerate: python -m worker.cli.config_doc > docs/configuration.md"


def test_environ_for_reproduces_the_settings_in_a_child() -> None:
    from worker.config import environ_for

    cfg = load_config(overrides={"model.rank": "7", "cassandra.hosts": "a,b",
                                 "redis.password": "pw"}, environ={})
    env = environ_for(cfg, base={"PATH": "/bin", "ONLINE_ALS_MODEL__RANK": "99"})
    assert env["PATH"] == "/bin" and env["ONLINE_ALS_MODEL__RANK"] == "7"
    again = load_config(environ=env)
    assert again.model_dump(exclude={"worker": {"name"}}) == cfg.model_dump(exclude={"worker": {"name"}})
    assert again.redis.password is not None and again.redis.password.get_secret_value() == "pw"
