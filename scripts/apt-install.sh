#!/usr/bin/env bash
# apt-install.sh PACKAGE: install one of Debian's packages non-interactively (root or sudo).
# The ensure-*.sh scripts call it when what the tests need is missing.
set -euo pipefail

package=$1
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
echo "installing Debian's $package package" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "$package" > /dev/null
