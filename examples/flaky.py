"""Fails on its first two attempts and succeeds on the third, to show retries."""

import os
import sys

attempt = int(os.environ["JOBBOT_ATTEMPT"])
if attempt < 3:
    print(f"attempt {attempt}: the upstream service is not answering", file=sys.stderr)
    sys.exit(1)
print(f"attempt {attempt}: worked")
