#!/usr/bin/env bash
# The test suite: installs what it needs, then runs pytest (extra args pass through).
# PostgreSQL tests use $CUSTSYNC_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres)
# or, when none answers, a throwaway cluster started from the PostgreSQL binaries.
# The browser test needs Debian's chromium: installed here when missing (as root).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
source scripts/ensure-chromium.sh  # the browser test's chromium (apt-get when missing)
# one worker per core plus one (at most 4): the tests wait on sandbox sockets and
# `custsync run` subprocesses a third of the time, so a third worker on 2 cores took the
# suite from 13.4 to 11.9 min; a test file per worker at a time (module sandboxes are
# shared within a file); CUSTSYNC_TEST_WORKERS=0 runs everything in one process
workers=$(( $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) + 1 ))  # cores, not OpenMP threads
# --no-loadscope-reorder: files go out in collection order (conftest.py puts the longest
# first), not xdist's largest-test-count first
exec .venv/bin/python -m pytest -n "${CUSTSYNC_TEST_WORKERS:-$workers}" --maxprocesses 4 \
  --dist loadfile --no-loadscope-reorder "$@"
