"""`python -m jobbot` is the `jobbot` command."""

import sys

from jobbot.cli import main

sys.exit(main())
