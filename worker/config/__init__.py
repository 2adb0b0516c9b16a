"""One typed, frozen configuration object for every online-als process.

Sources, lowest to highest precedence: defaults < TOML file < environment variables
(prefix ``ONLINE_ALS_``, sections joined by ``__``) < CLI flags (``--set section.key=value``).

>>> cfg = load_config(overrides={"model.rank": "32"}, environ={})
>>> cfg.model.rank
32
>>> cfg.redis.password.get_secret_value() if cfg.redis.password else None
"""

from worker.config.base import (
    CONFIG_FILE_ENV,
    ENV_NESTED,
    ENV_PREFIX,
    SECRET_FILE_SUFFIX,
    ConfigError,
)
from worker.config.load import environ_for, load_config, parse_set_flags
from worker.config.sections import (
    ArchiveSettings,
    MetricsSettings,
    ModelSettings,
    RetrainSettings,
    ServeSettings,
    Settings,
    WorkerSettings,
)
from worker.config.servers import CassandraSettings, KafkaSettings, RedisSettings

__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_NESTED",
    "ENV_PREFIX",
    "SECRET_FILE_SUFFIX",
    "ArchiveSettings",
    "CassandraSettings",
    "ConfigError",
    "KafkaSettings",
    "MetricsSettings",
    "ModelSettings",
    "RedisSettings",
    "RetrainSettings",
    "ServeSettings",
    "Settings",
    "WorkerSettings",
    "environ_for",
    "load_config",
    "parse_set_flags",
]
