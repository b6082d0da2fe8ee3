"""A job with parameters: greets WHO, TIMES times; prints its secret to show it masked."""

import os

who = os.environ["WHO"]
greeting = f"hello, {who}!"
if os.environ["LOUD"] == "true":
    greeting = greeting.upper()
for _ in range(int(os.environ["TIMES"])):
    print(greeting)
print(f"passphrase: {os.environ.get('PASSPHRASE', '(none given)')}")
