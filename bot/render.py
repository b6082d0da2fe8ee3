"""Pure functions from runs and jobs to Slack messages (Block Kit), kept within Slack's limits.

Every string that is not jobbot's own (refs, names, reasons, descriptions, log lines, errors)
goes through bot.mrkdwn before it is put into a message, so it shows as typed and is never
live markup; limits are applied after that escaping."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot import mrkdwn
from core.durations import format_duration
from core.links import Links
from core.locks import line_text
from core.models import Attempt, Run
from core.service import ApprovalResult, JobSummary
from core.spec import ParameterSpec
from core.store import LinePlace

# Slack's limits: blocks per message, characters per section text, per button value.
MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_BUTTON_VALUE = 2000
MAX_FALLBACK = 3000
ELLIPSIS = "…"

Block = dict[str, Any]
_SLACK_ID = re.compile(r"[UW][A-Z0-9]{2,20}")

CANCEL_ACTION = "jobbot_cancel"
RERUN_ACTION = "jobbot_rerun"
CONFIRM_ACTION = "jobbot_confirm"
DECLINE_ACTION = "jobbot_decline"
RERUN_FORM_ACTION = "jobbot_rerun_form"
APPROVE_ACTION = "jobbot_approve"
DENY_ACTION = "jobbot_deny"
FORM_CALLBACK = "jobbot_run_form"
# Block and action ids of a form's fields: the prefix, then the parameter's name.
FIELD_BLOCK = "param:"
FIELD_ACTION = "jobbot_param:"
MAX_FORM_BLOCKS = 100
MAX_METADATA = 3000

STATE_EMOJI = {
    "queued": ":hourglass_flowing_sand:", "waiting": ":lock:", "running": ":arrow_forward:",
    "succeeded": ":white_check_mark:", "failed": ":x:", "timed_out": ":alarm_clock:",
    "cancelled": ":black_square_for_stop:", "skipped": ":fast_forward:",
    "needs_approval": ":raised_hand:", "denied": ":no_entry:", "expired": ":hourglass:",
}


@dataclass(frozen=True)
class Reply:
    """What a command answers: text (also the terminal's rendering) and optional blocks."""

    text: str
    blocks: list[Block] = field(default_factory=list)
    ok: bool = True
    # The run this command started (new, not found again through its idempotency key).
    started_run: str | None = None
    # A form to open (Slack modal) instead of answering; `text` says what it asks for.
    form: Form | None = None


@dataclass(frozen=True)
class Form:
    """The parameters form of a job: its fields filled in with `values`; on a rerun,
    `kept` names the parameters (secret, or secret-looking) that keep their value when left
    empty: their values are not shown back."""

    job: str
    parameters: tuple[ParameterSpec, ...]
    values: dict[str, str] = field(default_factory=dict)
    ref: str | None = None
    rerun_of: str | None = None
    rerun_label: str | None = None
    kept: tuple[str, ...] = ()
    channel: str | None = None


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to `limit` characters, marked as cut (never in the middle of an entity)."""
    return text if len(text) <= limit else mrkdwn.cut_end(text, limit - 1) + ELLIPSIS


def clip_start(text: str, limit: int) -> str:
    """`text` with its beginning cut away (for log tails, where the end matters)."""
    if len(text) <= limit:
        return text
    return ELLIPSIS + mrkdwn.cut_start(text, len(text) - (limit - 1))


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}}


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text)}]}


def button(text: str, *, action_id: str | None = None, value: str | None = None,
           url: str | None = None, style: str | None = None) -> Block:
    element: Block = {"type": "button", "text": {"type": "plain_text", "text": clip(text, 75)}}
    if action_id:
        element["action_id"] = action_id
    if value is not None:
        element["value"] = clip(value, MAX_BUTTON_VALUE)
    if url:
        element["url"] = url
    if style:
        element["style"] = style
    return element


def blocks_within_limits(blocks: Sequence[Block]) -> list[Block]:
    """At most 50 blocks; the last one says how many were left out."""
    if len(blocks) <= MAX_BLOCKS:
        return list(blocks)
    kept = list(blocks[: MAX_BLOCKS - 1])
    kept.append(context(f"{len(blocks) - len(kept)} more not shown"))
    return kept


def reply(text: str, blocks: Sequence[Block] = (), *, ok: bool = True,
          started_run: str | None = None) -> Reply:
    return Reply(clip(text, MAX_FALLBACK), blocks_within_limits(blocks), ok, started_run)


def error(text: str) -> Reply:
    """An answer saying what went wrong; `text` (which may quote the asker's input) is escaped,
    keeping only the user, group and channel references of refusals."""
    shown = mrkdwn.escape_keeping_references(text)
    return reply(f":warning: {shown}", [section(f":warning: {shown}")], ok=False)


def plain(text: str) -> Reply:
    """An answer of one section whose `text` is not jobbot's own markup."""
    shown = mrkdwn.escape(text)
    return reply(shown, [section(shown)])


def who(run: Run) -> str:
    """Who or what started a run, as Slack shows it."""
    kind, _, name = run.actor.partition(":")
    if kind == "slack" and _SLACK_ID.fullmatch(name):
        return f"<@{name}>"
    if kind == "cli" and name:
        return f"{mrkdwn.escape(name)} (CLI)"
    if kind == "github" and name:
        return f"{mrkdwn.escape(name)} on GitHub"
    if run.source == "schedule":
        return "the schedule"
    return mrkdwn.escape(run.actor)


def state_text(run: Run) -> str:
    text = f"{STATE_EMOJI.get(run.state, '')} {run.state}".strip()
    if run.cancel_requested_by and not run.run_state.is_final:
        text += f" (cancel requested by {mrkdwn.escape(run.cancel_requested_by)})"
    return text


def where(run: Run) -> str:
    parts = []
    if run.ref:
        parts.append(mrkdwn.code(run.ref))
    if run.sha:
        parts.append(mrkdwn.code(run.sha[:12]))
    return " @ ".join(parts) if parts else "-"


def run_title(run: Run) -> str:
    return mrkdwn.escape(f"{run.app}/{run.job} #{run.number}")


@dataclass(frozen=True)
class Approvals:
    """Who approved a run so far (actor ids and names), out of how many it needs."""

    approved: tuple[tuple[str, str], ...]
    required: int


def person(actor_id: str, name: str) -> str:
    """Someone who acted (approved, denied), as Slack shows them."""
    kind, _, rest = actor_id.partition(":")
    if kind == "slack" and _SLACK_ID.fullmatch(rest):
        return f"<@{rest}>"
    if kind == "github" and rest:
        return f"{mrkdwn.escape(rest)} on GitHub"
    return mrkdwn.escape(name or actor_id)


def approval_line(approvals: Approvals) -> str:
    """'1 of 2 approvals: @alice'."""
    count = len(approvals.approved)
    text = f"{count} of {approvals.required} approval{'' if approvals.required == 1 else 's'}"
    if approvals.approved:
        text += ": " + ", ".join(person(who, name) for who, name in approvals.approved)
    return text


def waiting_text(place: LinePlace) -> str:
    """Where a waiting run is in its lock's line, and behind what (Slack markup)."""
    return line_text(place, name=mrkdwn.escape, person=who,
                     label=lambda run: mrkdwn.escape(run.label))


def run_parent(run: Run, links: Links, *, changes: bool = False,
               approvals: Approvals | None = None,
               line: LinePlace | None = None) -> tuple[str, list[Block]]:
    """The parent message of a run's thread: what, who, where, state, and buttons (with
    `changes`, for a job with parameters, Rerun with changes too; while the run waits for
    approval, Approve and Deny, and who approved so far); for a run waiting for its lock,
    its place in the line (`line`)."""
    url = links.run_url(run.id)
    title = f"*<{url}|{run_title(run)}>*  {state_text(run)}"
    fields = [
        f"*Triggered by*\n{who(run)}",
        f"*Ref*\n{where(run)}",
        f"*State*\n{state_text(run)}",
        f"*Duration*\n{format_duration(run.duration) if run.duration is not None else '-'}",
    ]
    blocks: list[Block] = [
        section(title),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(f, 2000)} for f in fields]},
    ]
    if run.reason and run.state != "succeeded":
        blocks.append(context(clip(f"reason: {mrkdwn.escape(run.reason)}", 2000)))
    waiting = run.state == "needs_approval"
    if approvals is not None and (waiting or approvals.approved):
        so_far = approval_line(approvals)
        blocks.append(section(f":raised_hand: waiting for approval: {so_far}") if waiting
                      else context(f"approved: {so_far}"))
    in_line = f":lock: {waiting_text(line)}" if line is not None else None
    if in_line:
        blocks.append(context(clip(in_line, 2000)))
    actions = [button("View logs", action_id="jobbot_view_logs", url=url)]
    if waiting:
        actions.append(button("Approve", action_id=APPROVE_ACTION, value=run.id,
                              style="primary"))
        actions.append(button("Deny", action_id=DENY_ACTION, value=run.id, style="danger"))
    elif run.run_state.is_final:
        actions.append(button("Rerun", action_id=RERUN_ACTION, value=run.id))
        if changes:
            actions.append(button("Rerun with changes", action_id=RERUN_FORM_ACTION,
                                  value=run.id))
    else:
        actions.append(button("Cancel", action_id=CANCEL_ACTION, value=run.id, style="danger"))
    blocks.append({"type": "actions", "elements": actions})
    fallback = f"{run_title(run)} {run.state} (triggered by {who(run)})"
    if in_line:
        fallback += f"\n{in_line}"
    return fallback, blocks_within_limits(blocks)


