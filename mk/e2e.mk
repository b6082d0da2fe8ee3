# End-to-end suite against a real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) with kwok-simulated nodes. See tests/e2e/README.md.
#
# The binaries are built once from the Go module proxy and cached outside the checkout in
# $(E2E_CACHE) (override with JOBBOT_CACHE=...); the first build takes a while, later runs
# in any clone reuse the cache.

# Defaults for using this file on its own; the top-level Makefile defines them.
VENV ?= .venv
PY ?= $(VENV)/bin/python

E2E_CACHE ?= $(or $(JOBBOT_CACHE),$(HOME)/.cache/jobbot)
E2E_BUILD := tests/e2e/cluster/build.sh
E2E_PYTEST_ARGS ?=

.PHONY: e2e-cluster e2e-cluster-up e2e

## e2e-cluster: build (or find cached) etcd, kube-apiserver, -controller-manager, -scheduler, kwok
e2e-cluster:
	JOBBOT_CACHE=$(E2E_CACHE) bash $(E2E_BUILD)

## e2e-cluster-up: run a cluster in the foreground; prints its kubeconfig; stop with Ctrl-C
## (or `kill $$(cat .jobbot/e2e-cluster/cluster.pid)` from another terminal)
e2e-cluster-up: e2e-cluster venv
	JOBBOT_CACHE=$(E2E_CACHE) $(PY) -m tests.e2e.cluster up

## e2e: run the end-to-end tests against a fresh cluster (the chart's dry run needs helm)
e2e: e2e-cluster venv
	JOBBOT_CACHE=$(E2E_CACHE) bash scripts/ensure-helm.sh
	JOBBOT_CACHE=$(E2E_CACHE) $(PY) -m pytest tests/e2e -p no:cacheprovider $(E2E_PYTEST_ARGS)
