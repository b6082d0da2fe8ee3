"""Works for a while, printing progress; stops cleanly on SIGTERM (try cancel or the time limit)."""

import signal
import sys
import time

seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 60


def stop(signum: int, frame: object) -> None:
    print("SIGTERM received: saving progress and stopping", flush=True)
    sys.exit(143)


signal.signal(signal.SIGTERM, stop)
for second in range(1, seconds + 1):
    print(f"working... {second}/{seconds}s", flush=True)
    time.sleep(1)
print("finished")
