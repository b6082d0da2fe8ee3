"""The GitHub front end (githubkit): webhooks, pull-request commands, check runs and builds."""