def retry_reply(run: Run, attempt: int, previous: Attempt | None) -> tuple[str, list[Block]]:
    why = ""
    if previous is not None:
        why = f": attempt {previous.index} ended {mrkdwn.escape(previous.state)}"
        if previous.exit_code is not None:
            why += f" (exit code {previous.exit_code})"
    text = f":repeat: {run_title(run)}: attempt {attempt} started{why}"
    return text, [section(text)]


def end_reply(run: Run, log_tail: Sequence[str]) -> tuple[str, list[Block]]:
    """The thread's last reply: the outcome, the duration, and the log's end on failure."""
    duration = format_duration(run.duration) if run.duration is not None else "-"
    text = f"{STATE_EMOJI.get(run.state, '')} {run_title(run)} {run.state} after {duration}"
    if run.exit_code not in (None, 0):
        text += f" (exit code {run.exit_code})"
    if run.reason and run.state != "succeeded":
        text += f": {mrkdwn.escape(run.reason)}"
    blocks = [section(text)]
    if log_tail:
        blocks.append(section(code_block(log_tail, title="Last lines of the log:")))
    return clip(text, MAX_FALLBACK), blocks


def code_block(lines: Iterable[str], *, title: str = "") -> str:
    """Lines (not jobbot's: escaped, no way out) in a code block that fits one section after
    escaping; the beginning goes first if too long. `title` is jobbot's own markup."""
    head = f"{title}\n" if title else ""
    room = MAX_TEXT - len(head) - len(mrkdwn.code_block(""))
    body = clip_start(mrkdwn.in_code("\n".join(lines)), room)
    return f"{head}```\n{body}\n```" if body else f"{head}(no output)"


