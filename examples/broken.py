"""Always fails with exit code 3, to show a failed run and its log tail."""

import sys

print("loading 1,204 invoices")
print("error: invoice 1,187 has no customer", file=sys.stderr)
sys.exit(3)
