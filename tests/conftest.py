"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import warnings

import pytest

# authlib (pulled in by confluent-kafka's registry client) warns on import; not ours.
warnings.filterwarnings("ignore", message="The httpx module is deprecated")

from streams.common.settings import Settings, load_settings  # noqa: E402 - after the filter

# Tests never read a developer's own MEMSTREAM_* overrides by accident, except the ones
# that say where the local stack and its cache live.
_KEEP = {
    "MEMSTREAM_CACHE_DIR",
    "MEMSTREAM_STATE_DIR",
    "MEMSTREAM_JAVA_HOME",
    "MEMSTREAM_VENV",
    "MEMSTREAM_DEV_KAFKA_PORT",
    "MEMSTREAM_DEV_CONTROLLER_PORT",
    "MEMSTREAM_DEV_REGISTRY_PORT",
    "MEMSTREAM_FAULT_STACK_DIR",
    "MEMSTREAM_FAULT_STACK_PORTS",
}


@pytest.fixture(autouse=True)
def _clean_memstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MEMSTREAM_") and name not in _KEEP:
            monkeypatch.delenv(name)


@pytest.fixture
def settings_factory():  # type: ignore[no-untyped-def]
    """Build settings from keyword overrides (environment otherwise)."""

    def make(**overrides: object) -> Settings:
        return load_settings(**overrides)

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI (CI=true) a skipped test fails: a skip is for a user's machine, never for CI,
    where .ci/run must install whatever the test needs (Go, promtool, espeak-ng)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must provide what this test needs: {reason}"
