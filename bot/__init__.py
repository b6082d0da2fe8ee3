"""The Slack front end (slack-bolt AsyncApp): slash commands, run threads and buttons."""
