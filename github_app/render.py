"""Pure functions from runs to GitHub text: the PR status comment, help, check-run output.

Every string that is not jobbot's own (names, refs, reasons, logins, log lines, and the answers
to commands, which quote their input) goes through github_app.markdown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from core.masking import Masker
from core.models import Run, RunState
from github_app import markdown

RUNS_MARKER = "<!-- jobbot:runs -->"
HELP_MARKER = "<!-- jobbot:help -->"
# GitHub caps check-run output text at 65,535 characters; keep well inside.
MAX_OUTPUT = 60_000
_ICONS = {
    RunState.QUEUED: "⏳", RunState.WAITING: "🔒", RunState.RUNNING: "🏃", RunState.SUCCEEDED: "✅",
    RunState.FAILED: "❌", RunState.TIMED_OUT: "⌛", RunState.CANCELLED: "🚫",
    RunState.SKIPPED: "⏭️", RunState.NEEDS_APPROVAL: "✋", RunState.DENIED: "⛔",
    RunState.EXPIRED: "⌛",
}
CONCLUSIONS = {
    RunState.SUCCEEDED: "success", RunState.FAILED: "failure", RunState.TIMED_OUT: "timed_out",
    RunState.CANCELLED: "cancelled", RunState.SKIPPED: "skipped",
    # A person stopped it before it started; nobody decided in time.
    RunState.DENIED: "cancelled", RunState.EXPIRED: "timed_out",
}
HELP = """\
jobbot commands (one per comment, on the first line):

| command | what it does |
| --- | --- |
| `/run JOB [KEY=VALUE ...]` | run a job against this pull request's head commit |
| `/rerun` | rerun the failed runs of the head commit |
| `/rerun JOB` | rerun the latest run of JOB on this pull request |
| `/cancel [JOB]` | cancel this pull request's running runs (of JOB) |
| `/approve [JOB]` | approve the run of this pull request waiting for approval (of JOB, or RUN) |
| `/deny [JOB]` | deny it: the run ends `denied` |
| `/jobs` | what can run here, with each job's last state |
| `/ok-to-test [SHA]` | (write access) allow runs of a fork's head: the one you saw, or SHA |
"""


def runs_comment(runs: Sequence[Run], run_url: Callable[[str], str],
                 notes: Sequence[str] = ()) -> str:
    """The one jobbot comment of a pull request: its runs, newest first, with links."""
    lines = [RUNS_MARKER, "### jobbot runs", ""]
    if runs:
        lines += ["| run | state | commit | started by | logs |", "| --- | --- | --- | --- | --- |"]
        for run in runs:
            state = run.run_state
            reason = (f" ({markdown.text(run.reason)})" if run.reason and state.is_final
                      else "")
            lines.append(
                f"| {markdown.text(run.label)} | {_ICONS.get(state, '')} {state.value}{reason} "
                f"| {markdown.code((run.sha or '')[:7], table=True)} "
                f"| {markdown.text(run.actor.removeprefix('github:'))} "
                f"| [logs]({run_url(run.id)}) |")
    else:
        lines.append("No runs yet.")
    for note in notes:
        # A command's answer quotes what was asked: only its code spans (and the /jobs
        # table's cells) stay markup. One-line answers as quotes.
        lines += ["", markdown.sanitize_block(note) if "\n" in note
                  else f"> {markdown.sanitize(note)}"]
    return "\n".join(lines) + "\n"


def waiting_output(approved: Sequence[str], required: int) -> dict[str, str]:
    """A check run's output while its run waits for approval."""
    summary = f"waiting for approval: {len(approved)} of {required}"
    if approved:
        summary += " (approved by " + ", ".join(markdown.text(a) for a in approved) + ")"
    return {"title": "waiting for approval", "summary": summary}


def help_comment(unknown: str) -> str:
    return f"{HELP_MARKER}\njobbot does not know {markdown.code('/' + unknown)}.\n\n{HELP}"


def jobs_comment(rows: Sequence[tuple[str, str, Run | None]]) -> str:
    """`/jobs`: (job, what it says it does, its last run) for each job that may run here."""
    lines = ["| job | description | last run |", "| --- | --- | --- |"]
    for name, description, last in rows:
        state = f"{last.label}: {last.state}" if last else "never run"
        lines.append(f"| {markdown.code(name, table=True)} | {markdown.text(description)} "
                     f"| {markdown.text(state)} |")
    return "\n".join(lines) + "\n"


def check_name(run: Run) -> str:
    return f"jobbot: {run.job}"


def check_output(run: Run, log_tail: Sequence[str], masker: Masker) -> dict[str, Any]:
    """Title, summary and the (masked) tail of the log for a check run."""
    state = run.run_state
    title = f"{run.label} {state.value}"
    summary = (f"{markdown.text(run.label)} of app {markdown.code(run.app)} is "
               f"{state.value}")
    if run.reason:
        summary += f": {markdown.text(masker.mask(run.reason))}"
    text = masker.mask("\n".join(log_tail))
    room = MAX_OUTPUT - markdown.fence_length(text)
    if len(text) > room:
        text = text[-room:]
    # The title is plain text on GitHub (not Markdown).
    output: dict[str, Any] = {"title": title[:255], "summary": summary[:MAX_OUTPUT]}
    if text:
        output["text"] = markdown.fence(text)
    return output


def config_error_output(errors: Sequence[str]) -> dict[str, Any]:
    """The problems of an app.yaml, as many as fit (whole lines: a cut one could leave code
    unclosed)."""
    summary = f"{len(errors)} problem(s) in app.yaml:\n"
    for shown, line in enumerate(errors):
        item = f"\n- {markdown.code(line)}"
        if len(summary) + len(item) > MAX_OUTPUT - 100:
            summary += f"\n\n({len(errors) - shown} more not shown)"
            break
        summary += item
    return {"title": "app.yaml is invalid: nothing runs", "summary": summary}


def app_claimed_output(app: str, claimed_by: str) -> dict[str, Any]:
    return {"title": f"app {app} belongs to another repository: nothing runs",
            "summary": (f"This app.yaml defines the app {markdown.code(app)}, which jobbot "
                        f"already serves from {markdown.code(claimed_by)}. App names are unique "
                        f"per jobbot: rename the app here (`app:`), or remove it from "
                        f"{markdown.text(claimed_by)}.")}
