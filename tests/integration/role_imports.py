"""Run by a role's own venv: import each named module and check every import it makes.

Imports inside functions count too (the CLI and the adapters import lazily): each
third-party top-level name a module's source imports must be installed, unless the
module marks it optional (``# optional: <extra>`` on the import line) and the role lacks
that extra. Prints one JSON object: ``{"missing": [...], "failed": [...]}``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path

_OPTIONAL = re.compile(r"#\s*optional:\s*([\w-]+)")
FIRST_PARTY = {"streams", "agents"}


def imported_names(path: Path) -> list[tuple[str, int, str | None]]:
    """(top-level name, line, optional extra or None) of every absolute import in ``path``."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found: list[tuple[str, int, str | None]] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in FIRST_PARTY or top in sys.stdlib_module_names or top == "__future__":
                continue
            marker = _OPTIONAL.search(lines[node.lineno - 1])
            found.append((top, node.lineno, marker.group(1) if marker else None))
    return found


def main() -> None:
    """argv: repo root, the role's extras (comma-separated), then module names."""
    root, modules = Path(sys.argv[1]), sys.argv[3:]
    extras = set(filter(None, sys.argv[2].split(",")))
    missing: list[str] = []
    failed: list[str] = []
    for module in modules:
        path = root / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = root / module.replace(".", "/") / "__init__.py"
        for name, line, optional in imported_names(path):
            if optional is not None and optional not in extras:
                continue
            if importlib.util.find_spec(name) is None:
                missing.append(f"{module}:{line} imports {name!r}, which is not installed")
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
            failed.append(f"{module}: {type(exc).__name__}: {exc}")
    print(json.dumps({"missing": missing, "failed": failed}))


if __name__ == "__main__":
    main()
