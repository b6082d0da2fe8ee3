"""Executors run a run somewhere: as local processes, or as Kubernetes Jobs."""
