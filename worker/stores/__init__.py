"""The stores: one package per server (Redis, Cassandra) and the Kafka helpers.

Import the submodule you need: this package imports none of them, so a serving app that
reads Redis never loads the Kafka or Cassandra client.
"""
