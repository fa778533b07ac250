"""Register the shipped schema versions in a Confluent-compatible registry."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.common.exceptions import SchemaError, UnavailableError
from streams.common.schemas import SCHEMA_DIR, SchemaVersion, load_schema_versions
from streams.common.settings import Settings
from streams.common.topics import TOPICS, TopicSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    """One schema version as the registry holds it."""

    subject: str
    version: int
    schema_id: int
    created: bool


def registry_client(settings: Settings) -> SchemaRegistryClient:
    """A registry client from the settings (URL, credentials, TLS, bounded timeout)."""
    return SchemaRegistryClient(settings.registry_client_config())


def subject_for(settings: Settings, spec: TopicSpec) -> str:
    """The value subject of a topic: ``<prefix><topic>-value`` (Confluent TopicNameStrategy)."""
    return f"{settings.topic(spec.base)}-value"


@functools.lru_cache(maxsize=64)
def latest_schema(subject_base: str, directory: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The newest shipped version of a subject base's schema (what producers write with)."""
    versions = load_schema_versions(directory).get(subject_base)
    if not versions:
        raise SchemaError(f"no schema files for {subject_base!r} in {directory}")
    return versions[-1].schema


def register_all(
    settings: Settings,
    client: SchemaRegistryClient | None = None,
    directory: Path = SCHEMA_DIR,
    progress: Callable[[str], None] = logger.info,
) -> list[Registration]:
    """Register every shipped version in order and set each subject's compatibility.

    Versions already registered are left alone, so running it twice changes nothing. The
    compatibility level is set before new versions go in, so the registry itself rejects
    an incompatible one.
    """
    client = client or registry_client(settings)
    all_versions = load_schema_versions(directory)
    done: list[Registration] = []
    for spec in TOPICS:
        subject = subject_for(settings, spec)
        versions = all_versions.get(spec.schema, [])
        if not versions:
            raise SchemaError(f"topic {spec.base}: no schema files for {spec.schema!r}")
        for i, version in enumerate(versions):
            reg = _register(client, subject, version, settings.schema_registry_url)
            if i == 0:
                # Set once the subject exists (a registry may refuse config for an
                # unknown subject) and before later versions, so the registry checks them.
                _set_compatibility(client, subject, spec.compatibility)
            done.append(reg)
            state = "registered" if reg.created else "already registered"
            progress(f"{subject} v{version.version}: {state} (id {reg.schema_id})")
    return done


def _register(
    client: SchemaRegistryClient, subject: str, version: SchemaVersion, url: str
) -> Registration:
    schema = Schema(json.dumps(version.schema), "AVRO")
    try:
        found = client.lookup_schema(subject, schema)
    except SchemaRegistryError as exc:
        if exc.http_status_code != 404:
            raise SchemaError(f"{subject}: registry lookup failed: {exc}") from exc
    except Exception as exc:
        raise UnavailableError(f"schema registry {url} unreachable: {exc}") from exc
    else:
        if found.schema_id is None:
            raise SchemaError(f"{subject}: the registry found {version.path.name} but "
                              "answered no schema id")
        return Registration(subject, version.version, found.schema_id, created=False)
    try:
        schema_id = client.register_schema(subject, schema)
    except SchemaRegistryError as exc:
        if exc.http_status_code == 409:
            raise SchemaError(
                f"{subject}: the registry rejected {version.path.name} as incompatible "
                f"with the registered versions: {exc.error_message}"
            ) from exc
        raise SchemaError(f"{subject}: registering {version.path.name} failed: {exc}") from exc
    return Registration(subject, version.version, schema_id, created=True)


def _set_compatibility(client: SchemaRegistryClient, subject: str, level: str) -> None:
    try:
        client.set_compatibility(subject_name=subject, level=level)
    except SchemaRegistryError as exc:
        raise SchemaError(f"{subject}: setting compatibility {level} failed: {exc}") from exc

