#!/usr/bin/env bash
# Opens the Dagster UI on the demo's instance (.dagster_home) and state DB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
source scripts/sandbox-env.sh
export DAGSTER_HOME="$ROOT/.dagster_home"
export CUSTSYNC_STATE_DB_URL="${CUSTSYNC_STATE_DB_URL:-sqlite:///$ROOT/.custsync/state.sqlite}"
mkdir -p "$DAGSTER_HOME"
cp scripts/demo_dagster.yaml "$DAGSTER_HOME/dagster.yaml"  # run monitoring on, as in demo.sh
# started from DAGSTER_HOME, not the repository root: the production dagster.yaml there
# would make `dagster dev` warn on every start that it is not the instance in use. (`dg dev`
# only runs from the project root, so it warns the same: `dagster dev` stays, without its
# "superseded" notice.)
cd "$DAGSTER_HOME"
export PYTHONWARNINGS="ignore:Function \`dev_command\` is superseded${PYTHONWARNINGS:+,$PYTHONWARNINGS}"
exec "$ROOT/.venv/bin/dagster" dev -w "$ROOT/workspace.yaml" -h 127.0.0.1 -p "${DAGSTER_UI_PORT:-3000}"
