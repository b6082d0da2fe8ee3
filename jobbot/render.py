"""Plain-text rendering of jobs and runs for the terminal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from core.durations import format_duration
from core.models import Run
from core.spec import JobSpec

STATE_MARKS = {
    "queued": "…", "running": "▶", "succeeded": "✔", "failed": "✖",
    "timed_out": "⏱", "cancelled": "■", "skipped": "↷",
    "needs_approval": "✋", "denied": "⛔", "expired": "⌛",
}


def job_line(job: JobSpec) -> str:
    """One line describing a job, as `jobbot validate` prints it."""
    image = job.image or f"build {job.image_from_build}"
    parts = [f"{job.name:<20}", f"{image:<28}", " ".join(job.command)]
    extras = []
    if job.schedule:
        extras.append(f"schedule {' | '.join(job.schedule)} {job.timezone}")
    if job.backoff_limit:
        extras.append(f"retries {job.backoff_limit}")
    if job.time_limit:
        extras.append(f"time limit {format_duration(job.time_limit)}")
    if job.parallelism > 1 or job.completions > 1:
        extras.append(f"{job.completions} completions, {job.parallelism} at a time")
    if job.confirm:
        extras.append("asks to confirm")
    if job.approval:
        count = job.approval.required
        extras.append(f"needs {count} approval{'' if count == 1 else 's'}")
    line = "  ".join(parts)
    return f"{line}  ({'; '.join(extras)})" if extras else line


def run_table(runs: list[Run], page: Callable[[str], str]) -> str:
    """The runs as a table; `page` gives a run's page link (by id)."""
    headers = ["RUN", "ID", "STATE", "SOURCE", "ACTOR", "CREATED", "DURATION", "PAGE", "REASON"]
    rows = [headers]
    for run in runs:
        rows.append([
            run.label, run.id, f"{STATE_MARKS.get(run.state, ' ')} {run.state}", run.source,
            run.actor, _when(run.scheduled_for or run.created_at),
            format_duration(run.duration) if run.duration is not None else "-",
            page(run.id), (run.reason or "")[:100],
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run_summary(run: Run) -> str:
    text = f"{run.label} {run.state}"
    if run.duration is not None and run.state != "skipped":
        text += f" after {format_duration(run.duration)}"
    if run.exit_code not in (None, 0):
        text += f" (exit code {run.exit_code})"
    if run.reason and run.state != "succeeded":
        text += f": {run.reason}"
    return text


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
