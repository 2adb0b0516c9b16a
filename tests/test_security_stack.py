"""The secure stack (`online-als stack up --secure`): everything over TLS with authentication.

One session fixture starts the secure servers (own ports and runtime dir, beside the normal
stack) and stops them by PID at the end if it started them. With ``CI=true`` a failure to
start fails the run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from tests.conftest import CORE, Isolated, unavailable
from tests.streaming import synthetic_events
from worker.cli.main import main
from worker.config import Settings, load_config
from worker.devstack import Stack, StackConfig
from worker.devstack.tls import TlsMaterial, client_env
from worker.stores import kafka as kafka_io

pytestmark = pytest.mark.stack


@dataclass(frozen=True)
class SecureStack:
    config: StackConfig
    tls: TlsMaterial

    def env(self, iso: Isolated, **extra: str) -> dict[str, str]:
        env = client_env(self.config, self.tls)
        env.update({
            "ONLINE_ALS_KAFKA__TOPIC": iso.topic, "ONLINE_ALS_KAFKA__DEAD_LETTER_TOPIC": iso.dlq_topic,
            "ONLINE_ALS_KAFKA__GROUP_ID": iso.group, "ONLINE_ALS_KAFKA__PARTITIONS": "1",
            "ONLINE_ALS_REDIS__KEY_PREFIX": iso.redis_prefix,
            "ONLINE_ALS_CASSANDRA__KEYSPACE": iso.keyspace,
            "ONLINE_ALS_METRICS__PORT": "0", "ONLINE_ALS_WORKER__BATCH_MAX_WAIT_MS": "50",
            "ONLINE_ALS_MODEL__RANK": "8", "ONLINE_ALS_RETRAIN__ITERATIONS": "4",
            "ONLINE_ALS_RETRAIN__GATE_MARGIN": "10", "ONLINE_ALS_ARCHIVE__SNAPSHOT_INTERVAL_S": "0",
        })
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def secure_stack() -> Iterator[SecureStack]:
    cfg = StackConfig.secure_from_env()
    st = Stack(cfg)
    started_here = False
    if not all(s.running for s in st.status(CORE).values()):
        try:
            st.up(CORE)
            started_here = True
        except Exception as exc:  # the message says which server and why
            unavailable(f"secure stack could not be started: {exc}")
    yield SecureStack(cfg, TlsMaterial(cfg.runtime_dir / "tls"))
    if started_here and not os.environ.get("ONLINE_ALS_KEEP_STACK"):
        st.down(CORE)  # by the PIDs recorded in the secure runtime dir only


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name in [n for n in os.environ if n.startswith("ONLINE_ALS_") and "__" in n]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_config()


def test_stream_retrain_rollback_and_serve_over_tls(
        secure_stack: SecureStack, isolated: Isolated, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from worker.control.archive import Archiver
    from worker.runtime.loop import Worker

    settings = _settings(monkeypatch, secure_stack.env(isolated))
    assert settings.kafka.security_protocol == "SASL_SSL" and settings.redis.tls
    events = synthetic_events(1500, 80, 50, seed=14)
    kafka_io.ensure_topics(settings.kafka, {settings.kafka.topic: 1,
                                            settings.kafka.dead_letter_topic: 1})
    producer = kafka_io.make_producer(settings.kafka)
    for ev in events:
        producer.produce(settings.kafka.topic, orjson.dumps(ev), key=str(ev["user_id"]).encode())
        producer.poll(0)
    assert producer.flush(30) == 0
    worker = Worker(settings)
    worker.run(idle_exit_s=3)
    assert worker.applied_total == len(events)
    archiver = Archiver(settings)
    archiver.run(idle_exit_s=3)

    capsys.readouterr()
    assert main(["retrain", "--force", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["outcome"] == "promoted", report
    new_version = int(report["version"])
    assert main(["rollback", "--to", str(new_version - 1), "--reason", "secure test"]) == 0
    capsys.readouterr()
    assert main(["recommend", "--user", "u1", "--json", "--n", "5", "--include-seen"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert recs["version"] == new_version - 1 and len(recs["results"]) == 5, recs


def _kafka_errors(settings: Settings, seconds: float = 15.0) -> list[str]:
    errors: list[str] = []
    conf = {**kafka_io.client_config(settings.kafka), "error_cb": lambda e: errors.append(e.str())}
    admin = AdminClient(conf)
    deadline = time.monotonic() + seconds
    while not errors and time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            break
        except Exception:  # noqa: BLE001 - the error callback has the reason
            admin.poll(0.5)  # serves error_cb
    return errors


def test_wrong_password_or_no_ca_is_refused_clearly(
        secure_stack: SecureStack, isolated: Isolated,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    base = secure_stack.env(isolated)
    no_ca = {k: v for k, v in base.items()
             if k not in ("ONLINE_ALS_REDIS__TLS_CA_FILE", "ONLINE_ALS_CASSANDRA__TLS_CA_FILE",
                          "ONLINE_ALS_KAFKA__SSL_CA_LOCATION")}
    wrong = {**{k: v for k, v in base.items() if not k.endswith("PASSWORD_FILE")},
             "ONLINE_ALS_REDIS__PASSWORD": "hunter2", "ONLINE_ALS_CASSANDRA__PASSWORD": "hunter2",
             "ONLINE_ALS_KAFKA__SASL_PASSWORD": "hunter2"}
    for env, what in ((wrong, "refused the credentials"), (no_ca, "not trusted")):
        _settings(monkeypatch, env)
        for argv in (["recommend", "--user", "u1"], ["snapshots", "list"]):
            capsys.readouterr()
            code = main(argv)
            err = capsys.readouterr().err
            assert code == 2 and what in err and "hunter2" not in err, (argv, code, err)
            assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    assert any("Authentication failed" in e for e in _kafka_errors(_settings(monkeypatch, wrong)))
    assert any("certificate verify failed" in e
               for e in _kafka_errors(_settings(monkeypatch, no_ca)))
