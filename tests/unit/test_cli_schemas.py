"""`memstream schemas check` passes on the shipped schemas and names a breaking field."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from streams.common.schemas import SCHEMA_DIR

REPO = Path(__file__).resolve().parents[2]


def run_check(folder: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "streams", "schemas", "check"]
    if folder is not None:
        args += ["--dir", str(folder)]
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def test_shipped_schemas_pass() -> None:
    proc = run_check()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "compatible" in proc.stdout


def test_incompatible_version_fails_naming_the_field(tmp_path: Path) -> None:
    folder = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, folder)
    feedback = json.loads((folder / "feedback-1.avsc").read_text())
    for field in feedback["fields"]:
        if field["name"] == "rating":
            field["type"] = "string"
    (folder / "feedback-2.avsc").write_text(json.dumps(feedback))
    proc = run_check(folder)
    assert proc.returncode == 1
    assert "INCOMPATIBLE feedback v2 vs v1" in proc.stdout
    assert "'rating'" in proc.stdout
