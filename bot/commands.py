"""Parse `/job ...` text into a Command: shell-like quoting (never a shell), precise errors."""

from __future__ import annotations

import html
import re
import shlex
from collections.abc import Collection
from dataclasses import dataclass, field

from core.errors import BadInput, NotFound
from core.masking import MASK, mask_mapping
from core.names import closest
from core.numbers import bounded_int, shown
from core.overrides import parse_overrides
from core.run_ids import is_run_id

DEFAULT_TAIL = 30
MAX_TAIL = 200
# ASCII digits only: str.isdigit() is true for "²", which int() refuses.
_TAIL = re.compile(r"[0-9]{1,4}")

# Usage line and one-sentence help per command, in the order `help` lists them.
USAGE: dict[str, tuple[str, str]] = {
    "run": ("run JOB [KEY=VALUE ...] [--ref REF] [--form]",
            "start a run of JOB with its parameters (--form: fill them in a form)"),
    "list": ("list", "the jobs, whether they are paused, and their last or active runs"),
    "status": ("status [JOB|RUN]", "active runs, a job's state, or one run (id or JOB#N)"),
    "logs": ("logs RUN [--tail N]", f"the last N lines of a run's log (default {DEFAULT_TAIL})"),
    "cancel": ("cancel RUN", "stop a queued or running run"),
    "rerun": ("rerun RUN", "run a run's job again, with the same ref and overrides"),
    "history": ("history JOB", "a job's recent runs"),
    "pause": ("pause JOB", "stop scheduling JOB (manual runs still work)"),
    "resume": ("resume JOB", "schedule JOB again"),
    "help": ("help [COMMAND]", "this list, or one command's usage"),
}
# Slack clients turn straight quotes into curly ones; people mean the straight ones.
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


@dataclass(frozen=True)
class Command:
    """One parsed command; fields not used by `name` stay empty."""

    name: str
    job: str | None = None
    run: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    ref: str | None = None
    tail: int = DEFAULT_TAIL
    topic: str | None = None
    # `run --form`: ask the job's parameters in a form.
    form: bool = False

    def describe(self, hidden: Collection[str] = ()) -> str:
        """The command as text for audit logs and confirmations, sensitive values and those
        of the `hidden` names (secret parameters) masked."""
        parts = [self.name]
        parts += [p for p in (self.job, self.run, self.topic) if p]
        shown = mask_mapping(self.overrides)
        shown.update((k, MASK) for k in shown if k in hidden)
        parts += [f"{k}={shlex.quote(v)}" for k, v in shown.items()]
        if self.ref:
            parts.append(f"--ref {shlex.quote(self.ref)}")
        return " ".join(parts)


def without_values(text: str) -> str:
    """`text` with the value of every KEY=VALUE masked: how a command that could not be parsed
    is recorded (it may hold a secret parameter's value, of a job it never got to name)."""
    try:
        words = split(text)
    except BadInput:
        # Quotes left open: nothing after the first `=` can be told apart safely.
        key, sep, _ = text.partition("=")
        return f"{key}={MASK}" if sep else text
    return " ".join(shlex.quote(f"{w.partition('=')[0]}={MASK}") if "=" in w
                    else shlex.quote(w) for w in words)


def split(text: str) -> list[str]:
    """Words of `text`, as a POSIX shell would split them (nothing is ever executed)."""
    cleaned = html.unescape(text.translate(_QUOTES)).strip()
    try:
        words = shlex.split(cleaned)
    except ValueError as exc:
        raise BadInput(f"could not read the command: {exc} (close your quotes)") from None
    if words and words[0].startswith("/"):  # `jobbot chat "/job run hello"`
        words = words[1:]
    return words


def parse(text: str) -> Command:
    """A Command from what followed `/job`; BadInput says what is wrong and what would work."""
    words = split(text)
    if not words:
        return Command("help")
    name, args = words[0].lower(), words[1:]
    if name not in USAGE:
        raise NotFound(f"no command {name!r}; see `/job help`", closest(name, list(USAGE)))
    if name == "run":
        return _run(args)
    if name == "logs":
        return _logs(args)
    if name == "list":
        _count(name, args, 0, 0)
        return Command(name)
    if name == "help":
        _count(name, args, 0, 1)
        topic = args[0].lower() if args else None
        if topic and topic not in USAGE:
            raise NotFound(f"no command {topic!r}", closest(topic, list(USAGE)))
        return Command(name, topic=topic)
    if name == "status":
        _count(name, args, 0, 1)
        if not args:
            return Command(name)
        return Command(name, run=args[0]) if looks_like_run(args[0]) else Command(name, job=args[0])
    if name in ("cancel", "rerun"):
        _count(name, args, 1, 1)
        return Command(name, run=args[0])
    _count(name, args, 1, 1)  # history, pause, resume
    return Command(name, job=args[0])


def looks_like_run(word: str) -> bool:
    return "#" in word or is_run_id(word)


def usage(name: str) -> str:
    return f"`/job {USAGE[name][0]}`"


def _count(name: str, args: list[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        raise BadInput(f"`{name}` takes {_how_many(low, high)}: {usage(name)}")


def _how_many(low: int, high: int) -> str:
    if high == 0:
        return "no arguments"
    if low == high:
        return "one argument"
    return "at most one argument"


def _run(args: list[str]) -> Command:
    job: str | None = None
    ref: str | None = None
    form = False
    items: list[str] = []
    rest = iter(args)
    for word in rest:
        if word == "--ref" or word.startswith("--ref="):
            value = word.partition("=")[2] if "=" in word else next(rest, None)
            if not value:
                raise BadInput(f"--ref needs a value: {usage('run')}")
            ref = value
        elif word == "--form":
            form = True
        elif word.startswith("--"):
            raise BadInput(f"unknown option {word!r}: {usage('run')}")
        elif job is None:
            job = word
        else:
            items.append(word)
    if job is None:
        raise BadInput(f"which job? {usage('run')} (`/job list` shows them)")
    return Command("run", job=job, overrides=parse_overrides(items), ref=ref, form=form)


def _logs(args: list[str]) -> Command:
    run: str | None = None
    tail = DEFAULT_TAIL
    rest = iter(args)
    for word in rest:
        if word in ("--tail", "-n") or word.startswith("--tail="):
            value = word.partition("=")[2] if "=" in word else next(rest, None)
            try:
                tail = bounded_int(value, 1, MAX_TAIL, name="--tail")
            except BadInput:
                raise BadInput(f"--tail takes a number from 1 to {MAX_TAIL}, not "
                               f"{shown(value)}: {usage('logs')}") from None
        elif word.startswith("-"):
            raise BadInput(f"unknown option {word!r}: {usage('logs')}")
        elif run is None:
            run = word
        else:
            raise BadInput(f"`logs` takes one run: {usage('logs')}")
    if run is None:
        raise BadInput(f"which run? {usage('logs')} (a run id or JOB#NUMBER)")
    return Command("logs", run=run, tail=tail)
