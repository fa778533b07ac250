"""Dependencies flow one way: each layer imports only the layers below it.

Read from every module's source (AST), so every import counts: module level, inside a
function (the CLI and the adapters import lazily), under ``TYPE_CHECKING``, relative.
A layer may import itself and:

- ``streams.common`` (settings, topics, codec, registry, tokens...): nothing else of memstream
- ``streams.sdk`` (producer, client): common
- ``streams.models`` (embedder, transcriber, index): common
- ``streams.processing`` (the exactly-once runtime): common, models
- ``streams.service`` (the read service): common, models, sdk
- ``streams.mcp`` (the MCP server): common, sdk
- ``agents``: common, sdk, models, processing
- ``streams.ops`` (CLI, admin tools, dev stack, demo): all of ``streams``; of ``agents`` only
  ``agents.worker``, and only from the entry points ``streams/ops/cli.py`` and
  ``streams/ops/demo.py``
- ``streams`` itself (``streams/__init__.py``, ``streams/__main__.py``): ops

Among the agents, an agent's module (one defining a ``...Agent`` class) is imported only by
``agents/worker.py``, which wires the agents into the runtime: agents share code through
modules that are not agents.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("streams", "agents")

ALLOWED: dict[str, frozenset[str]] = {
    "streams.common": frozenset(),
    "streams.sdk": frozenset({"streams.common"}),
    "streams.models": frozenset({"streams.common"}),
    "streams.processing": frozenset({"streams.common", "streams.models"}),
    "streams.service": frozenset({"streams.common", "streams.models", "streams.sdk"}),
    "streams.mcp": frozenset({"streams.common", "streams.sdk"}),
    "agents": frozenset({"streams.common", "streams.sdk", "streams.models",
                         "streams.processing"}),
    "streams.ops": frozenset({"streams", "streams.common", "streams.sdk", "streams.models",
                              "streams.processing", "streams.service", "streams.mcp"}),
    "streams": frozenset({"streams.ops"}),
}
# Files of streams.ops that may import agents, and what of it.
AGENT_ENTRY_POINTS = frozenset({"streams/ops/cli.py", "streams/ops/demo.py"})
AGENTS_ENTRY_MODULE = "agents.worker"
WORKER = "agents/worker.py"


@dataclass(frozen=True)
class Import:
    """One imported name, as an absolute dotted path, and where it is imported."""

    path: str  # relative to the root, with forward slashes
    line: int
    target: str


def module_of(path: Path, root: Path) -> str:
    """The dotted module name of a source file under ``root``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every first-party import in ``path``, relative ones resolved, wherever it stands."""
    rel = path.relative_to(root).as_posix()
    package = module_of(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # ``from streams import ops`` imports streams.ops: the name may be a module.
            targets = [f"{module}.{alias.name}" for alias in node.names]
        found.extend(Import(rel, node.lineno, t) for t in targets
                     if t.split(".")[0] in FIRST_PARTY)
    return found


def layer_of(module: str) -> str:
    """``streams.<folder>`` for the platform's role folders, ``agents``, or ``streams``."""
    parts = module.split(".")
    if parts[0] == "agents":
        return "agents"
    if len(parts) > 1 and f"streams.{parts[1]}" in ALLOWED:
        return f"streams.{parts[1]}"
    return "streams"


def agent_modules(root: Path) -> set[str]:
    """Modules of ``agents/`` that define an agent (a class named ``...Agent``)."""
    found = set()
    for path in (root / "agents").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.ClassDef) and n.name.endswith("Agent") for n in tree.body):
            found.add(module_of(path, root))
    return found


def violations(root: Path) -> list[str]:
    """One line per import that breaks a rule: ``file:line imports X: why``."""
    agents = agent_modules(root)
    problems: list[str] = []
    for top in FIRST_PARTY:
        for path in sorted((root / top).rglob("*.py")):
            source = layer_of(module_of(path, root))
            for imp in imports_of(path, root):
                target = layer_of(imp.target)
                where = f"{imp.path}:{imp.line} imports {imp.target}"
                if target == source:
                    agent = next((a for a in agents if imp.target == a
                                  or imp.target.startswith(a + ".")), None)
                    if (source == "agents" and agent is not None and imp.path != WORKER
                            and module_of(path, root) != agent):
                        problems.append(f"{where}: the agent module {agent} is imported only "
                                        f"by {WORKER}; move what is shared out of it")
                    continue
                if source == "streams.ops" and target == "agents":
                    if imp.path not in AGENT_ENTRY_POINTS:
                        problems.append(f"{where}: of streams.ops only "
                                        f"{', '.join(sorted(AGENT_ENTRY_POINTS))} import agents")
                    elif not (imp.target == AGENTS_ENTRY_MODULE
                              or imp.target.startswith(AGENTS_ENTRY_MODULE + ".")):
                        problems.append(f"{where}: an entry point imports only "
                                        f"{AGENTS_ENTRY_MODULE}")
                    continue
                if target not in ALLOWED[source]:
                    allowed = ", ".join(sorted(ALLOWED[source])) or "nothing else of memstream"
                    problems.append(f"{where}: {source} may import {allowed}")
    return problems


def test_every_import_follows_the_layers() -> None:
    problems = violations(REPO)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"streams/__init__.py": "", "agents/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"streams/common/x.py": "def f():\n    from agents.dedupe import h\n"},
         "streams/common/x.py:2 imports agents.dedupe.h: streams.common may import nothing"),
        ({"streams/service/x.py": "from ..ops import admin\n"},
         "streams/service/x.py:1 imports streams.ops.admin: streams.service may import"),
        ({"streams/mcp/x.py": "from streams import service\n"},
         "streams/mcp/x.py:1 imports streams.service: streams.mcp may import"),
        ({"streams/sdk/x.py": "import streams.models.index\n"},
         "streams/sdk/x.py:1 imports streams.models.index: streams.sdk may import"),
        ({"agents/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from streams.service.core import ReadService\n"},
         "agents/x.py:3 imports streams.service.core.ReadService: agents may import"),
        ({"streams/ops/stats.py": "from agents.worker import run_worker\n"},
         "streams/ops/stats.py:1 imports agents.worker.run_worker: of streams.ops only"),
        ({"streams/ops/cli.py": "from agents.dedupe import memory_id\n"},
         "streams/ops/cli.py:1 imports agents.dedupe.memory_id: an entry point imports only"),
        ({"agents/score.py": "class ScoreAgent: ...\nSEP = 0\n",
          "agents/memorize.py": "from .score import SEP\n"},
         "agents/memorize.py:1 imports agents.score.SEP: the agent module agents.score"),
    ],
    ids=["lazy-import-in-common", "relative-import", "from-package-import", "plain-import",
         "type-checking-import", "ops-non-entry-point", "entry-point-non-worker",
         "agent-imports-agent"],
)
def test_a_planted_violation_is_named_with_file_and_line(
        tmp_path: Path, files: dict[str, str], expected: str) -> None:
    problems = violations(_tree(tmp_path, files))
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_what_the_rules_allow_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "streams/__main__.py": "from streams.ops.cli import main\n",
        "streams/ops/cli.py": "def run():\n    from agents.worker import run_worker\n",
        "streams/service/x.py": "from streams.models import index\nfrom streams.sdk import c\n",
        "agents/score.py": "class ScoreAgent: ...\nfrom streams.processing import runtime\n",
        "agents/worker.py": "from agents.score import ScoreAgent\n",
        "agents/dedupe.py": "from streams.common.content import normalize_text\n",
        "agents/memorize.py": "from agents.dedupe import normalize_text\n",
    })
    assert violations(root) == []
