#!/usr/bin/env bash
# Install Debian's PostgreSQL server if it is missing: the store tests start a throwaway
# cluster of it (see tests/support/postgres.py). Nothing is started here.
set -euo pipefail

if [ -n "${JOBBOT_TEST_DATABASE_URL:-}" ]; then
  exit 0  # the tests use the server given
fi
if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
  exit 0
fi
echo "PostgreSQL server not found" >&2
bash "$(dirname "$0")/apt-install.sh" postgresql
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || {
  echo "installing postgresql did not provide initdb" >&2
  exit 1
}
