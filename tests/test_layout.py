"""Package boundaries of worker/ (docs/architecture.md, README package table).

Static: what each package's files import. Dynamic: what a fresh interpreter has loaded after
importing the serving client, so a serving app runs without the Kafka and Cassandra clients.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{p.relative_to(ROOT)}: {m}" for p in files(folder) for m in sorted(imported_modules(p))
            if m.split(".")[0] in forbidden or m.startswith(tuple(f + "." for f in forbidden))
            or m in forbidden]


def loaded_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_serving_client_loads_no_kafka_or_cassandra_client() -> None:
    loaded = loaded_after("import worker.serving.client")
    assert "worker.serving.client" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("confluent_kafka", "cassandra")}
    assert not {m for m in loaded if m.startswith(
        ("worker.stores.kafka", "worker.stores.cassandra", "worker.runtime", "worker.control",
         "worker.cli", "worker.devstack", "producers"))}


def test_serving_client_imports_only_redis_config_and_online_als() -> None:
    ours = {m for p in files("worker/serving") for m in imported_modules(p)
            if m.split(".")[0] in ("worker", "producers", "online_als")}
    allowed = ("worker.serving", "worker.stores.redis.keys", "worker.stores.redis.store",
               "worker.config",
               "online_als")
    assert [m for m in ours if not m.startswith(allowed)] == []


@pytest.mark.parametrize("folder, forbidden", [
    # the maths imports no client library and nothing of the product around it
    ("online_als", ("worker", "producers", "confluent_kafka", "cassandra", "redis")),
    # the producers library does not reach into the CLI (worker/cli composes it, not back)
    ("producers", ("worker.cli",)),
    # only the CLI package composes the CLI; the dev stack is not on the runtime path
    ("worker/runtime", ("worker.cli", "worker.devstack")),
    ("worker/stores", ("worker.cli", "worker.devstack", "worker.runtime", "worker.control")),
    ("worker/control", ("worker.cli", "worker.devstack")),
    ("worker/events", ("worker.cli", "worker.devstack", "worker.runtime", "worker.control")),
])
def test_package_does_not_import(folder: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(folder, forbidden) == []


def test_cli_composes_subcommands_by_import_not_by_name() -> None:
    from worker.cli.main import SUBCOMMANDS

    assert all(callable(register) for register in SUBCOMMANDS.values())
    assert "import_module" not in (ROOT / "worker/cli/main.py").read_text()


def defined_classes(folders: tuple[str, ...] = ("online_als", "worker", "producers")) -> dict[str, list[str]]:
    """class name -> the files that define it (module-level and nested)."""
    out: dict[str, list[str]] = {}
    for folder in folders:
        for path in files(folder):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    out.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    return out


def test_one_shape_per_concept() -> None:
    """Rating columns are one type and a model as arrays is another (issue 16): the shapes
    they replaced are gone, and each is defined in one file."""
    classes = defined_classes()
    assert classes["Ratings"] == ["online_als/ratings.py"]
    assert classes["Factors"] == ["online_als/factors.py"]
    assert classes["ModelArrays"] == ["online_als/factors.py"]
    replaced = {"EventBatch", "LogChunk", "LogBlock", "GateModel", "FlushJob"}
    assert replaced.isdisjoint(classes), replaced & set(classes)
    from online_als.datasets import Ratings as DatasetRatings
    from online_als.ratings import Ratings
    from worker.events.decode import DecodedBatch

    assert DatasetRatings is Ratings
    assert DecodedBatch.__dataclass_fields__["ratings"].type in ("Ratings", Ratings)
