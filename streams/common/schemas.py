"""The shipped Avro schema versions and the compatibility rules between them, without a registry.

(A little over 300 lines: the compatibility rules follow Avro's resolution rules as one set.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import avro.errors
import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    SchemaType,
    lookup_writer_field,
    schema_name_equals,
)

from streams.common.exceptions import SchemaError

SCHEMA_DIR: Path = Path(__file__).resolve().parents[2] / "schemas"

DEFAULT_POLICY = "BACKWARD_TRANSITIVE"
POLICIES: frozenset[str] = frozenset(
    {
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    }
)

# `<subject-base>-<version>.avsc`; no leading zeros so a version has exactly one file name.
_FILE_NAME = re.compile(r"^(?P<base>[a-z][a-z0-9_]*)-(?P<version>[1-9][0-9]*)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One registered version of a subject's schema, as shipped in `schemas/`."""

    subject_base: str
    version: int
    path: Path
    # The parsed JSON; excluded from the hash because a dict is unhashable.
    schema: dict[str, Any] = field(hash=False)

    @property
    def record_name(self) -> str:
        """The record's short name, e.g. ``TelemetryEvent``."""
        return str(self.schema["name"]).rsplit(".", 1)[-1]

    @property
    def full_name(self) -> str:
        """The record's namespace-qualified name, e.g. ``memstream.TelemetryEvent``."""
        name = str(self.schema["name"])
        namespace = self.schema.get("namespace")
        return name if "." in name or not namespace else f"{namespace}.{name}"


def load_schema_versions(directory: Path = SCHEMA_DIR) -> dict[str, list[SchemaVersion]]:
    """Every `*.avsc` in `directory`, by subject base, sorted by version; versions must run 1..N."""
    if not directory.is_dir():
        raise SchemaError(f"schema directory {str(directory)!r} does not exist")
    by_base: dict[str, list[SchemaVersion]] = {}
    for path in sorted(directory.glob("*.avsc")):
        version = _load_file(path)
        by_base.setdefault(version.subject_base, []).append(version)
    for base, versions in by_base.items():
        versions.sort(key=lambda v: v.version)
        numbers = [v.version for v in versions]
        expected = list(range(1, len(numbers) + 1))
        if numbers != expected:
            missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
            raise SchemaError(
                f"subject {base!r} in {str(directory)!r} has versions {numbers}; "
                f"versions must run 1..N without gaps (missing {missing})"
            )
    return dict(sorted(by_base.items()))


def _load_file(path: Path) -> SchemaVersion:
    """Parse and validate one schema file, naming the file in any error."""
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise SchemaError(
            f"schema file {str(path)!r}: name must be '<subject-base>-<version>.avsc', "
            "e.g. 'telemetry-2.avsc'"
        )
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"schema file {str(path)!r}: cannot read JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError(f"schema file {str(path)!r}: top level must be an Avro record")
    try:
        avro.schema.parse(json.dumps(schema))
    except (avro.errors.AvroException, TypeError, ValueError) as exc:
        raise SchemaError(f"schema file {str(path)!r}: not a valid Avro schema: {exc}") from exc
    return SchemaVersion(
        subject_base=match["base"], version=int(match["version"]), path=path, schema=schema
    )


def check_compatibility(reader: Mapping[str, Any], writer: Mapping[str, Any]) -> list[str]:
    """Problems that stop `reader` reading data written with `writer`; empty when compatible."""
    reader_schema = _parse(reader, "reader")
    writer_schema = _parse(writer, "writer")
    verdict = _compatibility(reader_schema, writer_schema)
    if verdict.compatibility is SchemaCompatibilityType.compatible:
        return []
    problems = _explain(reader_schema, writer_schema, "")
    # The walk only descends where avro says a pair is incompatible, so it finds at least
    # one problem; avro's own report is the fallback should that ever not hold.
    return problems or _translate(verdict, "")


