"""A quick job: says hello and shows what jobbot passes to every run."""

import os
import time

print(f"hello from {os.environ['JOBBOT_JOB']} #{os.environ['JOBBOT_RUN_NUMBER']}")
print(f"greeting: {os.environ.get('GREETING', 'hi')}")
for step in range(1, 4):
    print(f"step {step}/3")
    time.sleep(0.2)
print("done")
