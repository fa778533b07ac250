"""The dev stack fails with clear messages, not stack traces."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streams.ops.devstack import install
from streams.ops.devstack.exceptions import DevStackError
from streams.ops.devstack.stack import _require_free_port


def test_taken_port_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(DevStackError, match=f"127.0.0.1:{port}.*already taken"):
            _require_free_port(port, "Kafka")


def test_missing_maven_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevStackError, match="Maven .*apt-get install maven"):
        install.install_kafka(tmp_path / "cache")


def test_missing_java_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevStackError, match="Java 17\\+ not found"):
        install.find_java(tmp_path / "no-jdk")


def test_failed_download_gives_retry_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    mvn = fake / "mvn"
    mvn.write_text("#!/bin/sh\necho 'Could not transfer artifact' >&2\nexit 1\n")
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    with pytest.raises(DevStackError) as err:
        install.install_kafka(tmp_path / "cache")
    message = str(err.value)
    assert "Could not transfer artifact" in message
    assert "Retry by hand with:" in message and "dependency:copy-dependencies" in message
