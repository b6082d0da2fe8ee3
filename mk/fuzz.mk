# The fuzz suite (tests/fuzz, hypothesis) at length: ten times the cases of the bounded run that
# `make test` includes (more than 10,000 in all). FUZZ_SEED=N repeats a run's cases; each run
# prints its seed and the cases each test ran.

# Defaults for using this file on its own; the top-level Makefile defines them.
VENV ?= .venv
PY ?= $(VENV)/bin/python

FUZZ_PYTEST_ARGS ?=

.PHONY: fuzz

## fuzz: the thorough fuzz run (HYPOTHESIS_PROFILE=thorough) over every route, parser and the CLI
fuzz: venv
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest tests/fuzz -p no:cacheprovider \
		--hypothesis-show-statistics $(FUZZ_PYTEST_ARGS)
