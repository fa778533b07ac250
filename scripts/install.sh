#!/usr/bin/env bash
# Build memstream's virtual environment from uv.lock: the exact, hashed versions that CI
# and the image use, so a new upstream release cannot change what a fresh machine runs.
#   MEMSTREAM_VENV    where the venv lives (default: .venv in the clone)
#   MEMSTREAM_EXTRAS  space-separated extras (default: dev; empty = the producer SDK only)
# `scripts/install.sh lock [uv lock options]` re-resolves uv.lock instead (make lock).
# uv itself is installed once, at a pinned version, into the memstream cache; it hardlinks
# packages from its download cache, so a fresh venv costs seconds once that cache is warm.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${MEMSTREAM_VENV:-$here/.venv}"
extras="${MEMSTREAM_EXTRAS-dev}"
python="${PYTHON:-python3}"
uv_version="0.13.9"
cache="${MEMSTREAM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/memstream}"

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: memstream needs Python 3.11+ ($python is $("$python" --version 2>&1))" >&2
  exit 2
fi

uv="$cache/uv-$uv_version/bin/uv"
if [ ! -x "$uv" ]; then
  echo "installing uv $uv_version into $cache/uv-$uv_version" >&2
  rm -rf "$cache/uv-$uv_version"
  "$python" -m venv "$cache/uv-$uv_version"
  "$cache/uv-$uv_version/bin/pip" install -q --disable-pip-version-check "uv==$uv_version"
fi

if [ "${1:-}" = "lock" ]; then
  shift
  exec "$uv" --directory "$here" lock "$@"
fi

args=(sync --locked --python "$python" --no-progress)
for extra in $extras; do args+=(--extra "$extra"); done
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv from uv.lock (extras: ${extras:-none})" >&2
fi
log="$(mktemp)"
if ! UV_PROJECT_ENVIRONMENT="$venv" "$uv" --directory "$here" "${args[@]}" >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "error: installing from uv.lock failed (after changing pyproject.toml, run 'make lock')" >&2
  exit 2
fi
rm -f "$log"
