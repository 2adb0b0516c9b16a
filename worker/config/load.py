"""Loading :class:`Settings`: defaults < TOML file < environment < ``--set`` flags, and errors
that name the setting and the fix."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    SecretStr,
    ValidationError,
)

from worker.config.base import (
    CONFIG_FILE_ENV,
    ENV_NESTED,
    ENV_PREFIX,
    SECRET_FILE_SUFFIX,
    ConfigError,
)
from worker.config.sections import Settings


def _set_path(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.lower().split(".")
    if len(parts) != 2 or parts[0] not in Settings.model_fields:
        sections = ", ".join(Settings.model_fields)
        raise ConfigError(
            f"{source}: unknown setting {dotted!r}; use <section>.<key> with section in {sections}"
        )
    tree.setdefault(parts[0], {})[parts[1]] = value


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        rest = name[len(ENV_PREFIX) :]
        if ENV_NESTED not in rest:
            continue  # other online-als variables (e.g. ONLINE_ALS_STACK_DIR) are not settings
        section, key = rest.split(ENV_NESTED, 1)
        _set_path(tree, f"{section}.{key}", value, f"environment variable {name}")
    return tree


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in top.items():
        merged.setdefault(section, {}).update(values)
    return merged


_SECRET_HINTS = ("pass", "secret", "token", "credential", "auth")


def _section_fields(section: str) -> dict[str, Any]:
    field = Settings.model_fields.get(section)
    model = field.annotation if field is not None else None
    return dict(getattr(model, "model_fields", {}))


def _shown_input(loc: tuple[Any, ...], item: Any) -> str:
    """`` (got 'x')`` for a known, non-secret leaf setting; nothing otherwise, so a secret
    (or a mistyped secret key such as ``passwd``) is never echoed."""
    if len(loc) != 2 or item.get("type") == "extra_forbidden":
        return ""
    field = _section_fields(str(loc[0])).get(str(loc[1]))
    if field is None or "SecretStr" in str(field.annotation):
        return ""
    if any(h in str(loc[1]).lower() for h in _SECRET_HINTS):
        return ""
    text = repr(item.get("input"))
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def _explain(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc)
        env = ENV_PREFIX + ENV_NESTED.join(str(p).upper() for p in loc)
        msg = item["msg"].removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden" and len(loc) == 2:
            import difflib

            known = list(_section_fields(str(loc[0])))
            close = difflib.get_close_matches(str(loc[1]), known, n=1)
            hint = f"did you mean {loc[0]}.{close[0]}?" if close else f"known keys: {', '.join(known)}"
            lines.append(f"  {where}: unknown setting (value not shown); {hint}")
            continue
        if len(loc) < 2:  # a rule across settings: the message names them
            lines.append(f"  {msg}")
            continue
        lines.append(
            f"  {where}: {msg}{_shown_input(loc, item)}; fix it in the TOML file, "
            f"with {env}=..., or with --set {where}=..."
        )
    if len(lines) == 2:  # one problem: one line
        return f"{lines[0]} {lines[1].strip()}"
    return "\n".join(lines)


def _secret_files(tree: dict[str, Any]) -> None:
    """Replace each ``<secret>_file`` setting by the file's content (see SECRET_FILE_SUFFIX)."""
    for section, values in tree.items():
        if not isinstance(values, dict):
            continue
        fields = _section_fields(section)
        for key in [k for k in values if str(k).endswith(SECRET_FILE_SUFFIX)]:
            base = str(key)[: -len(SECRET_FILE_SUFFIX)]
            if base not in fields or "SecretStr" not in str(fields[base].annotation):
                continue
            path = Path(str(values.pop(key)))
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(f"{section}.{key}: cannot read {path} ({exc.strerror}); mount "
                                  f"the secret there or fix the path") from None
            except UnicodeDecodeError:
                raise ConfigError(f"{section}.{key}: {path} is not a text file; pass a file "
                                  "holding the secret as text") from None
            values[base] = text[:-1] if text.endswith("\n") else text


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the frozen settings from file, environment and CLI overrides.

    Raises ConfigError with a message that names each bad setting and how to fix it.
    """
    env = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    file_path = path or env.get(CONFIG_FILE_ENV)
    if file_path:
        p = Path(file_path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; pass an existing TOML file or unset {CONFIG_FILE_ENV}")
        what = "--config" if path else CONFIG_FILE_ENV
        try:
            tree = tomllib.loads(p.read_text())
        except UnicodeDecodeError:
            raise ConfigError(f"config file {p} ({what}) is not a text file; pass a TOML "
                              "settings file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} ({what}) is not valid TOML: {exc}") from exc
        for section in tree:
            if section not in Settings.model_fields:
                raise ConfigError(f"config file {p}: unknown section [{section}]")
    tree = _merge(tree, _from_env(env))
    cli: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        _set_path(cli, dotted, value, "--set")
    tree = _merge(tree, cli)
    _secret_files(tree)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def environ_for(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment that reproduces ``settings`` in a child process (secrets included, so
    never log it): ``base`` (default ``os.environ``) without its ONLINE_ALS_ variables, plus
    one variable per setting. ``worker.name`` is left out so each process gets its own."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(ENV_PREFIX)}
    for section, values in settings.model_dump().items():
        for key, value in values.items():
            if value is None or (section, key) == ("worker", "name"):
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple):
                value = ",".join(value)
            env[f"{ENV_PREFIX}{section.upper()}{ENV_NESTED}{key.upper()}"] = str(value)
    return env


def parse_set_flags(pairs: list[str] | None) -> dict[str, str]:
    """Turn ``["model.rank=32"]`` into ``{"model.rank": "32"}``."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected section.key=value, e.g. --set model.rank=32")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out
