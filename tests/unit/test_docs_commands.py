"""Every ``memstream <command>`` the README and docs/ show exists in the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deployment import READ_SERVICE_COMMANDS, REPO, cli_commands, read_service_merged

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# `memstream <words>` or `python -m streams <words>`, in code spans and code blocks only.
COMMAND = re.compile(
    r"(?:\bmemstream|python -m streams)[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?"
)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")


def documented_commands(path: Path) -> set[str]:
    """The commands a document shows: ``worker``, ``topics create``, ``dev up``, ..."""
    text = path.read_text(encoding="utf-8")
    code = FENCE.findall(text)
    prose = FENCE.sub("", text)
    code += SPAN.findall(prose)
    found: set[str] = set()
    for snippet in code:
        for first, second in COMMAND.findall(snippet):
            found.add(f"{first} {second}".strip())
    return found


def _exists(command: str, known: set[str]) -> bool:
    first, _, second = command.partition(" ")
    if first not in known:
        return False
    groups = {c.split(" ")[0] for c in known if " " in c}
    # A group's word must be followed by one of its commands; a command may be followed
    # by an argument (`memstream consume deadletter.v1`).
    return first not in groups or not second or command in known


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_documented_commands_exist(path: Path) -> None:
    known = cli_commands()
    missing = sorted(c for c in documented_commands(path) if not _exists(c, known))
    if not read_service_merged():
        # Until the read-service branch is merged, its commands may be documented ahead.
        missing = [c for c in missing if c.split(" ")[0] not in READ_SERVICE_COMMANDS]
    assert not missing, f"{path.name} shows commands the CLI does not have: {missing}"


def test_the_guides_show_commands_at_all() -> None:
    shown = documented_commands(REPO / "docs" / "operations.md")
    assert {"topics create", "schemas register", "schemas check", "worker", "serve"} <= {
        c if c.split(" ")[0] in {"topics", "schemas", "dev"} else c.split(" ")[0]
        for c in shown
    }


def test_a_group_without_its_command_is_caught() -> None:
    known = {"topics", "topics create", "worker"}
    assert _exists("topics create", known)
    assert not _exists("topics delete", known)
    assert _exists("worker", known)
    assert not _exists("serve", known)
