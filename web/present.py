"""Pure helpers from runs to what pages show: state colours and icons, links back, durations."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from core.models import Run

# state -> (icon, word people read); the colour comes from the CSS class `s-<state>`.
STATES = {
    "queued": ("◷", "queued"),
    "waiting": ("⧖", "waiting"),
    "running": ("▶", "running"),
    "succeeded": ("✔", "succeeded"),
    "failed": ("✖", "failed"),
    "timed_out": ("⌛", "timed out"),
    "cancelled": ("⊘", "cancelled"),
    "skipped": ("↷", "skipped"),
    "needs_approval": ("✋", "waiting for approval"),
    "denied": ("⛔", "denied"),
    "expired": ("⌛", "expired"),
}


def icon(state: str) -> str:
    return STATES.get(state, ("?", state))[0]


def state_word(state: str) -> str:
    return STATES.get(state, ("?", state))[1]


def duration(seconds: float | None) -> str:
    """12s, 3m 04s, 2h 05m."""
    if seconds is None:
        return "\u2013"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "\u2013"


@dataclass(frozen=True)
class LinkBack:
    label: str
    url: str


def links_back(origin: dict[str, Any]) -> list[LinkBack]:
    """Links to where the run was triggered: the Slack thread or channel, the pull request."""
    found: list[LinkBack] = []
    for key, label in (("slack_permalink", "Slack thread"), ("slack_url", "Slack"),
                       ("pr_url", "pull request"), ("html_url", "on GitHub"),
                       ("check_run_url", "check run")):
        value = origin.get(key)
        if isinstance(value, str) and value.startswith(("https://", "http://")):
            found.append(LinkBack(label, value))
    channel = origin.get("slack_channel")
    if not any(link.label.startswith("Slack") for link in found) and isinstance(channel, str):
        query = {"channel": channel}
        found.append(LinkBack("Slack channel", "https://slack.com/app_redirect?"
                              + urlencode(query)))
    repo, number = origin.get("repo") or origin.get("repository"), (
        origin.get("pr") or origin.get("pull_request") or origin.get("pr_number"))
    if (not any(link.label == "pull request" for link in found) and isinstance(repo, str)
            and isinstance(number, int | str) and str(number).isdigit()):
        base = str(origin.get("github_url") or "https://github.com").rstrip("/")
        if base.startswith(("https://", "http://")):
            found.append(LinkBack(f"{repo}#{number}",
                                  f"{base}/{quote(repo)}/pull/{int(number)}"))
    return found


def success_rate(runs: Iterable[Run]) -> float | None:
    finished = [r for r in runs if r.state not in ("queued", "waiting", "running", "skipped",
                                                   "needs_approval")]
    if not finished:
        return None
    return sum(r.state == "succeeded" for r in finished) / len(finished)


def duration_chart(runs: list[Run], width: int = 120, height: int = 24) -> str:
    """A small inline SVG bar chart of recent run durations, oldest left (safe: numbers only)."""
    points = [(r.duration or 0.0, r.state) for r in reversed(runs) if r.started_at]
    if not points:
        return ""
    longest = max(d for d, _ in points) or 1.0
    bar = width / max(len(points), 1)
    rects = []
    for i, (seconds, state) in enumerate(points):
        h = max(1.0, seconds / longest * (height - 2))
        rects.append(f'<rect class="s-{state}" x="{i * bar:.1f}" y="{height - h:.1f}" '
                     f'width="{max(bar - 1, 1):.1f}" height="{h:.1f}">'
                     f"<title>{duration(seconds)}</title></rect>")
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="durations of recent runs">'
            + "".join(rects) + "</svg>")
