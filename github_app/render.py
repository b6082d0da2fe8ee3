"""Pure functions from runs to GitHub text: the PR status comment, help, check-run output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from core.masking import Masker
from core.models import Run, RunState

RUNS_MARKER = "<!-- jobbot:runs -->"
HELP_MARKER = "<!-- jobbot:help -->"
# GitHub caps check-run output text at 65,535 characters; keep well inside.
MAX_OUTPUT = 60_000
_ICONS = {
    RunState.QUEUED: "⏳", RunState.RUNNING: "🏃", RunState.SUCCEEDED: "✅",
    RunState.FAILED: "❌", RunState.TIMED_OUT: "⌛", RunState.CANCELLED: "🚫",
    RunState.SKIPPED: "⏭️",
}
CONCLUSIONS = {
    RunState.SUCCEEDED: "success", RunState.FAILED: "failure", RunState.TIMED_OUT: "timed_out",
    RunState.CANCELLED: "cancelled", RunState.SKIPPED: "skipped",
}
HELP = """\
jobbot commands (one per comment, on the first line):

| command | what it does |
| --- | --- |
| `/run JOB [KEY=VALUE ...]` | run a job against this pull request's head commit |
| `/rerun` | rerun the failed runs of the head commit |
| `/rerun JOB` | rerun the latest run of JOB on this pull request |
| `/cancel [JOB]` | cancel this pull request's running runs (of JOB) |
| `/jobs` | what can run here, with each job's last state |
| `/ok-to-test` | (write access) allow runs for this head commit of a fork's pull request |
"""


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def runs_comment(runs: Sequence[Run], run_url: Callable[[str], str],
                 notes: Sequence[str] = ()) -> str:
    """The one jobbot comment of a pull request: its runs, newest first, with links."""
    lines = [RUNS_MARKER, "### jobbot runs", ""]
    if runs:
        lines += ["| run | state | commit | started by | logs |", "| --- | --- | --- | --- | --- |"]
        for run in runs:
            state = run.run_state
            reason = f" ({cell(run.reason)})" if run.reason and state.is_final else ""
            lines.append(
                f"| {cell(run.label)} | {_ICONS.get(state, '')} {state.value}{reason} "
                f"| `{(run.sha or '')[:7]}` | {cell(run.actor.removeprefix('github:'))} "
                f"| [logs]({run_url(run.id)}) |")
    else:
        lines.append("No runs yet.")
    for note in notes:
        # One-line notes (a command's answer) as quotes; longer ones (the /jobs table) as is.
        lines += ["", note if "\n" in note else f"> {note}"]
    return "\n".join(lines) + "\n"


def help_comment(unknown: str) -> str:
    return f"{HELP_MARKER}\njobbot does not know `/{cell(unknown)}`.\n\n{HELP}"


def jobs_comment(rows: Sequence[tuple[str, str, Run | None]]) -> str:
    """`/jobs`: (job, what it says it does, its last run) for each job that may run here."""
    lines = ["| job | description | last run |", "| --- | --- | --- |"]
    for name, description, last in rows:
        state = f"{last.label}: {last.state}" if last else "never run"
        lines.append(f"| `{cell(name)}` | {cell(description)} | {cell(state)} |")
    return "\n".join(lines) + "\n"


def check_name(run: Run) -> str:
    return f"jobbot: {run.job}"


def check_output(run: Run, log_tail: Sequence[str], masker: Masker) -> dict[str, Any]:
    """Title, summary and the (masked) tail of the log for a check run."""
    state = run.run_state
    title = f"{run.label} {state.value}"
    summary = f"{run.label} of app `{run.app}` is {state.value}"
    if run.reason:
        summary += f": {masker.mask(run.reason)}"
    text = masker.mask("\n".join(log_tail))
    if len(text) > MAX_OUTPUT:
        text = text[-MAX_OUTPUT:]
    output: dict[str, Any] = {"title": title[:255], "summary": summary[:60_000]}
    if text:
        output["text"] = f"```\n{text.replace('```', '` ` `')}\n```"
    return output


def config_error_output(errors: Sequence[str]) -> dict[str, Any]:
    listing = "\n".join(f"- `{cell(line)}`" for line in errors)
    return {"title": "app.yaml is invalid: nothing runs",
            "summary": f"{len(errors)} problem(s) in app.yaml:\n\n{listing}"[:60_000]}


def app_claimed_output(app: str, claimed_by: str) -> dict[str, Any]:
    return {"title": f"app {app} belongs to another repository: nothing runs",
            "summary": (f"This app.yaml defines the app `{cell(app)}`, which jobbot already "
                        f"serves from `{cell(claimed_by)}`. App names are unique per jobbot: "
                        f"rename the app here (`app:`), or remove it from {cell(claimed_by)}.")}
