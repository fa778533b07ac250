"""Each role installs from uv.lock with only its declared requirements, and runs there.

A venv per role is built by scripts/install.sh (uv hardlinks from its download cache, so
each takes seconds once `make install` has run). In it, every module of that role is
imported and every third-party name its source imports (lazy imports included) must be
installed: removing a requirement that a module uses fails here. The producer SDK
(the core, no extras) must install without torch, faiss or whisper, and still produce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.common.reader import read_topic
from streams.common.settings import Settings

REPO = Path(__file__).resolve().parents[2]

# Which extras a module needs, by longest matching prefix; anything else is core.
ROLE_OF_PREFIX = {
    "streams.processing": "worker",
    "streams.models": "worker",
    "agents": "worker",
    "streams.service": "serve",
    "streams.ops.export": "export",
    "streams.mcp": "mcp",
    "streams.ops.demo": "dev",
}
# streams.common.observability is both roles' (worker and serve export metrics).
SHARED = {"streams.common.observability": ("worker", "serve")}
HEAVY = ("torch", "faiss", "faster_whisper", "ctranslate2", "transformers", "nvidia", "triton")


def _modules() -> list[str]:
    names = []
    for root in ("streams", "agents"):
        for path in sorted((REPO / root).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _roles_of(module: str) -> tuple[str, ...]:
    if module in SHARED:
        return SHARED[module]
    best = max((p for p in ROLE_OF_PREFIX if module == p or module.startswith(p + ".")),
               key=len, default=None)
    return (ROLE_OF_PREFIX[best],) if best else ("core",)


def _build_venv(path: Path, extras: str) -> Path:
    env = dict(os.environ, MEMSTREAM_VENV=str(path), MEMSTREAM_EXTRAS=extras)
    proc = subprocess.run([str(REPO / "scripts/install.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def role_venvs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("roles")
    yield {role: _build_venv(base / (role or "core"), role)
           for role in ("", "worker", "serve", "export", "mcp")}


def _check(python: Path, extras: str, modules: list[str]) -> dict[str, list[str]]:
    proc = subprocess.run(
        [str(python), str(REPO / "tests/integration/role_imports.py"), str(REPO), extras,
         *modules],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("role", ["core", "worker", "serve", "export", "mcp"])
def test_each_role_imports_only_what_it_declares(role: str, role_venvs: dict[str, Path]) -> None:
    extras = "" if role == "core" else role
    modules = [m for m in _modules() if role in _roles_of(m) or "core" in _roles_of(m)]
    report = _check(role_venvs[extras], extras, modules)
    assert report == {"missing": [], "failed": []}


def test_the_test_environment_has_every_import_of_every_module() -> None:
    """The venv `make test` runs in is built from the lock alone (dev = every extra)."""
    report = _check(Path(sys.executable), "worker,serve,torch,export,mcp,dev", _modules())
    assert report == {"missing": [], "failed": []}


def test_the_sdk_installs_without_the_models_and_produces(
        role_venvs: dict[str, Path], provisioned: Settings) -> None:
    core = role_venvs[""]
    present = subprocess.run(
        [str(core), "-c", "import importlib.util as u, sys; "
         f"print([m for m in {HEAVY!r} if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=60)
    assert present.stdout.strip() == "[]", present.stdout
    line = {"tenant": "acme", "session_id": "s1", "interaction_id": "i1", "kind": "QUERY",
            "text": "where does the auth service deploy?", "event_id": "sdk-only-1",
            "event_time": "2026-11-25T10:00:00+00:00"}
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "MEMSTREAM_BOOTSTRAP_SERVERS": provisioned.bootstrap_servers,
           "MEMSTREAM_SCHEMA_REGISTRY_URL": provisioned.schema_registry_url,
           "MEMSTREAM_TOPIC_PREFIX": provisioned.topic_prefix}
    proc = subprocess.run([str(core), "-m", "streams", "produce", "telemetry.v1", "-"],
                          input=json.dumps(line) + "\n", capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "sent 1, rejected 0" in proc.stdout
    ids = [r.value["event_id"] for r in read_topic(provisioned, "telemetry.v1") if r.value]
    assert ids == ["sdk-only-1"]


def test_the_worker_embeds_without_torch_from_an_exported_model(
        role_venvs: dict[str, Path], tmp_path: Path) -> None:
    """What the image does: export in an environment with torch, embed in one without."""
    folder = tmp_path / "minilm-onnx"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "MEMSTREAM_CACHE_DIR": str(tmp_path / "cache")}
    export = subprocess.run([sys.executable, "-m", "streams", "models", "export-onnx",
                             "--out", str(folder)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert export.returncode == 0, export.stderr[-4000:]
    code = ("import sys, json\n"
            "from pathlib import Path\n"
            "from streams.models.embedding_backends import load_embedder\n"
            "e = load_embedder(sys.argv[1], 'onnx', cache_dir=Path(sys.argv[2]))\n"
            "v = e.embed(['the auth service deploys on Friday'])\n"
            "print(json.dumps({'id': e.model_id, 'v': v[0].tolist(),\n"
            "                  'torch': 'torch' in sys.modules}))\n")
    results = {}
    for name, python in (("dev", Path(sys.executable)), ("worker", role_venvs["worker"])):
        run = subprocess.run([str(python), "-c", code, str(folder), str(tmp_path / "cache")],
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-4000:]
        results[name] = json.loads(run.stdout.strip().splitlines()[-1])
    assert results["worker"]["torch"] is False
    assert results["worker"]["id"] == results["dev"]["id"]
    assert results["worker"]["id"].endswith("@onnx-fp32")
    similarity = sum(a * b for a, b in zip(results["worker"]["v"], results["dev"]["v"],
                                           strict=True))
    assert similarity > 0.9999