def check_versions(versions: list[SchemaVersion], policy: str = DEFAULT_POLICY) -> list[str]:
    """Problems breaking `policy` (Confluent semantics) between the versions of one subject."""
    policy = policy.upper()
    if policy not in POLICIES:
        raise SchemaError(f"unknown compatibility policy {policy!r}; known: {sorted(POLICIES)}")
    bases = {v.subject_base for v in versions}
    if len(bases) > 1:
        raise SchemaError(
            f"check_versions takes one subject's versions, got subjects {sorted(bases)}"
        )
    ordered = sorted(versions, key=lambda v: v.version)
    transitive = policy.endswith("_TRANSITIVE")
    backward = policy.startswith(("BACKWARD", "FULL"))
    forward = policy.startswith(("FORWARD", "FULL"))
    problems: list[str] = []
    for index, new in enumerate(ordered):
        earlier = ordered[:index] if transitive else ordered[max(0, index - 1) : index]
        for old in reversed(earlier):
            if backward:
                problems.extend(_pair_problems(new, old, reader=new, writer=old))
            if forward:
                problems.extend(_pair_problems(new, old, reader=old, writer=new))
    return problems


def check_all(
    directory: Path = SCHEMA_DIR,
    policies: Mapping[str, str] | None = None,
    default_policy: str = DEFAULT_POLICY,
) -> list[str]:
    """Problems across every subject in `directory`; `policies` sets the policy per subject base."""
    by_base = load_schema_versions(directory)
    policies = policies or {}
    unknown = sorted(set(policies) - set(by_base))
    if unknown:
        raise SchemaError(f"policies name subjects {unknown} with no schema in {str(directory)!r}")
    problems: list[str] = []
    for base, versions in by_base.items():
        problems.extend(check_versions(versions, policies.get(base, default_policy)))
    return problems


def _pair_problems(
    new: SchemaVersion, old: SchemaVersion, *, reader: SchemaVersion, writer: SchemaVersion
) -> list[str]:
    """Problems for one reader/writer pair, prefixed with the subject and versions."""
    prefix = (
        f"{new.subject_base} v{new.version} vs v{old.version}: "
        f"v{reader.version} cannot read v{writer.version}: "
    )
    return [prefix + p for p in check_compatibility(reader.schema, writer.schema)]


def _parse(schema: Mapping[str, Any], role: str) -> avro.schema.Schema:
    """Parse a schema dict with the avro library."""
    try:
        return avro.schema.parse(json.dumps(schema))
    except (avro.errors.AvroException, TypeError, ValueError) as exc:
        raise SchemaError(f"{role} schema is not a valid Avro schema: {exc}") from exc


def _compatibility(
    reader: avro.schema.Schema, writer: avro.schema.Schema
) -> SchemaCompatibilityResult:
    """The avro checker's verdict for one pair, from a fresh checker (it memoizes per instance)."""
    return ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)


def _explain(reader: avro.schema.Schema, writer: avro.schema.Schema, path: str) -> list[str]:
    """Field-by-field problems for an incompatible pair.

    avro reports messages and locations as unpaired sets, with fields by index and the
    location lost inside unions; descending records, arrays and maps here and asking avro
    about each field's types keeps every problem attached to a named field path.
    """
    verdict = _compatibility(reader, writer)
    if verdict.compatibility is SchemaCompatibilityType.compatible:
        return []
    if isinstance(reader, avro.schema.RecordSchema) and isinstance(
        writer, avro.schema.RecordSchema
    ):
        problems: list[str] = []
        if not schema_name_equals(reader, writer):
            problems.append(
                f"{_where(path, 'record')}: reader name {reader.fullname!r} "
                f"does not match writer name {writer.fullname!r} (and is not an alias)"
            )
        for reader_field in reader.fields:
            field_path = f"{path}.{reader_field.name}" if path else reader_field.name
            writer_field = lookup_writer_field(writer_schema=writer, reader_field=reader_field)
            if writer_field is None:
                if not reader_field.has_default:
                    problems.append(
                        f"field {field_path!r} in reader has no default and is missing from writer"
                    )
            else:
                problems.extend(_explain(reader_field.type, writer_field.type, field_path))
        return problems or _translate(verdict, path)
    if isinstance(reader, avro.schema.ArraySchema) and isinstance(writer, avro.schema.ArraySchema):
        return _explain(reader.items, writer.items, f"{path}[]")
    if isinstance(reader, avro.schema.MapSchema) and isinstance(writer, avro.schema.MapSchema):
        return _explain(reader.values, writer.values, f"{path}{{}}")
    if isinstance(reader, avro.schema.UnionSchema) or isinstance(writer, avro.schema.UnionSchema):
        return _explain_union(reader, writer, path) or _translate(verdict, path)
    return _translate(verdict, path)


