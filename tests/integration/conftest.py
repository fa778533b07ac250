"""The real local stack (Kafka + Apicurio), started once per test session if absent."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from streams.common.admin import ensure_topics
from streams.common.registry import register_all, subject_for
from streams.common.settings import Settings, load_settings
from streams.common.topics import TOPICS
from streams.ops.devstack.stack import DevStack
from tests.integration.harness import free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _running(stack: DevStack, *, ours: bool) -> Iterator[DevStack]:
    """``stack``, started if it is not answering (``ours``: started by memstream in its
    state dir); stopped at the end only if it was started here."""
    already = all(c.answering and (c.ours or not ours) for c in stack.status())
    if not already:
        stack.up(print)
    yield stack
    if not already:
        stack.down(print)


def _test_settings(stack: DevStack, request: pytest.FixtureRequest) -> Settings:
    """Settings for one test on ``stack``, with a topic prefix of its own."""
    name = request.node.name.replace("[", "-").replace("]", "")[:40]
    return load_settings(
        bootstrap_servers=stack.bootstrap,
        schema_registry_url=stack.registry_url,
        topic_prefix=f"pytest.{name}.{uuid.uuid4().hex[:8]}.",
        partitions=2,
        request_timeout_s=10.0,
    )


@pytest.fixture(scope="session")
def dev_stack() -> Iterator[DevStack]:
    """The local stack; stopped at the end only if this session started it."""
    yield from _running(DevStack(load_settings()), ours=False)


def _forget(settings: Settings) -> None:
    """Delete the topics and schema subjects under a test's prefix, so repeated runs on a
    kept local stack do not pile up thousands of them (a broker holding them starts slowly,
    and so does a registry replaying them). Best effort: a leftover warns, never fails."""
    prefix = settings.topic_prefix
    try:
        admin = AdminClient({**settings.kafka_client_config(), "log_level": 0})
        topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        for future in (admin.delete_topics(topics, operation_timeout=10).values()
                       if topics else ()):
            future.result(timeout=15)
        with httpx.Client(base_url=settings.schema_registry_url, timeout=10) as http:
            for subject in [subject_for(settings, spec) for spec in TOPICS]:
                if http.delete(f"/subjects/{subject}").status_code == 200:
                    http.delete(f"/subjects/{subject}", params={"permanent": "true"})
    except Exception as exc:  # noqa: BLE001 - cleanup must not fail the test it follows
        warnings.warn(f"left topics or subjects under {prefix!r}: {exc}", stacklevel=1)


@pytest.fixture
def stack_settings(dev_stack: DevStack, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings for this test: the local stack, and a topic prefix of its own (its topics
    and subjects are deleted afterwards)."""
    settings = _test_settings(dev_stack, request)
    yield settings
    _forget(settings)


@pytest.fixture
def provisioned(stack_settings: Settings) -> Settings:
    """Settings whose topics exist and whose schemas are registered."""
    ensure_topics(stack_settings)
    register_all(stack_settings, progress=lambda _m: None)
    return stack_settings


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """A stack of its own for the tests that kill or freeze the broker or the registry:
    never the shared one, which other tests (and other sessions) are using.

    Its state lives in a temporary directory and its ports are free ones, unless
    ``MEMSTREAM_FAULT_STACK_DIR`` and ``MEMSTREAM_FAULT_STACK_PORTS`` (kafka,controller,
    registry) name a stack to reuse; one this fixture did not start is left running.
    """
    ports = os.environ.get("MEMSTREAM_FAULT_STACK_PORTS")
    kafka, controller, registry = (
        [int(p) for p in ports.split(",")] if ports else [free_port() for _ in range(3)]
    )
    home = os.environ.get("MEMSTREAM_FAULT_STACK_DIR")
    stack = DevStack(load_settings(
        state_dir=Path(home) if home else tmp_path_factory.mktemp("fault-stack"),
        dev_kafka_port=kafka, dev_controller_port=controller, dev_registry_port=registry,
    ))
    yield from _running(stack, ours=True)


@pytest.fixture
def fault_settings(fault_stack: DevStack, request: pytest.FixtureRequest) -> Settings:
    """Settings for a test on the fault stack, with a topic prefix of its own."""
    return _test_settings(fault_stack, request)
