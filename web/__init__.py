"""The browser front end: run pages with live logs, the jobs overview, metrics."""
