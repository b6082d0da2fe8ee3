# The chaos suite (tests/chaos): three `jobbot serve` replicas on one PostgreSQL, killed with
# SIGKILL under a stream of Slack commands, GitHub deliveries and cron slots. `make test` runs
# the bounded plan (chaos-test, a few minutes); `make chaos` a longer one. Each run prints its
# seed: CHAOS_SEED=N with the same CHAOS_* settings repeats its random choices.

# Defaults for using this file on its own; the top-level Makefile defines them.
VENV ?= .venv
PY ?= $(VENV)/bin/python

# The longer run's plan (tests/chaos/plan.py holds the bounded defaults).
CHAOS_LONG ?= CHAOS_REQUESTS=120 CHAOS_KILLS=10 CHAOS_SECONDS=240 CHAOS_SETTLE=120

.PHONY: chaos chaos-test

## chaos-test: the bounded chaos run that `make test` includes
chaos-test: venv postgres
	$(PY) -m pytest tests/chaos -p no:cacheprovider

## chaos: a longer chaos run (more requests and kills), its report printed
chaos: venv postgres
	$(CHAOS_LONG) $(PY) -m pytest tests/chaos -p no:cacheprovider -s
