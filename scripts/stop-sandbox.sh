#!/usr/bin/env bash
# Stops the sandbox started by scripts/demo.sh.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pidfile="$ROOT/.custsync/sandbox.pid"
if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
  echo "sandbox stopped"
else
  echo "no sandbox started by scripts/demo.sh is running"
fi
rm -f "$pidfile"
