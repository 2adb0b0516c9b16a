"""Cassandra table modules behind :class:`worker.stores.cassandra.store.CassandraStore`.

``codec`` packs columns into blobs, ``schema`` holds the migrations, ``ratings_log``,
``snapshots`` and ``versions`` own their tables, ``session`` connects and times calls.
Spec: ``docs/cassandra-schema.md``.
"""
