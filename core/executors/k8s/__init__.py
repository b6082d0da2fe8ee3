"""Helpers of the Kubernetes executor: manifests, API calls with retries, watches and logs."""
