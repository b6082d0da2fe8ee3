#!/usr/bin/env bash
# Install Debian's Chromium if it is missing: the browser tests drive /usr/bin/chromium with
# Playwright. Never a downloaded browser (no `playwright install`).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "Chromium not found: installing Debian's chromium package" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq chromium > /dev/null
[ -x /usr/bin/chromium ] || {
  echo "installing chromium did not provide /usr/bin/chromium" >&2
  exit 1
}
