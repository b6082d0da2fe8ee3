"""Cron expressions in words ("every day at 03:00 Europe/Berlin") and their next fire time."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
           "@annually": "0 0 1 1 *"}


def describe(expr: str, timezone: str = "UTC") -> str:
    """Common cron forms in words; anything else is shown as the expression itself."""
    words = _words(_MACROS.get(expr.strip(), expr.strip()))
    if words is None:
        return f"cron {expr} {timezone}"
    # "every 5 minutes" is the same in every time zone; a wall-clock time is not.
    return f"{words} {timezone}" if " at " in words else words


def _words(expr: str) -> str | None:
    fields = expr.split()
    if len(fields) != 5:
        return None
    minute, hour, dom, month, dow = fields
    if minute == "*" and hour == "*" and dom == month == dow == "*":
        return "every minute"
    if minute.startswith("*/") and minute[2:].isdigit() and hour == dom == month == dow == "*":
        return f"every {int(minute[2:])} minutes"
    if not minute.isdigit() or int(minute) > 59:
        return None
    if hour == "*" and dom == month == dow == "*":
        return f"every hour at minute {int(minute)}"
    if hour.startswith("*/") and hour[2:].isdigit() and dom == month == dow == "*":
        return f"every {int(hour[2:])} hours at minute {int(minute)}"
    hours = hour.split(",")
    if not all(h.isdigit() and int(h) < 24 for h in hours):
        return None
    at = "at " + ", ".join(f"{int(h):02d}:{int(minute):02d}" for h in hours)
    if month != "*":
        if not (month.isdigit() and 1 <= int(month) <= 12 and dom.isdigit() and dow == "*"):
            return None
        return f"every year on {_MONTHS[int(month) - 1]} {int(dom)} {at}"
    if dom == "*" and dow == "*":
        return f"every day {at}"
    if dom == "*":
        days = _weekdays(dow)
        return f"every {days} {at}" if days else None
    if dow == "*" and dom.isdigit() and 1 <= int(dom) <= 31:
        return f"every month on day {int(dom)} {at}"
    return None


def _weekdays(dow: str) -> str | None:
    if dow in ("1-5", "MON-FRI", "mon-fri"):
        return "weekday"
    if dow in ("0,6", "6,0", "SAT,SUN", "sat,sun"):
        return "Saturday and Sunday"
    names = []
    for part in dow.split(","):
        index = _day_index(part)
        if index is None:
            return None
        names.append(_DAYS[index])
    return " and ".join(names)


def _day_index(text: str) -> int | None:
    if text.isdigit() and int(text) <= 7:
        return int(text) % 7
    short = [d[:3].lower() for d in _DAYS]
    return short.index(text.lower()) if text.lower() in short else None


def next_fire(schedules: tuple[str, ...], timezone: str, job_name: str,
              now: datetime | None = None) -> datetime | None:
    """The earliest next slot over the job's schedules, in the job's time zone."""
    start = (now or datetime.now(UTC)).astimezone(ZoneInfo(timezone))
    times = [croniter(expr, start, hash_id=job_name).get_next(datetime) for expr in schedules]
    return min(times) if times else None
