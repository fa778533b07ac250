"""A real worker (and a real read service) exports what docs/metrics.md lists: every
catalogued metric of its process, with the catalogued type, and no metric or label that is
not catalogued."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.worker import AGENT_NAMES
from streams.common.settings import Settings
from tests.deployment import REPO, catalogue, read_service_merged
from tests.integration.harness import (
    free_port,
    memstream_env,
    start_worker,
    stop_worker,
    wait_ready,
    worker_settings,
)


def _families(text: str) -> dict[str, tuple[str, set[str]]]:
    """family name -> (type, label names seen) of every memstream family exposed."""
    out: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("memstream_"):
            labels = {k for s in family.samples for k in s.labels if k != "le"}
            out[family.name] = (family.type, labels)
    return out


def _check(exposed: dict[str, tuple[str, set[str]]], process: str) -> None:
    rows = {m.family: m for m in catalogue().values() if m.exported_by(process)}
    # prometheus_client writes the creation time of an unlabelled counter or histogram as
    # a family of its own, `<name>_created`: part of the catalogued metric.
    exposed = {name: v for name, v in exposed.items()
               if not (name.endswith("_created") and name.removesuffix("_created") in rows)}
    uncatalogued = sorted(set(exposed) - set(rows))
    assert not uncatalogued, f"{process} exposes metrics docs/metrics.md lacks: {uncatalogued}"
    expected = [m for m in rows.values() if m.required_in(process, AGENT_NAMES)]
    missing = sorted(m.name for m in expected if m.family not in exposed)
    assert not missing, f"{process} does not expose catalogued metrics: {missing}"
    for family, (kind, labels) in exposed.items():
        row = rows[family]
        assert kind == row.type, f"{row.name}: exposed as {kind}, catalogued as {row.type}"
        assert labels <= row.labels, f"{row.name}: labels {sorted(labels - row.labels)}"


def test_worker_exposes_the_catalogued_metrics(provisioned: Settings, tmp_path: Path) -> None:
    settings = worker_settings(provisioned, tmp_path, metrics_port=free_port())
    log = tmp_path / "worker.log"
    proc = start_worker(settings, log)
    try:
        wait_ready(log, 0)
        text = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10).text
    finally:
        assert stop_worker(proc) == 0
    exposed = _families(text)
    _check(exposed, "worker")
    # The state-dir gauges carry a sample from the start (the others wait for traffic).
    assert exposed["memstream_state_dir_bytes"][1] == {"dir"}


def test_read_service_exposes_the_catalogued_metrics(
    provisioned: Settings, tmp_path: Path
) -> None:
    if not read_service_merged():
        pytest.skip("`memstream serve` is not in this tree yet (read-service branch, issue 5)")
    port = free_port()
    env = memstream_env(worker_settings(provisioned, tmp_path))
    env.update({
        "MEMSTREAM_SERVE_PORT": str(port),
        "MEMSTREAM_SERVE_DATA_DIR": str(tmp_path / "serve"),
        "MEMSTREAM_STATE_DIR": str(tmp_path / "state"),
    })
    log = (tmp_path / "serve.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "streams", "serve", "--plain-logs"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "read service not healthy in 240 s"
            time.sleep(1)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    _check(_families(text), "serve")
