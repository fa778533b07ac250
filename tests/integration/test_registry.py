"""Schema registration, evolution and rejection through the real registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from streams.common.codec import AvroCodec
from streams.common.exceptions import SchemaError
from streams.common.registry import register_all, registry_client
from streams.common.schemas import SCHEMA_DIR, load_schema_versions
from streams.common.settings import Settings


def test_register_is_idempotent_and_sets_compatibility(stack_settings: Settings) -> None:
    first = register_all(stack_settings, progress=lambda _m: None)
    second = register_all(stack_settings, progress=lambda _m: None)
    assert all(r.created for r in first)
    assert not any(r.created for r in second)
    assert [r.schema_id for r in first] == [r.schema_id for r in second]
    client = registry_client(stack_settings)
    subject = f"{stack_settings.topic('telemetry.v1')}-value"
    assert client.get_compatibility(subject) == "BACKWARD_TRANSITIVE"
    assert client.get_versions(subject) == [1, 2]


def test_v1_data_reads_with_v2_and_v2_data_reads_with_v1(stack_settings: Settings) -> None:
    register_all(stack_settings, progress=lambda _m: None)
    versions = load_schema_versions()["telemetry"]
    v1, v2 = versions[0].schema, versions[1].schema
    subject = f"{stack_settings.topic('telemetry.v1')}-value"
    codec = AvroCodec(registry_client(stack_settings))
    base = {"tenant": "t", "event_id": "e", "event_time": 1795600000000, "session_id": "s",
            "interaction_id": "i", "kind": "QUERY", "text": "hello", "tool_name": None,
            "outcome": None, "latency_ms": None, "attributes": {}}

    old = codec.encode(subject, v1, base)
    as_v2 = codec.decode(old, v2)
    assert as_v2["text"] == "hello"
    assert as_v2["model"] is None and as_v2["token_count"] is None

    new = codec.encode(subject, v2, {**base, "model": "m-1", "token_count": 3})
    as_v1 = codec.decode(new, v1)
    assert as_v1["text"] == "hello"
    assert "model" not in as_v1
    assert codec.schema_id(subject, v1) != codec.schema_id(subject, v2)

    # Without logical types (the read replica's codec) the same bytes give epoch millis.
    plain = AvroCodec(registry_client(stack_settings), logical_types=False)
    for _ in range(2):  # the second decode takes the cached path
        assert plain.decode(new, v2)["event_time"] == 1795600000000
        assert plain.decode(old, v2)["model"] is None
    assert codec.decode(new, v2)["event_time"].timestamp() == 1795600000


def test_registry_rejects_incompatible_version(stack_settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, folder)
    bad = json.loads((folder / "telemetry-2.avsc").read_text())
    bad["fields"].append({"name": "region", "type": "string", "doc": "required, no default"})
    (folder / "telemetry-3.avsc").write_text(json.dumps(bad))
    with pytest.raises(SchemaError) as rejected:
        register_all(stack_settings, directory=folder, progress=lambda _m: None)
    message = str(rejected.value)
    assert "telemetry.v1-value" in message
    assert "region" in message
    client = registry_client(stack_settings)
    assert client.get_versions(f"{stack_settings.topic('telemetry.v1')}-value") == [1, 2]
