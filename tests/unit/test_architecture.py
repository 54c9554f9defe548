"""The bounded contexts stay independent and their domains do no IO."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
CONTEXTS = ("ingest", "ledger", "reconciliation")
IO_MODULES = ("sqlalchemy", "asyncpg", "grpc", "redis", "aiobotocore", "botocore", "opentelemetry", "httpx")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_contexts_never_import_each_other() -> None:
    for context in CONTEXTS:
        others = [c for c in CONTEXTS if c != context]
        for path in (SERVICES / context).rglob("*.py"):
            for name in imports_of(path):
                for other in others:
                    assert not name.startswith(f"services.{other}"), f"{path} imports {name}"


def test_domains_do_no_io() -> None:
    for context in CONTEXTS:
        for path in (SERVICES / context / "domain").rglob("*.py"):
            for name in imports_of(path):
                assert not name.startswith(IO_MODULES), f"{path} imports {name}"


def test_the_kernel_knows_no_context() -> None:
    for path in (SERVICES / "kernel").rglob("*.py"):
        for name in imports_of(path):
            assert not name.startswith(tuple(f"services.{c}" for c in CONTEXTS)), f"{path} imports {name}"
