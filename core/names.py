"""Kubernetes-style names (DNS-1123) and "did you mean" suggestions."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_dns_label(name: str) -> bool:
    """True for a DNS-1123 label: lowercase alphanumerics and '-', at most 63 characters."""
    return len(name) <= 63 and bool(_LABEL.match(name))


def is_dns_subdomain(name: str) -> bool:
    """True for a DNS-1123 subdomain: dot-separated labels, at most 253 characters."""
    return 0 < len(name) <= 253 and all(is_dns_label(part) for part in name.split("."))


def closest(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate most like `name`, if any is close enough to be a likely typo."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return matches[0] if matches else None