def _explain_union(reader: avro.schema.Schema, writer: avro.schema.Schema, path: str) -> list[str]:
    """Problems per writer branch, compared with the reader branch of the same type and name."""
    writer_branches = writer.schemas if isinstance(writer, avro.schema.UnionSchema) else [writer]
    problems: list[str] = []
    for branch in writer_branches:
        if _compatibility(reader, branch).compatibility is SchemaCompatibilityType.compatible:
            continue
        if not isinstance(reader, avro.schema.UnionSchema):
            problems.extend(_explain(reader, branch, path))
            continue
        counterpart = next((r for r in reader.schemas if _same_kind(r, branch)), None)
        if counterpart is None:
            readable = ", ".join(_type_label(r) for r in reader.schemas)
            problems.append(
                f"{_where(path)}: reader union [{readable}] has no branch that can read "
                f"writer type {_type_label(branch)}"
            )
        else:
            problems.extend(_explain(counterpart, branch, path))
    return problems


def _same_kind(reader: avro.schema.Schema, writer: avro.schema.Schema) -> bool:
    """Whether a reader union branch is the one meant to read a writer branch."""
    if reader.type != writer.type:
        return False
    if isinstance(reader, avro.schema.NamedSchema) and isinstance(writer, avro.schema.NamedSchema):
        return bool(schema_name_equals(reader, writer))
    return True


def _type_label(schema: avro.schema.Schema) -> str:
    """A short type name for messages: the full name for named types."""
    if isinstance(schema, avro.schema.NamedSchema):
        return f"{schema.type} {schema.fullname}"
    return str(schema.type)


def _where(path: str, what: str = "field") -> str:
    """How a message names the place: the field path, or the top-level record."""
    return f"{what} {path!r}" if path else "top-level record"


_MESSAGE_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"^reader type: (\w+) not compatible with writer type: (\w+)$"),
        "type {0} in reader cannot read type {1} from writer",
    ),
    (
        re.compile(r"^reader union lacking writer type:? (\w+)$"),
        "reader union has no branch that can read writer type {0}",
    ),
    (
        re.compile(r"^expected: (\d+), found: (\d+)$"),
        "fixed size {1} in reader cannot read size {0} from writer",
    ),
    (re.compile(r"^expected: (\S+)$"), "named type in reader does not match writer's {0}"),
    (
        re.compile(r"^(\{.*\})$"),
        "reader enum lacks writer symbols {0} and has no enum default",
    ),
)


def _translate(verdict: SchemaCompatibilityResult, path: str) -> list[str]:
    """The avro checker's messages as sentences naming `path`, with any unambiguous location."""
    messages = sorted(verdict.messages)
    locations = sorted(loc for loc in verdict.locations if loc != "/")
    suffix = f" (at {locations[0]})" if len(messages) == 1 and len(locations) == 1 else ""
    kinds = sorted({k.value for k in verdict.incompatibilities})
    translated: list[str] = []
    for message in messages:
        text = _sentence(message, kinds)
        translated.append(f"{_where(path)}: {text}{suffix}")
    return translated or [
        f"{_where(path)}: incompatible ({', '.join(kinds) or 'no detail from avro'})"
    ]


def _type_name(token: str) -> str:
    """Lower-case avro's upper-cased type names (``STRING``); enum symbols stay as they are."""
    return token.lower() if token.lower() in _AVRO_TYPES else token


_AVRO_TYPES = frozenset(t.value for t in SchemaType)


def _sentence(message: str, kinds: list[str]) -> str:
    """One avro message as a sentence naming the reader and writer types."""
    if kinds == ["reader_field_missing_default_value"]:
        return f"nested field {message!r} in reader has no default and is missing from writer"
    for pattern, template in _MESSAGE_RULES:
        found = pattern.match(message)
        if found:
            return template.format(*(_type_name(g) for g in found.groups()))
    return message
