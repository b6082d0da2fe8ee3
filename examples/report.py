"""A scheduled job: prints a tiny report with the time it ran."""

from datetime import UTC, datetime

print(f"report generated at {datetime.now(UTC).isoformat(timespec='seconds')}")
print("orders: 42, refunds: 1")
