"""Every exception class of memstream is named ``...Error`` and derives from MemstreamError.

Read from the source (AST): a class is an exception when one of its bases is a builtin
exception, a Kafka client exception, or another exception class of the tree.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOREIGN = frozenset({"KafkaException", "KafkaError", "SchemaRegistryError", "HTTPException"})
ROOT = "MemstreamError"


def exception_classes(root: Path) -> dict[str, tuple[str, list[str]]]:
    """Name -> (``file:line``, base names) of every exception class under streams/, agents/."""
    classes: dict[str, tuple[str, list[str]]] = {}
    for top in ("streams", "agents"):
        for path in sorted((root / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                    where = f"{path.relative_to(root).as_posix()}:{node.lineno}"
                    classes[node.name] = (where, bases)
    known = {name for name, value in vars(builtins).items()
             if isinstance(value, type) and issubclass(value, BaseException)} | FOREIGN
    grown = True
    while grown:
        grown = False
        for name, (_, bases) in classes.items():
            if name not in known and any(b in known for b in bases):
                known.add(name)
                grown = True
    return {name: found for name, found in classes.items() if name in known}


def misnamed(root: Path) -> list[str]:
    """``file:line Name: why`` for each exception class that breaks the convention."""
    classes = exception_classes(root)

    def rooted(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == ROOT:
            return True
        bases = classes.get(name, ("", []))[1]
        return any(b not in seen and rooted(b, seen | {name}) for b in bases)

    problems = []
    for name, (where, _) in sorted(classes.items()):
        if not name.endswith("Error"):
            problems.append(f"{where} {name}: an exception class's name ends in Error")
        if not rooted(name):
            problems.append(f"{where} {name}: derives from {ROOT} (its retriable attribute "
                            "decides retry or dead letter)")
    return problems


def test_every_exception_class_is_an_error_of_memstream() -> None:
    problems = misnamed(REPO)
    assert not problems, "\n".join(problems)


def test_a_misnamed_exception_is_found(tmp_path: Path) -> None:
    (tmp_path / "streams").mkdir()
    (tmp_path / "agents").mkdir()
    (tmp_path / "streams" / "x.py").write_text(
        "class MemstreamError(Exception): ...\n"
        "class ServiceError(MemstreamError): ...\n"
        "class NotFound(ServiceError): ...\n"
        "class Stray(ValueError): ...\n", encoding="utf-8")
    assert misnamed(tmp_path) == [
        "streams/x.py:3 NotFound: an exception class's name ends in Error",
        "streams/x.py:4 Stray: an exception class's name ends in Error",
        "streams/x.py:4 Stray: derives from MemstreamError (its retriable attribute "
        "decides retry or dead letter)",
    ]
