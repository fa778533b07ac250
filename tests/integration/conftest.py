"""The real local stack (Kafka + Apicurio), started once per test session if absent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from streams.admin import ensure_topics
from streams.devstack.stack import DevStack
from streams.registry import register_all
from streams.settings import Settings, load_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def dev_stack() -> Iterator[DevStack]:
    """The local stack; stopped at the end only if this session started it."""
    stack = DevStack(load_settings())
    already = all(c.answering for c in stack.status())
    if not already:
        stack.up(print)
    yield stack
    if not already:
        stack.down(print)


@pytest.fixture
def stack_settings(dev_stack: DevStack, request: pytest.FixtureRequest) -> Settings:
    """Settings for this test: the local stack, and a topic prefix of its own."""
    name = request.node.name.replace("[", "-").replace("]", "")[:40]
    return load_settings(
        bootstrap_servers=dev_stack.bootstrap,
        schema_registry_url=dev_stack.registry_url,
        topic_prefix=f"pytest.{name}.{uuid.uuid4().hex[:8]}.",
        partitions=2,
        request_timeout_s=10.0,
    )


@pytest.fixture
def provisioned(stack_settings: Settings) -> Settings:
    """Settings whose topics exist and whose schemas are registered."""
    ensure_topics(stack_settings)
    register_all(stack_settings, progress=lambda _m: None)
    return stack_settings
