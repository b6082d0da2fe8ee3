"""A job's parameters: the one validator every front end uses (typed conversion, required,
pattern, choices, defaults), and the checked values a run carries."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import BadInput
from core.masking import MASK
from core.names import closest

if TYPE_CHECKING:
    from core.spec import JobSpec, ParameterSpec

_INT = re.compile(r"[+-]?[0-9]{1,18}")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
# Longest value quoted back in a message.
_SHOWN = 60


class ParameterErrors(BadInput):
    """Values a run of a job may not have: one message per parameter, by name."""

    def __init__(self, job: str, errors: Mapping[str, str]) -> None:
        self.job = job
        self.errors = dict(errors)
        listed = "; ".join(f"{name}: {message}" for name, message in self.errors.items())
        super().__init__(f"bad parameters for {job}: {listed}")


@dataclass(frozen=True)
class Parameters:
    """A run's checked values by env var name: `values` are shown like any env override,
    `secrets` (values of `secret: true` parameters) never are. Neither holds a name the job
    does not declare."""

    values: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    def env(self) -> dict[str, str]:
        """Every value, as the job's environment gets them."""
        return {**self.values, **self.secrets}

    def shown(self) -> dict[str, str]:
        """Every name, secret values masked: what a person may see."""
        return {**self.values, **dict.fromkeys(self.secrets, MASK)}


def secret_names(job: JobSpec) -> frozenset[str]:
    """The names of the job's `secret: true` parameters."""
    return frozenset(p.name for p in job.parameters if p.secret)


def convert(parameter: ParameterSpec, value: str) -> str:
    """`value` as the job gets it (an int without sign or zeros it need not have, a bool as
    true or false); ValueError says why it does not fit, never quoting a secret value."""
    shown = "the value" if parameter.secret else _quoted(value)
    if parameter.type == "int":
        if not _INT.fullmatch(value.strip()):
            raise ValueError(f"{shown} is not a whole number")
        return str(int(value.strip()))
    if parameter.type == "bool":
        word = value.strip().lower()
        if word in _TRUE:
            return "true"
        if word in _FALSE:
            return "false"
        raise ValueError(f"{shown} is not true or false")
    if parameter.type == "choice":
        if value not in parameter.choices:
            hint = "" if parameter.secret else closest(value, list(parameter.choices))
            message = f"{shown} is not one of {', '.join(parameter.choices)}"
            raise ValueError(message + (f" (did you mean {hint}?)" if hint else ""))
        return value
    if parameter.pattern is not None and re.fullmatch(parameter.pattern, value) is None:
        raise ValueError(f"{shown} does not match the pattern {parameter.pattern}")
    return value


def check_parameters(job: JobSpec, given: Mapping[str, str]) -> Parameters:
    """The values a run of `job` gets from `given` (its parameters converted, defaults added;
    other names, the job's env keys, passed on as given); ParameterErrors lists every
    parameter that is missing or does not fit. The names rule is core.overrides'."""
    values = {k: v for k, v in given.items()}
    secrets: dict[str, str] = {}
    errors: dict[str, str] = {}
    for parameter in job.parameters:
        name = parameter.name
        raw = values.pop(name, None)
        if raw is None:
            raw = parameter.default
        if raw is None:
            if parameter.required:
                errors[name] = "is required" + (
                    f" ({parameter.description})" if parameter.description else "")
            continue
        try:
            value = convert(parameter, raw)
        except ValueError as exc:
            errors[name] = str(exc)
            continue
        (secrets if parameter.secret else values)[name] = value
    if errors:
        raise ParameterErrors(job.name, errors)
    ordered = {k: values[k] for k in given if k in values}
    ordered.update(values)
    return Parameters(ordered, secrets)


def _quoted(value: str) -> str:
    return repr(value) if len(value) <= _SHOWN else repr(value[:_SHOWN]) + "..."
