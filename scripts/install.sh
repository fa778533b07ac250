#!/usr/bin/env bash
# Create (once) the virtual environment memstream runs in and install the project into it.
# The venv lives outside the clone (MEMSTREAM_VENV) so every clone on a machine reuses
# the same multi-GB torch install; it is refreshed when pyproject.toml changes.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${MEMSTREAM_VENV:-$HOME/.cache/memstream/venv}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: memstream needs Python 3.11+ ($python is $("$python" --version 2>&1))" >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip wheel
fi
stamp="$venv/.memstream-$(sha256sum "$here/pyproject.toml" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "installing memstream and its dependencies into $venv (first time: several GB, minutes)" >&2
  log="$venv/install.log"
  if ! "$venv/bin/pip" install --progress-bar off -e "$here[dev]" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "error: pip install failed; full log: $log" >&2
    exit 2
  fi
  rm -f "$venv"/.memstream-* && touch "$stamp"
fi
