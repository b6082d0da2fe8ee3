"""GitHub front end: a GitHub App on githubkit (webhook, PR commands, check runs, builds)."""
