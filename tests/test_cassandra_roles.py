"""Least privilege in Cassandra (issue 23, item 3), on the secure stack's real Cassandra.

``online-als stack up --secure`` runs ``CassandraAuthorizer`` with two roles
(``worker.devstack.secure.cassandra_role_statements``): ``online_als``, the admin, who
migrates and may do DDL but is no superuser, and ``online_als_worker`` with SELECT and MODIFY
only. A real worker and archiver stream over TLS and SCRAM as the worker role into a keyspace
the admin migrated (their start-up ``migrate()`` is a read when the schema is up to date);
every DDL statement from the worker role is refused. The table in ``docs/operations.md``
(Roles) names these tests.
"""

from __future__ import annotations

import orjson
import pytest
from cassandra import Unauthorized
from pydantic import SecretStr

from tests.conftest import Isolated
from tests.streaming import synthetic_events
from tests.test_security_stack import SecureStack, _settings, secure_stack  # noqa: F401
from worker.config import Settings
from worker.devstack.secure import CASSANDRA_WORKER
from worker.stores import kafka as kafka_io
from worker.stores.cassandra.store import CassandraStore

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]


def _as_worker(settings: Settings, sec: SecureStack) -> Settings:
    cass = settings.cassandra.model_copy(update={
        "username": CASSANDRA_WORKER,
        "password": SecretStr(sec.tls.password("cassandra_worker"))})
    return settings.model_copy(update={"cassandra": cass})


def _refused(store: CassandraStore, statement: str) -> None:
    with pytest.raises(Unauthorized):
        store.db.session.execute(statement)


def test_workers_stream_without_ddl_and_the_admin_is_no_superuser(
        secure_stack: SecureStack, isolated: Isolated,  # noqa: F811 - the fixture
        monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.control.archive import Archiver
    from worker.runtime.loop import Worker

    admin = _settings(monkeypatch, secure_stack.env(isolated))
    ks = admin.cassandra.keyspace
    with CassandraStore(admin.cassandra) as cass:
        assert cass.migrate()  # the admin role does the DDL
        _refused(cass, "CREATE ROLE online_als_probe WITH PASSWORD = 'x' AND LOGIN = true")
        _refused(cass, "ALTER ROLE online_als_worker WITH SUPERUSER = true")

    worker_settings = _as_worker(admin, secure_stack)
    events = synthetic_events(1200, 60, 40, seed=23)
    kafka_io.ensure_topics(admin.kafka, {admin.kafka.topic: 1, admin.kafka.dead_letter_topic: 1})
    producer = kafka_io.make_producer(admin.kafka)
    for ev in events:
        producer.produce(admin.kafka.topic, orjson.dumps(ev), key=str(ev["user_id"]).encode())
        producer.poll(0)
    assert producer.flush(30) == 0
    worker = Worker(worker_settings)  # restore-or-bootstrap writes the version row, factors
    worker.run(idle_exit_s=3)
    assert worker.applied_total == len(events)
    archiver = Archiver(worker_settings)
    archiver.run(idle_exit_s=3)
    assert archiver.archived_total == len(events)

    with CassandraStore(worker_settings.cassandra) as cass:
        assert cass.migrate() == []  # up to date: a read, no DDL
        assert sum(cass.contiguous_offsets(admin.kafka.topic).values()) == len(events)
        for statement in (f"CREATE TABLE {ks}.probe (k int PRIMARY KEY)",
                          f"ALTER TABLE {ks}.schema_migrations ADD probe int",
                          f"DROP TABLE {ks}.schema_migrations",
                          f"DROP KEYSPACE {ks}",
                          "CREATE KEYSPACE probe_ks WITH replication = "
                          "{'class': 'SimpleStrategy', 'replication_factor': 1}"):
            _refused(cass, statement)
    with CassandraStore(admin.cassandra) as cass:
        cass.drop_keyspace()
