# jobbot's two commands: `make run` serves the example app, `make test` checks everything.
# Both set up what they need (a virtualenv, PostgreSQL for the store tests) on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test check lint typecheck imports unit browser-test chromium helm bench postgres venv clean help

help:
	@echo "make run     serve the example app.yaml (SQLite, local executor); open the link it prints"
	@echo "make test    lint, type-check, check layering, unit, integration, browser and chaos tests"
	@echo "make helm    build the pinned helm the chart's tests use (once, into ~/.cache/jobbot)"
	@echo "make browser-test  the run pages in headless Chromium (installs Debian's chromium)"
	@echo "make e2e     end-to-end tests against a real Kubernetes control plane"
	@echo "make fuzz    the fuzz suite at length (10,000+ cases; make test runs a bounded one)"
	@echo "make chaos   replicas killed under load at length (make test runs a bounded run)"
	@echo "make bench   benchmarks (figures printed, nothing asserted)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "jobbot needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: venv
	$(VENV)/bin/jobbot serve

postgres:
	@bash scripts/ensure-postgres.sh

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy

imports: venv
	$(VENV)/bin/lint-imports

check: lint typecheck imports

# The chart's tests need helm: built once into ~/.cache/jobbot, before the tests' time limits.
helm:
	@bash scripts/ensure-helm.sh

unit: venv postgres helm
	$(PY) -m pytest

chromium:
	@bash scripts/ensure-chromium.sh

browser-test: venv chromium
	$(PY) -m pytest tests/browser

test: check unit browser-test chaos-test

bench: venv postgres e2e-cluster
	$(PY) -m bench.trigger
	$(PY) -m bench.k8s_launch
	$(PY) -m bench.slack_ack
	$(PY) -m bench.logs
	$(PY) -m bench.scheduler
	$(PY) -m bench.github_webhook
	$(PY) -m bench.chaos
	$(PY) -m bench.locks

clean:
	rm -rf $(VENV) .jobbot .pytest_cache .mypy_cache .ruff_cache

-include mk/*.mk
