"""KEY=VALUE overrides of a run (CLI, Slack, PR comments, reruns): their syntax, and the one
rule for which names a run of a job may set."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

from core.envnames import RESERVED_PREFIX, forbidden, is_env_name
from core.errors import BadInput
from core.parameters import Parameters, check_parameters
from core.spec import JobSpec

MAX_VALUE = 4096
# Longest name quoted back in a message: an invalid name may be anything a person pasted.
_SHOWN_NAME = 60
# C0, DEL and C1 controls, line and paragraph separators, and lone surrogates (which no
# encoder takes): they would break logs, messages and the environment itself.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_CHARACTER_NAMES = {"\0": "a NUL character", "\n": "a newline", "\r": "a carriage return",
                    "\t": "a tab"}


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """Turn ["A=1", "B=two words"] into a dict; BadInput names the first bad item."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise BadInput(f"bad override {_shown(item)}: use KEY=VALUE")
        check_override(key, value)
        result[key] = value
    return result


def check_override(key: str, value: str) -> None:
    """The syntax of one override, whatever the job: a whole variable name, and a value of at
    most MAX_VALUE characters of one line of text."""
    if not is_env_name(key):
        raise BadInput(f"bad override {_shown(key)}: names are letters, digits and _, not "
                       "starting with a digit")
    if len(value) > MAX_VALUE:
        raise BadInput(f"bad override {key}: the value is longer than {MAX_VALUE} characters")
    bad = _CONTROL.search(value)
    if bad is not None:
        char = bad.group()
        what = _CHARACTER_NAMES.get(char, f"U+{ord(char):04X}, a control or invalid character")
        raise BadInput(f"bad override {key}: the value contains {what}; values are one line "
                       "of text")


def settable_names(job: JobSpec) -> tuple[str, ...]:
    """The names a run of `job` may set, sorted: the keys of its `env` and its parameters,
    without the names no run may ever set. (The one place to add more kinds.)"""
    names = {*job.env, *(p.name for p in job.parameters)}
    return tuple(sorted(name for name in names if forbidden(name) is None))


def check_overrides(job: JobSpec, overrides: Mapping[str, str],
                    secret_keys: Collection[str] = ()) -> dict[str, str]:
    """The overrides, if a run of `job` may have them all; else BadInput naming the first one
    refused, why, and the names the job accepts.

    A run may set only names the job declares, never one of jobbot's JOBBOT_ names or a name
    that changes how programs are loaded or started, and never a key of the job's secrets
    (`secret_keys`, when the executor knows them): such names would let anyone allowed to
    run the job run their own code with its secrets, or send them elsewhere.
    """
    declared = settable_names(job)
    accepted = [name for name in declared if name not in secret_keys]
    where = "in its env or parameters" if job.parameters else "in its env"
    for key, value in overrides.items():
        check_override(key, value)
        reason = forbidden(key)
        if reason is not None:
            why = f"{key} {reason}: no run may set it"
        elif key in secret_keys:
            why = f"{key} comes from the secrets of {job.name}: no run may set it"
        elif key not in declared:
            why = f"{job.name} does not declare {key} {where}"
        else:
            continue
        if accepted:
            raise BadInput(f"{why}; a run of {job.name} may set only {', '.join(accepted)}")
        raise BadInput(f"{why}; a run of {job.name} may set no variables (it declares none "
                       f"{where})")
    return dict(overrides)


def check_values(job: JobSpec, given: Mapping[str, str],
                 secret_keys: Collection[str] = ()) -> Parameters:
    """What a run of `job` gets from `given`: the names rule first (check_overrides), then
    the job's parameters (core.parameters.check_parameters: types, required, defaults). A
    parameter with a default never sets a key of the job's secrets either."""
    check_overrides(job, given, secret_keys)
    checked = check_parameters(job, given)
    defaulted = {k: v for k, v in checked.env().items() if k not in given}
    if defaulted:
        check_overrides(job, defaulted, secret_keys)
    return checked


def run_environment(job: JobSpec, env: Mapping[str, str]) -> dict[str, str]:
    """What an executor passes on of `env` (the job's env and the run's overrides): only names
    the job declares, and none of jobbot's JOBBOT_ names, which the executor sets itself.
    BadInput for an undeclared name: a run never adds one, whatever let it through."""
    declared = set(job.env).union(settable_names(job))
    extra = sorted(key for key in env if key not in declared)
    if extra:
        raise BadInput(f"{job.name} does not declare {', '.join(extra)} in its env: a run sets "
                       "only names its job declares")
    return {k: v for k, v in env.items() if not k.upper().startswith(RESERVED_PREFIX)}


def _shown(text: str) -> str:
    if len(text) <= _SHOWN_NAME:
        return repr(text)
    return repr(text[:_SHOWN_NAME]) + "..."
