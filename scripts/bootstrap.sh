#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs custsync (editable) with its dev extra.
# Sourced by the other scripts; re-installs only when pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "custsync needs Python 3.11: '$PYTHON' was not found (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  # also a .venv left half-made by an interrupted first run (no pip in it)
  echo "==> creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv --clear .venv
fi
stamp=".venv/.custsync-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing custsync and its dependencies into .venv (first time takes a minute)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  echo "$want" > "$stamp"
fi
