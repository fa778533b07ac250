"""Every memstream module that bench/ and tests/ import exists.

ruff does not resolve imports and mypy checks only streams/ and agents/, so after a module
moves, a stale ``from streams.ops.admin import ...`` in a benchmark would surface only when
someone ran it. This reads every import (lazy ones too) and resolves the module.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("streams", "agents")


def unresolved(paths: list[Path], root: Path = REPO) -> list[str]:
    """``file:line module`` of each first-party import whose module cannot be found."""
    missing = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in FIRST_PARTY and importlib.util.find_spec(module) is None:
                    missing.append(f"{path.relative_to(root)}:{node.lineno} {module}")
    return missing


def test_bench_and_tests_import_only_modules_that_exist() -> None:
    paths = sorted(p for root in ("bench", "tests") for p in (REPO / root).rglob("*.py"))
    assert unresolved(paths) == []


def test_a_stale_import_is_found(tmp_path: Path) -> None:
    stale = tmp_path / "bench_probe.py"
    stale.write_text("import streams.common.admin\n"
                     "def f():\n    from streams.ops.admin import ensure_topics\n")
    assert unresolved([stale], tmp_path) == ["bench_probe.py:3 streams.ops.admin"]
