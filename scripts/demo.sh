#!/usr/bin/env bash
# The main job: install, start the sandbox APIs in the background, materialize every
# asset once on embedded defaults (SQLite state DB, SQLite Dagster instance in
# .dagster_home), print a summary and how to look at it in the Dagster UI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
source scripts/sandbox-env.sh

mkdir -p .custsync .dagster_home
export DAGSTER_HOME="$ROOT/.dagster_home"
# embedded default storage (SQLite under DAGSTER_HOME), no telemetry, run monitoring on
cp scripts/demo_dagster.yaml "$DAGSTER_HOME/dagster.yaml"
export CUSTSYNC_STATE_DB_URL="${CUSTSYNC_STATE_DB_URL:-sqlite:///$ROOT/.custsync/state.sqlite}"
BASE_PORT="${CUSTSYNC_SANDBOX_PORT:-8701}"
sandbox_up() {  # the Salesforce emulator answers on the base port
  .venv/bin/python -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$BASE_PORT" 2>/dev/null
}

if sandbox_up; then
  echo "==> sandbox already running on 127.0.0.1:$BASE_PORT"
else
  echo "==> starting the sandbox APIs on 127.0.0.1:$BASE_PORT.. (log: .custsync/sandbox.log)"
  nohup .venv/bin/custsync sandbox --base-port "$BASE_PORT" > .custsync/sandbox.log 2>&1 &
  echo $! > .custsync/sandbox.pid
  for _ in $(seq 1 60); do
    sandbox_up && break
    sleep 0.5
  done
  sleep 1; sandbox_up || { echo "the sandbox did not start; see .custsync/sandbox.log" >&2; exit 1; }
fi

echo "==> materializing every asset (sync_job)"
.venv/bin/custsync run

cat <<MSG

Look at it in the Dagster UI (same instance, same state DB):
    bash scripts/ui.sh            # then open http://127.0.0.1:3000 (Runs, Assets, lineage)
Look at what waits for a person (rows quarantined with reasons, links refused or in doubt):
    .venv/bin/custsync quarantine --db sqlite:///.custsync/state.sqlite
    .venv/bin/custsync conflicts --db sqlite:///.custsync/state.sqlite
Run the main job again (it publishes nothing when nothing changed):
    bash scripts/demo.sh
Stop the sandbox:
    bash scripts/stop-sandbox.sh
MSG
