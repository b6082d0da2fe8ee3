"""Pull-request comment commands: `/run JOB [KEY=VALUE ...]`, `/rerun [JOB]`, `/cancel [JOB]`,
`/approve [JOB|RUN]`, `/deny [JOB|RUN]`, `/jobs`, `/ok-to-test [SHA]`; parsed from the
comment's first line outside code blocks and quotes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.errors import BadInput
from core.overrides import parse_overrides

KNOWN = ("run", "rerun", "cancel", "approve", "deny", "jobs", "ok-to-test")
# Commands with an optional argument, and what it is.
_ONE_ARGUMENT = {"rerun": "job name", "cancel": "job name", "ok-to-test": "commit sha",
                 "approve": "job name or run", "deny": "job name or run"}
_FENCE = re.compile(r"^\s*(```|~~~)")
_COMMAND = re.compile(r"^/(?P<name>[A-Za-z][A-Za-z0-9_-]*)(?:\s+(?P<rest>.*))?$")


@dataclass(frozen=True)
class Command:
    """One command; `problem` is set when it is malformed (the reply says what is wrong)."""

    name: str
    args: tuple[str, ...] = ()
    overrides: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    @property
    def known(self) -> bool:
        return self.name in KNOWN

    @property
    def job(self) -> str | None:
        return self.args[0] if self.args else None


def visible_lines(body: str) -> list[str]:
    """The comment's lines, without fenced code blocks, indented code and quoted text."""
    lines: list[str] = []
    fenced = False
    for line in body.replace("\r\n", "\n").split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced or line.startswith(("    ", "\t")) or line.lstrip().startswith(">"):
            continue
        lines.append(line.strip())
    return lines


def parse(body: str) -> Command | None:
    """The command on the comment's first non-empty visible line, or None if it has none."""
    first = next((line for line in visible_lines(body) if line), "")
    match = _COMMAND.match(first)
    if match is None:
        return None
    name = match["name"].lower()
    words = (match["rest"] or "").split()
    if name not in KNOWN:
        return Command(name, tuple(words))
    if name == "run":
        return _run(words)
    if name in _ONE_ARGUMENT:
        if len(words) > 1:
            return Command(name, tuple(words),
                           problem=f"`/{name}` takes at most one {_ONE_ARGUMENT[name]}")
        return Command(name, tuple(words))
    if words:
        return Command(name, tuple(words), problem=f"`/{name}` takes no arguments")
    return Command(name)


def _run(words: list[str]) -> Command:
    if not words:
        return Command("run", problem="say which job: `/run JOB [KEY=VALUE ...]`")
    job, *rest = words
    try:
        # The same syntax as Slack and the CLI; the job's rule is the service's to apply.
        overrides = parse_overrides(rest)
    except BadInput as exc:
        return Command("run", (job,), problem=str(exc))
    return Command("run", (job,), overrides)
