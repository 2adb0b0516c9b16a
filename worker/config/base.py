"""What every settings section shares: the frozen base model, the error type, file checks."""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

ENV_PREFIX = "ONLINE_ALS_"
ENV_NESTED = "__"
CONFIG_FILE_ENV = "ONLINE_ALS_CONFIG"


class ConfigError(ValueError):
    """Raised at start when a setting is invalid; the message names the setting and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: A secret setting ``<key>`` can also be given as ``<key>_file`` = a path to a file holding it
#: (Kubernetes/compose secrets mounted as files); one trailing newline is dropped.
SECRET_FILE_SUFFIX = "_file"


def _readable_files(section: str, paths: dict[str, str | None]) -> None:
    for key, path in paths.items():
        if path and not os.access(path, os.R_OK):
            why = "does not exist" if not os.path.exists(path) else "is not readable"
            raise ValueError(f"{section}.{key}: file {path} {why}; mount it or fix the path")


def _cert_and_key(section: str, cert_key: str, cert: str | None,
                  key_key: str, key: str | None) -> None:
    if bool(cert) != bool(key):
        raise ValueError(f"{section}.{cert_key} and {section}.{key_key} go together "
                         "(client certificate and its private key); set both or neither")


#: ``scheme://user:password@`` in a URL or DSN (the password part is masked).
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<pw>[^\s@/]*)@")
#: ``password=...`` in a libpq key/value DSN.
_DSN_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)


def mask_credentials(text: str) -> str:
    """``text`` with the password of every URL (``http://user:****@host``) and of every libpq
    ``password=`` masked; for what a person sees: ``online-als config``, logs, errors.

    >>> mask_credentials("push to http://ops:hunter2@gw:9091/metrics failed")
    'push to http://ops:****@gw:9091/metrics failed'
    >>> mask_credentials("host=db password='s3 cret' dbname=app")
    'host=db password=**** dbname=app'
    """
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['head']}:****@", text)
    return _DSN_PASSWORD.sub(lambda m: f"{m['head']}****", text)


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, str):
        return mask_credentials(value)
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value
