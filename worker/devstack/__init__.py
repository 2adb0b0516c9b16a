"""The local development/test stack: Redis, Kafka, Cassandra (+ Prometheus, PostgreSQL).

    from worker.devstack import Stack, StackConfig
    stack = Stack(StackConfig.from_env())       # ONLINE_ALS_STACK_* overrides
    stack.up()                                  # redis, kafka, cassandra; blocks until ready
    stack.status()["kafka"].running
    stack.down()

CLI: ``online-als stack up|down|status`` (or ``python -m worker.devstack``).
"""

from worker.devstack.config import (
    ALL_COMPONENTS,
    CORE_COMPONENTS,
    OPTIONAL_COMPONENTS,
    StackConfig,
    StackError,
)
from worker.devstack.servers import ServerStatus, StartReport
from worker.devstack.stack import Stack, select_components

__all__ = [
    "ALL_COMPONENTS",
    "CORE_COMPONENTS",
    "OPTIONAL_COMPONENTS",
    "ServerStatus",
    "Stack",
    "StackConfig",
    "StackError",
    "StartReport",
    "select_components",
]
