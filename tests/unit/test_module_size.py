"""A product module stays small (one concept), or says at its top why it is one module.

Issue 14's rule: no module of ``streams/`` or ``agents/`` over ~300 lines without a reason
in its docstring, written as a parenthesized note that names its size, e.g.
``(About 400 lines: the hops above are one protocol; ...)``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIMIT = 300
REASON = re.compile(r"\((?:[^()]*?)\blines\b\s*:[^()]+\)", re.S)


def _modules() -> list[Path]:
    return sorted(p for root in ("streams", "agents") for p in (REPO / root).rglob("*.py")
                  if "__pycache__" not in p.parts)


def oversized_without_reason(paths: list[Path], root: Path = REPO) -> list[str]:
    """``path (N lines)`` of each module over the limit whose docstring gives no reason."""
    found = []
    for path in paths:
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n")
        if lines <= LIMIT:
            continue
        doc = ast.get_docstring(ast.parse(source)) or ""
        if not REASON.search(doc):
            found.append(f"{path.relative_to(root)} ({lines} lines)")
    return found


def test_every_module_over_the_limit_says_why() -> None:
    assert oversized_without_reason(_modules()) == []


@pytest.mark.parametrize(("docstring", "flagged"), [
    ('"""Does one thing."""', True),
    ('"""Does one thing.\n\n(About 400 lines: one protocol.)\n"""', False),
    ('"""Lines of text are parsed here."""', True),  # "lines" alone is not a reason
])
def test_the_rule_fires_on_a_long_module_without_a_reason(
        tmp_path: Path, docstring: str, flagged: bool) -> None:
    module = tmp_path / "big.py"
    module.write_text(docstring + "\n" + "x = 1\n" * (LIMIT + 5), encoding="utf-8")
    assert bool(oversized_without_reason([module], tmp_path)) is flagged
