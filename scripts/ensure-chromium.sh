#!/usr/bin/env bash
# Makes sure Debian's chromium is at /usr/bin/chromium (the browser test drives it through
# Playwright with executable_path: Playwright never downloads a browser of its own).
# Sourced by scripts/test.sh; installs with apt-get when missing and we are root, and
# otherwise says what to do (the browser test then fails naming the missing binary; the
# rest of the suite runs). CUSTSYNC_CHROMIUM overrides the path.
CHROMIUM="${CUSTSYNC_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian's chromium for the browser test (apt-get, once)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null || true
  fi
  if [ ! -x "$CHROMIUM" ]; then
    echo "WARNING: the browser test needs Debian's chromium at $CHROMIUM and it could not" \
      "be installed here: run 'sudo apt-get install -y chromium' (or set CUSTSYNC_CHROMIUM" \
      "to a chromium binary), or leave the test out: bash scripts/test.sh -m 'not browser'" >&2
  fi
fi
export CUSTSYNC_CHROMIUM="$CHROMIUM"