def started(run: Run, created: bool, links: Links, others: Sequence[str] = (), *,
            joined: bool = False, line: LinePlace | None = None) -> Reply:
    url = links.run_url(run.id)
    if joined:
        lock = mrkdwn.escape(run.lock or "its lock")
        text = (f":link: joined <{url}|{mrkdwn.escape(run.label)}>, waiting for {lock}: "
                "the same request is already in line")
        if line is not None:
            text += f"\n:lock: {waiting_text(line)}"
        return reply(text, [section(text)])
    if created and run.state == "needs_approval":
        text = (f":raised_hand: <{url}|{run_title(run)}> waits for approval before it starts "
                f"(id {mrkdwn.code(run.id)})")
    elif created:
        text = f":rocket: started <{url}|{run_title(run)}> (id {mrkdwn.code(run.id)})"
        if line is not None:
            text = (f":lock: queued <{url}|{run_title(run)}> (id {mrkdwn.code(run.id)}): "
                    f"{waiting_text(line)}")
    else:
        text = f"already started: <{url}|{run_title(run)}> is {mrkdwn.escape(run.state)}"
    if others:
        text += (f"\nnote: other runs of {mrkdwn.escape(run.job)} are active: "
                 f"{mrkdwn.escape(', '.join(others))}")
    return reply(text, [section(text)], started_run=run.id if created else None)


