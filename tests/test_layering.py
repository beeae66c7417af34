"""Dependencies point one way: app -> core <- worker.  core never imports the edges or their frameworks,
and core/ml never touches the database."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(folder: Path) -> list[tuple[Path, str]]:
    found = []
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((path, node.module))
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("core", ("app", "worker", "fastapi", "starlette", "celery", "kombu", "uvicorn")),
        ("core/ml", ("sqlalchemy", "alembic", "core.db", "core.services", "redis")),
        ("worker", ("app", "fastapi")),
        ("app", ("worker",)),
    ],
)
def test_no_forbidden_imports(folder: str, forbidden: tuple[str, ...]) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path, name in _imports(ROOT / folder)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert not bad, bad
