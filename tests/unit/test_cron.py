"""Fire times: syntax, time zones, daylight-saving days as classic cron, leap days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from core.cron import Schedule, follows_elapsed_time
from core.scheduler import SeriesCache, fire_times, slot_key
from core.spec import parse_app


def local(expressions: list[str] | str, tz: str, start: str, count: int,
          job: str = "job") -> list[str]:
    """The next `count` fire times after `start` (ISO), as local ISO strings."""
    exprs = [expressions] if isinstance(expressions, str) else expressions
    schedule = Schedule(exprs, tz, job)
    begin = datetime.fromisoformat(start).astimezone(UTC)
    return [t.astimezone(ZoneInfo(tz)).isoformat() for t in islice(schedule.times(begin), count)]


def test_croniter_max_step_means_only_the_max_in_the_pinned_range() -> None:
    # pyproject pins croniter to 7.x because of this: `59/1` is minute 59 only, not 59..59+.
    it = croniter("59/1 * * * *", datetime(2026, 1, 1))
    assert [it.get_next(datetime).minute for _ in range(3)] == [59, 59, 59]
    assert local("59/1 * * * *", "UTC", "2026-01-01T00:00:00+00:00", 2) == [
        "2026-01-01T00:59:00+00:00", "2026-01-01T01:59:00+00:00"]


def test_five_fields_aliases_and_lists() -> None:
    assert local("*/20 9 * * 1-5", "UTC", "2026-11-20T09:30:00+00:00", 3) == [
        "2026-11-20T09:40:00+00:00", "2026-11-23T09:00:00+00:00", "2026-11-23T09:20:00+00:00"]
    # Aliases keep their classic meaning (croniter would hash them when given a hash id).
    assert local("@daily", "UTC", "2026-11-20T09:30:00+00:00", 1) == ["2026-11-21T00:00:00+00:00"]
    assert local("@hourly", "UTC", "2026-11-20T09:30:00+00:00", 1) == ["2026-11-20T10:00:00+00:00"]
    assert local("@weekly", "UTC", "2026-11-20T09:30:00+00:00", 1) == ["2026-11-22T00:00:00+00:00"]
    assert local("@monthly", "UTC", "2026-11-20T09:30:00+00:00", 1) == [
        "2026-12-01T00:00:00+00:00"]
    assert local("@yearly", "UTC", "2026-11-20T09:30:00+00:00", 1) == ["2027-01-01T00:00:00+00:00"]
    # A list is the union of its expressions; an instant in both fires once.
    assert local(["0 12 * * *", "0 */6 * * *"], "UTC", "2026-11-20T05:00:00+00:00", 4) == [
        "2026-11-20T06:00:00+00:00", "2026-11-20T12:00:00+00:00", "2026-11-20T18:00:00+00:00",
        "2026-11-21T00:00:00+00:00"]


def test_h_is_hashed_per_job_and_stable() -> None:
    first = local("H H * * *", "UTC", "2026-11-20T00:00:00+00:00", 2, job="backup")
    again = local("H H * * *", "UTC", "2026-11-20T00:00:00+00:00", 2, job="backup")
    other = local("H H * * *", "UTC", "2026-11-20T00:00:00+00:00", 2, job="report")
    assert first == again
    assert first != other
    expected = croniter("H H * * *", datetime(2026, 11, 20), hash_id=b"backup").get_next(datetime)
    assert first[0] == expected.replace(tzinfo=UTC).isoformat()


def test_time_zone_per_job() -> None:
    assert local("0 9 * * *", "Asia/Kolkata", "2026-11-20T00:00:00+00:00", 1) == [
        "2026-11-20T09:00:00+05:30"]
    assert local("0 9 * * *", "America/New_York", "2026-11-20T00:00:00+00:00", 1) == [
        "2026-11-20T09:00:00-05:00"]


def test_berlin_spring_skipped_fixed_time_runs_once_right_after_the_gap() -> None:
    assert local("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00+01:00", 3) == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    # Every minute of the lost hour maps to 03:00: still exactly one run that day.
    assert local("* 2 * * *", "Europe/Berlin", "2026-03-29T00:00:00+01:00", 2) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]


def test_berlin_autumn_repeated_fixed_time_runs_only_at_its_first_occurrence() -> None:
    assert local("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00+02:00", 3) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    # Asked from inside the repeated hour (after the first 02:30): no second run.
    assert local("30 2 * * *", "Europe/Berlin", "2026-10-25T02:10:00+01:00", 1) == [
        "2026-10-26T02:30:00+01:00"]


def test_berlin_hourly_follows_real_time_on_both_change_days() -> None:
    autumn = local("0 * * * *", "Europe/Berlin", "2026-10-25T00:30:00+02:00", 5)
    assert autumn == ["2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00",
                      "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00",
                      "2026-10-25T04:00:00+01:00"]
    spring = local("0 * * * *", "Europe/Berlin", "2026-03-29T00:30:00+01:00", 3)
    assert spring == ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00",
                      "2026-03-29T04:00:00+02:00"]
    # 25 real hours on the autumn day, 23 in spring: one run per real hour.
    day = Schedule(["0 * * * *"], "Europe/Berlin", "job")
    zone = ZoneInfo("Europe/Berlin")
    for start, end, hours in (((2026, 10, 25), (2026, 10, 26), 25),
                              ((2026, 3, 29), (2026, 3, 30), 23)):
        begin = datetime(*start, tzinfo=zone).astimezone(UTC)
        until = datetime(*end, tzinfo=zone).astimezone(UTC)
        fired = [t for t in day.times(begin - timedelta(seconds=1), until) if t < until]
        assert len(fired) == hours


def test_step_in_hour_field_follows_real_time_in_the_repeated_hour() -> None:
    assert local("*/30 * * * *", "Europe/Berlin", "2026-10-25T01:45:00+02:00", 5) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"]


def test_new_york_change_days() -> None:
    # Spring: 02:30 does not exist on 8 March 2026; it runs at 03:00 EDT.
    assert local("30 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00", 3) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]
    # Autumn: 01:30 happens twice on 1 November 2026; it runs at the first (EDT) only.
    assert local("30 1 * * *", "America/New_York", "2026-10-31T12:00:00-04:00", 2) == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    assert local("15 * * * *", "America/New_York", "2026-11-01T00:30:00-04:00", 3) == [
        "2026-11-01T01:15:00-04:00", "2026-11-01T01:15:00-05:00", "2026-11-01T02:15:00-05:00"]


def test_leap_day() -> None:
    assert local("0 12 29 2 *", "UTC", "2026-11-20T00:00:00+00:00", 2) == [
        "2028-02-29T12:00:00+00:00", "2032-02-29T12:00:00+00:00"]
    assert local("0 0 * * *", "Europe/Berlin", "2028-02-28T12:00:00+01:00", 2) == [
        "2028-02-29T00:00:00+01:00", "2028-03-01T00:00:00+01:00"]


def test_which_schedules_follow_real_time() -> None:
    assert follows_elapsed_time("0 * * * *")
    assert follows_elapsed_time("@hourly")
    assert follows_elapsed_time("0 */2 * * *")
    assert follows_elapsed_time("0 1-10/3 * * *")
    assert follows_elapsed_time("H H/4 * * *")
    assert not follows_elapsed_time("30 2 * * *")
    assert not follows_elapsed_time("@daily")
    assert not follows_elapsed_time("0 1,2,3 * * *")
    assert not follows_elapsed_time("H H * * *")


def test_fire_times_of_a_job_and_slot_keys() -> None:
    app = parse_app("app: demo\njobs:\n  - {name: nightly, image: x, command: ['true'], "
                    "schedule: '30 2 * * *', timezone: Europe/Berlin}\n")
    times = list(fire_times(app.job("nightly"), datetime(2026, 3, 28, tzinfo=UTC), 2))
    assert [t.isoformat() for t in times] == ["2026-03-28T01:30:00+00:00",
                                             "2026-03-29T01:00:00+00:00"]
    assert slot_key("demo", "nightly", times[1]) == "cron:2026-03-29T01:00:00+00:00:demo/nightly"


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
def test_fire_times_always_move_forward_across_changes(tz: str) -> None:
    # Windows holding both of each zone's 2026 changes (Lord Howe moves by half an hour).
    schedule = Schedule(["*/30 * * * *", "45 2 * * *"], tz, "job")
    for begin, end in ((datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 10, tzinfo=UTC)),
                       (datetime(2026, 9, 28, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC))):
        times = list(schedule.times(begin, end))
        assert all(a < b for a, b in pairwise(times))
        days = (end - begin).days
        assert days * 48 - 2 <= len(times) - days <= days * 48 + 2


def test_jobs_whose_h_hashes_alike_share_one_series_with_the_same_fire_times() -> None:
    jobs = "\n".join(
        f"  - {{name: job-{i}, image: x, command: ['true'], schedule: '{expression}', "
        f"timezone: Europe/Berlin}}"
        for i, expression in enumerate(["H * * * *"] * 60 + ["H H/2 * * *"] * 60
                                       + ["H H * * 1#2"] * 5))
    app = parse_app(f"app: demo\njobs:\n{jobs}\n")
    cache = SeriesCache()
    series = {job.name: cache.schedule(job).series[0] for job in app.jobs}
    hourly = [series[f"job-{i}"] for i in range(60)]
    # One series per minute the 60 jobs hash to (some minutes are hashed to twice or more).
    minutes = {croniter("H * * * *", hash_id=f"job-{i}".encode()).expanded[0][0]
               for i in range(60)}
    assert len({id(s) for s in hourly}) == len(minutes) < 60
    begin = datetime(2026, 10, 24, 22, tzinfo=UTC)  # Berlin's autumn change is 3 hours later
    for job in app.jobs:
        count = 2 if "#" in job.schedule[0] else 8  # 8 hours or more: the change included
        own = list(fire_times(job, begin, count))
        shared = list(islice(Schedule(job.schedule, job.timezone, job.name,
                                      [series[job.name]]).times(begin), count))
        assert shared == own, job.name
    # `H/2` in the hour keeps following real time, unlike the hour list it hashes to.
    assert all(series[f"job-{i}"].elapsed for i in range(60, 120))
    # `#` is kept by croniter outside the expanded fields: such series are never shared.
    nth = [series[f"job-{i}"] for i in range(120, 125)]
    assert len({id(s) for s in nth}) == 5
