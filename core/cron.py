"""Cron fire times on croniter with classic cron (Vixie/cronie) daylight-saving rules."""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

# Aliases mean what they mean in classic cron. croniter turns them into hashed (`H`)
# expressions when given a hash_id, which would move `@daily` away from midnight.
ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_HOUR = timedelta(hours=1)
_SECOND = timedelta(seconds=1)
# How far around an instant a daylight-saving change makes the simple computation unsafe.
_NEAR = timedelta(hours=3)


def expand(expression: str) -> str:
    text = " ".join(expression.split())
    return ALIASES.get(text.lower(), text)


def follows_elapsed_time(expression: str) -> bool:
    """True when the hour field has `*` or a step: such a schedule follows real time.

    As in Vixie cron: `0 * * * *` runs every real hour across a change (twice at the
    repeated wall hour in autumn, never at the skipped one in spring), while `30 2 * * *`
    is a fixed time and runs exactly once on a change day.
    """
    hour = expand(expression).split()[1]
    return "*" in hour or "/" in hour


class Zone:
    """A time zone with its offset changes found once per year (zoneinfo does not list them)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.info = ZoneInfo(name)
        self._years: dict[int, list[datetime]] = {}

    def _offset(self, at: datetime) -> timedelta:
        offset = at.astimezone(self.info).utcoffset()
        assert offset is not None
        return offset

    def transitions(self, year: int) -> list[datetime]:
        """The UTC instants in `year` at which the zone's offset changes."""
        found = self._years.get(year)
        if found is None:
            found = []
            at = datetime(year, 1, 1, tzinfo=UTC)
            end = datetime(year + 1, 1, 1, tzinfo=UTC)
            before = self._offset(at)
            while at < end:
                step = at + _HOUR
                after = self._offset(step)
                if after != before:
                    low, high = at, step  # the change is in (low, high]: find the second
                    while high - low > _SECOND:
                        middle = low + (high - low) / 2
                        middle = middle.replace(microsecond=0)
                        if middle <= low:
                            break
                        if self._offset(middle) == before:
                            low = middle
                        else:
                            high = middle
                    found.append(high)
                    before = after
                at = step
            self._years[year] = found
        return found

    def changes_between(self, start: datetime, end: datetime) -> list[datetime]:
        result: list[datetime] = []
        for year in range(start.year, end.year + 1):
            times = self.transitions(year)
            result.extend(times[bisect.bisect_left(times, start):bisect.bisect_right(times, end)])
        return result

    def wall(self, at: datetime) -> datetime:
        """The naive local wall time of a UTC instant."""
        return at.astimezone(self.info).replace(tzinfo=None)

    def instants(self, wall: datetime, elapsed: bool) -> list[datetime]:
        """The UTC instants at which a matching wall time fires, by the DST rules above."""
        first = wall.replace(tzinfo=self.info, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.info, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if self.wall(first) != wall:  # skipped by a spring change
            if elapsed:
                return []
            # Fixed times run at the first valid instant after the gap: the change itself.
            change = self.changes_between(min(first, second), max(first, second))
            return [change[0]] if change else [min(first, second)]
        # Repeated by an autumn change: fixed times run at the first occurrence only.
        return [first, second] if elapsed else [first]


@functools.cache
def zone(name: str) -> Zone:
    return Zone(name)


class CronSeries:
    """The fire times of one expression in one zone (for one job, when it uses `H`)."""

    def __init__(self, expression: str, timezone: str, hash_id: str | None = None) -> None:
        self.expression = expand(expression)
        self.zone = zone(timezone)
        self.elapsed = follows_elapsed_time(self.expression)
        self._hash_id = hash_id.encode() if hash_id and "H" in self.expression else None
        self._iter = croniter(self.expression, datetime(2000, 1, 1), hash_id=self._hash_id)
        self._memo: dict[datetime, datetime] = {}

    def identity(self) -> tuple[Any, ...] | None:
        """What this series' times depend on, once `H` is hashed: jobs whose `H` fields hash
        to the same values can share one series (and its memo). None when croniter keeps
        more than the expanded fields (`L`, `W`, `#`): such a series is not shared."""
        if self._iter.nth_weekday_of_month or getattr(self._iter, "nearest_weekday", None) or any(
                not isinstance(value, int) and value != "*"
                for values in self._iter.expanded for value in values):
            return None
        return (tuple(tuple(values) for values in self._iter.expanded), self.zone.name,
                self.elapsed)

    def _walls_from(self, wall: datetime) -> Iterator[datetime]:
        """Matching wall times strictly after `wall`, as naive datetimes (pure wall arithmetic)."""
        self._iter.set_current(wall, force=True)
        while True:
            yield self._iter.get_next(datetime)

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after the instant `after` (UTC-aware)."""
        hit = self._memo.get(after)
        if hit is not None:
            return hit
        result = self._next_after(after)
        if len(self._memo) > 64:  # jobs sharing this series ask about the same few instants
            self._memo.clear()
        self._memo[after] = result
        return result

    def _next_after(self, after: datetime) -> datetime:
        zone = self.zone
        wall = zone.wall(after)
        if not zone.changes_between(after - _NEAR, after + _NEAR):
            # Far from any change the offset is fixed: wall times map one to one onto instants.
            offset = after.astimezone(zone.info).utcoffset()
            assert offset is not None
            for candidate in self._walls_from(wall):
                at = (candidate - offset).replace(tzinfo=UTC)
                if at <= after:
                    continue
                if not zone.changes_between(after - _NEAR, at + _NEAR):
                    return at
                break  # a change lies ahead before the next fire time: take the careful path
        return self._next_near_change(after, wall)

    def _next_near_change(self, after: datetime, wall: datetime) -> datetime:
        # Near a change, wall order and time order differ: consider every wall time from an
        # hour before and stop once later wall times cannot give an earlier instant.
        spread = _HOUR
        best: datetime | None = None
        for candidate in self._walls_from(wall - spread - _SECOND):
            if best is not None and candidate > self.zone.wall(best) + spread:
                return best
            for at in self.zone.instants(candidate, self.elapsed):
                if at > after and (best is None or at < best):
                    best = at
        raise AssertionError("unreachable: croniter yields wall times forever")


class Schedule:
    """All of a job's expressions in its zone; fire times are the union, each instant once."""

    def __init__(self, expressions: Sequence[str], timezone: str, job_name: str,
                 series: Sequence[CronSeries] | None = None) -> None:
        self.expressions = tuple(expressions)
        self.timezone = timezone
        self.series = list(series) if series is not None else [
            CronSeries(e, timezone, job_name) for e in expressions]

    def next_after(self, after: datetime) -> datetime:
        if len(self.series) == 1:  # nearly every job: no generator and min() per slot
            return self.series[0].next_after(after)
        return min(s.next_after(after) for s in self.series)

    def times(self, after: datetime, until: datetime | None = None) -> Iterator[datetime]:
        """Fire times after `after` (and up to `until`, inclusive), in order."""
        at = after
        while True:
            at = self.next_after(at)
            if until is not None and at > until:
                return
            yield at


def fingerprint(expressions: Sequence[str], timezone: str) -> str:
    """Identifies a schedule: it changes when its expressions or its time zone change."""
    text = "\n".join([timezone, *expressions])
    return hashlib.sha256(text.encode()).hexdigest()[:32]