def decided(result: ApprovalResult, links: Links) -> Reply:
    """The answer to an Approve or Deny click (or command): what the decision did."""
    run = result.run
    title = f"<{links.run_url(run.id)}|{run_title(run)}>"
    count = f"{len(result.approved)} of {result.required}"
    if result.outcome == "denied":
        text = f":no_entry: you denied {title}: it will not run"
    elif result.outcome == "released":
        text = f":white_check_mark: you approved {title} ({count}): it is {run.state} now"
    else:
        text = f":ballot_box_with_check: you approved {title} ({count}): waiting for more"
    return reply(text, [section(text)])


def job_list(jobs: Sequence[JobSummary]) -> Reply:
    if not jobs:
        return reply("no jobs defined", [section("no jobs defined")])
    lines = [job_line(job) for job in jobs]
    blocks = [section(chunk) for chunk in chunks(lines)]
    return reply("\n".join(lines), [section(f"*{len(jobs)} jobs*"), *blocks])


def job_line(job: JobSummary) -> str:
    parts = [f"*{mrkdwn.escape(job.app)}/{mrkdwn.escape(job.name)}*"]
    if job.description:
        parts.append(mrkdwn.escape(job.description))
    if job.schedule:
        parts.append(f"{mrkdwn.code(' | '.join(job.schedule))} {mrkdwn.escape(job.timezone)}")
    if job.paused:
        parts.append(f":double_vertical_bar: paused by {mrkdwn.escape(job.paused_by or 'someone')}")
    if job.active:
        parts.append(", ".join(f"#{r.number} {r.state}" for r in job.active))
    elif job.last_run is not None:
        parts.append(f"last #{job.last_run.number} {job.last_run.state}")
    return " · ".join(parts)


