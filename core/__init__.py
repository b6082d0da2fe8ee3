"""The domain of jobbot: job definitions, runs, policy, scheduling, executors."""
