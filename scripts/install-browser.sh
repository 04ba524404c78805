#!/usr/bin/env bash
# The browser of the browser tests (tests/browser/): Debian's chromium package, driven by
# Playwright through its path (/usr/bin/chromium); Playwright's own browser downloads are
# never used. Idempotent and quiet: nothing happens when Chromium is already there.
# As root it installs the package; otherwise it says what to install and fails.
set -euo pipefail

CHROMIUM=${MYCEPA_CHROMIUM:-/usr/bin/chromium}
say() { printf '[browser] %s\n' "$*"; }

[ -x "$CHROMIUM" ] && exit 0

if [ "$CHROMIUM" != /usr/bin/chromium ]; then
  say "MYCEPA_CHROMIUM=$CHROMIUM is not an executable file"; exit 1
fi
if [ "$(id -u)" != 0 ]; then
  say "Chromium is not installed. Install it with: sudo apt-get install -y chromium"
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  say "Chromium is not installed and this is not a Debian-like system: install Chromium at $CHROMIUM"
  exit 1
fi
say "installing Debian's chromium (once)..."
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
[ -x "$CHROMIUM" ] || { say "chromium was installed but $CHROMIUM is missing"; exit 1; }
say "Chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
