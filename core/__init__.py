"""The domain of jobbot: job definitions, runs, policy, scheduling and executors (no Slack, GitHub or HTTP)."""
