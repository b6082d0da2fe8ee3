"""Prometheus metrics that core and every front end update, without importing web/."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# One registry for jobbot's own metrics, so tests and /metrics never see another library's.
REGISTRY = CollectorRegistry(auto_describe=True)

RUNS_STARTED = Counter(
    "jobbot_runs_started", "Runs that began running, by job.", ["app", "job"], registry=REGISTRY
)
RUNS_FINISHED = Counter(
    "jobbot_runs_finished", "Runs that reached a final state, by job and state.",
    ["app", "job", "state"], registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "jobbot_run_duration_seconds", "Seconds from a run starting to it finishing, by job.",
    ["app", "job"], registry=REGISTRY,
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
QUEUE_DEPTH = Gauge(
    "jobbot_queue_depth", "Runs created by this process and not started yet, by job.",
    ["app", "job"], registry=REGISTRY,
)
SCHEDULER_LAG = Gauge(
    "jobbot_scheduler_lag_seconds", "How late the scheduler fired its last cron slot.",
    registry=REGISTRY,
)
SLACK_REQUESTS = Counter(
    "jobbot_slack_requests", "Calls to the Slack Web API, by method.", ["method"],
    registry=REGISTRY,
)
SLACK_ERRORS = Counter(
    "jobbot_slack_errors", "Slack Web API calls that failed, by method and error.",
    ["method", "error"], registry=REGISTRY,
)
GITHUB_REQUESTS = Counter(
    "jobbot_github_requests", "Calls to the GitHub API, by kind of call.", ["kind"],
    registry=REGISTRY,
)
GITHUB_ERRORS = Counter(
    "jobbot_github_errors", "GitHub API calls that failed, by kind and status.",
    ["kind", "status"], registry=REGISTRY,
)
KUBERNETES_ERRORS = Counter(
    "jobbot_kubernetes_api_errors", "Kubernetes API calls that failed, by operation and status.",
    ["operation", "status"], registry=REGISTRY,
)
