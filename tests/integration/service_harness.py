"""Run real ``memstream serve`` processes against the local stack."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from streams.common.settings import Settings
from tests.integration.harness import REPO, raw_log

TOKENS = {"tok-acme": "acme", "tok-globex": "globex"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(settings: Settings, data_dir: Path, port: int, tokens_file: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "MEMSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MEMSTREAM_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        "MEMSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "MEMSTREAM_PARTITIONS": str(settings.partitions),
        "MEMSTREAM_APP_ID": settings.app_id,
        "MEMSTREAM_SERVE_DATA_DIR": str(data_dir),
        "MEMSTREAM_SERVE_PORT": str(port),
        "MEMSTREAM_API_TOKENS_FILE": str(tokens_file),
        "MEMSTREAM_SNAPSHOT_EVERY_RECORDS": "10",
        "MEMSTREAM_SNAPSHOT_EVERY_S": "1",
        "MEMSTREAM_CONSISTENCY_TIMEOUT_S": "30",
    }


class Service:
    """One ``memstream serve`` process."""

    def __init__(self, settings: Settings, tmp: Path, data_dir: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.extra_env = env or {}  # e.g. MEMSTREAM_EMBEDDING_MODEL
        self.tmp = tmp
        self.data_dir = data_dir or tmp / f"serve-{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        tokens = tmp / "tokens"
        # one plain entry, one stored as its digest
        from streams.common.tokens import token_digest
        tokens.write_text(f"tok-acme=acme\nsha256:{token_digest('tok-globex')}=globex\n")
        self.tokens_file = tokens

    def start(self, wait: bool = True) -> Service:
        env = service_env(self.settings, self.data_dir, self.port, self.tokens_file)
        env.update(self.extra_env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "serve", "--plain-logs"], env=env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=5)
                last = r.json()
                if r.status_code == 200:
                    return dict(last)
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise AssertionError(f"service not ready after {timeout}s: {last}\n"
                             f"{self.log.read_text()[-3000:]}")

    def wait_lag_zero(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = httpx.get(f"{self.url}/readyz", timeout=5).json()
            if body["checks"]["index"].get("lag") == 0:
                return
            time.sleep(0.2)
        raise AssertionError("replica lag never reached 0")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(60)


def raw_memories(settings: Settings) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every committed memories.v1 record as (partition, offset, key, raw value), in
    partition then offset order."""
    return raw_log(settings, "memories.v1")

