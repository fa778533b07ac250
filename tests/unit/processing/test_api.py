"""The agent API is one module: agents import nothing else of the runtime, and all four
agents are ``Agent``s (the type checker proves their signatures; this proves the classes)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from streams.processing import api

AGENTS = Path(__file__).resolve().parents[3] / "agents"


def _processing_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("streams.processing")}


@pytest.mark.parametrize("path", sorted(AGENTS.rglob("*.py")), ids=lambda p: p.name)
def test_agents_use_only_the_api_module_of_the_runtime(path: Path) -> None:
    allowed = {"streams.processing.api"}
    if path.name == "worker.py":  # the wiring runs the runtime and its watchdog
        allowed |= {"streams.processing.runtime", "streams.processing.watchdog"}
    assert _processing_imports(path) <= allowed


def test_the_api_exports_what_it_declares() -> None:
    assert sorted(api.__all__) == sorted(set(api.__all__))
    assert all(hasattr(api, name) for name in api.__all__)


@pytest.mark.parametrize("module, cls", [("agents.score", "ScoreAgent"),
                                         ("agents.memorize", "MemorizeAgent"),
                                         ("agents.summarize", "SummarizeAgent"),
                                         ("agents.transcribe", "TranscribeAgent")])
def test_every_agent_declares_the_contract(module: str, cls: str) -> None:
    agent = getattr(__import__(module, fromlist=[cls]), cls)
    assert issubclass(agent, api.Agent)
    assert agent.name and agent.inputs and isinstance(agent.stores, tuple)


def test_an_agent_without_process_cannot_be_made() -> None:
    class Incomplete(api.Agent):
        name = "incomplete"
        inputs = ("telemetry.v1",)

    with pytest.raises(TypeError, match="process"):
        Incomplete()  # type: ignore[abstract]
