#!/usr/bin/env bash
# Install Debian's Chromium if it is missing: the browser tests drive /usr/bin/chromium with
# Playwright. Never a downloaded browser (no `playwright install`).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "Chromium not found" >&2
bash "$(dirname "$0")/apt-install.sh" chromium
[ -x /usr/bin/chromium ] || {
  echo "installing chromium did not provide /usr/bin/chromium" >&2
  exit 1
}