def chunks(lines: Sequence[str], limit: int = MAX_TEXT) -> list[str]:
    """Lines joined into texts of at most `limit` characters each (a line too long is cut)."""
    out: list[str] = []
    current = ""
    for line in lines:
        line = clip(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            out.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


def run_line(run: Run, links: Links) -> str:
    duration = format_duration(run.duration) if run.duration is not None else "-"
    return (f"<{links.run_url(run.id)}|#{run.number}> {state_text(run)} · {who(run)} · "
            f"{duration}" + (f" · {clip(mrkdwn.escape(run.reason), 200)}" if run.reason else ""))


def run_list(title: str, runs: Sequence[Run], links: Links) -> Reply:
    title = mrkdwn.escape(title)
    if not runs:
        return reply(f"{title}: no runs yet", [section(f"*{title}*: no runs yet")])
    lines = [f"{mrkdwn.escape(run.job)} {run_line(run, links)}" for run in runs]
    return reply(f"{title}\n" + "\n".join(lines),
                 [section(f"*{title}*"), *(section(c) for c in chunks(lines))])


def run_status(run: Run, attempts: Sequence[Attempt], links: Links,
               line: LinePlace | None = None) -> Reply:
    text, blocks = run_parent(run, links, line=line)
    lines = [f"attempt {a.index}: {mrkdwn.escape(a.state)}" + (f" (exit code {a.exit_code})"
                                                  if a.exit_code is not None else "")
             for a in attempts]
    if lines:
        blocks = [*blocks[:-1], *(section(c) for c in chunks(lines)), blocks[-1]]
    return reply("\n".join([text, *lines]), blocks)


def job_status(job: JobSummary, links: Links) -> Reply:
    lines = [job_line(job)]
    if job.last_run is not None:
        lines.append("last run: " + run_line(job.last_run, links))
    text = "\n".join(lines)
    return reply(text, [section(text)])


def log_tail(run: Run, lines: Sequence[str]) -> Reply:
    title = f"Last {len(lines)} lines of {run_title(run)} ({run.state}):"
    text = code_block(lines, title=title)
    return reply(text, [section(text)])


def confirmation(job: str, summary: str, pending_id: str, minutes: int) -> Reply:
    text = (f":question: *{mrkdwn.escape(job)}* asks for confirmation: run {mrkdwn.code(summary)}? "
            f"(this question expires in {minutes} minutes)")
    blocks = [section(text), {"type": "actions", "elements": [
        button("Run", action_id=CONFIRM_ACTION, value=pending_id, style="primary"),
        button("Cancel", action_id=DECLINE_ACTION, value=pending_id),
    ]}]
    return reply(text, blocks)


def form_reply(form: Form, missing: Sequence[str] = ()) -> Reply:
    """What a command that opens a form answers where no form can be shown (the terminal)."""
    job = mrkdwn.escape(form.job)
    if missing:
        text = (f"{job} needs {', '.join(missing)}: give them as KEY=VALUE, or fill in the "
                "form")
    else:
        text = f"the parameters of {job} are asked in a form"
    return Reply(clip(text, MAX_FALLBACK), [section(text)], form=form)


def form_view(form: Form, metadata: dict[str, Any]) -> Block:
    """The Slack modal of `form`; `metadata` (what the submission needs: job, ref, where to
    answer) travels in private_metadata, which Slack hands back unchanged."""
    title = "Rerun" if form.rerun_of else "Run"
    intro = (f"Rerun {mrkdwn.escape(form.rerun_label or form.job)} with these values"
             if form.rerun_of else f"Run *{mrkdwn.escape(form.job)}* with these values")
    if form.ref:
        intro += f" at {mrkdwn.code(form.ref)}"
    blocks: list[Block] = [section(intro)]
    blocks += [_field(p, form.values.get(p.name), p.name in form.kept)
               for p in form.parameters][: MAX_FORM_BLOCKS - 1]
    return {
        "type": "modal", "callback_id": FORM_CALLBACK,
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": title},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps(metadata, separators=(",", ":"))[:MAX_METADATA],
        "blocks": blocks,
    }


def _field(parameter: ParameterSpec, value: str | None, kept: bool) -> Block:
    action = FIELD_ACTION + parameter.name
    element: Block
    if parameter.type in ("choice", "bool"):
        choices = parameter.choices if parameter.type == "choice" else ("true", "false")
        options = [_option(c) for c in choices][:100]
        element = {"type": "static_select", "action_id": action, "options": options}
        if value in choices:
            element["initial_option"] = _option(value)
    elif parameter.type == "int":
        element = {"type": "number_input", "action_id": action, "is_decimal_allowed": False}
        if value is not None:
            element["initial_value"] = value
    else:
        element = {"type": "plain_text_input", "action_id": action}
        # A secret value is never shown back, not even to the person who gave it.
        if value is not None and not parameter.secret:
            element["initial_value"] = clip(value, MAX_TEXT)
    hints = [parameter.description] if parameter.description else []
    if parameter.secret:
        hints.append("secret: never shown" + ("; leave empty to keep the value of the run"
                                              if kept else ""))
    elif kept:  # a secret-looking value, not shown back
        hints.append("leave empty to keep the value of the run")
    elif parameter.type == "string" and parameter.pattern:
        hints.append(f"matches {parameter.pattern}")
    block: Block = {
        "type": "input", "block_id": FIELD_BLOCK + parameter.name,
        "label": {"type": "plain_text", "text": clip(parameter.name, 2000)},
        "element": element,
        "optional": not parameter.required or parameter.default is not None or kept,
    }
    if hints:
        block["hint"] = {"type": "plain_text", "text": clip("; ".join(hints), 2000)}
    return block


def _option(text: str) -> Block:
    return {"text": {"type": "plain_text", "text": clip(text, 75)}, "value": text[:150]}


def form_values(state: dict[str, Any]) -> dict[str, str]:
    """The values a form's submission holds, by parameter name (empty fields left out)."""
    values: dict[str, str] = {}
    for block_id, actions in state.items():
        if not (isinstance(block_id, str) and block_id.startswith(FIELD_BLOCK)
                and isinstance(actions, dict)):
            continue
        for element in actions.values():
            if not isinstance(element, dict):
                continue
            option = element.get("selected_option")
            value = option.get("value") if isinstance(option, dict) else element.get("value")
            if isinstance(value, str) and value != "":
                values[block_id[len(FIELD_BLOCK):]] = value
    return values


def form_errors(errors: dict[str, str], names: Sequence[str]) -> dict[str, str]:
    """Slack's `errors` of a view_submission answer: each message on its parameter's field
    (one that is not a field goes on the first), at most 2000 characters each."""
    shown: dict[str, str] = {}
    for name, message in errors.items():
        block = FIELD_BLOCK + (name if name in names else names[0])
        text = message if name in names or not name else f"{name}: {message}"
        shown[block] = clip(f"{shown[block]}; {text}" if block in shown else text, 2000)
    return shown
