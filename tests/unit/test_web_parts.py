"""Pure parts of the pages: ANSI colours to safe HTML, schedules in words, links back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from web.ansi import strip, to_html
from web.present import duration, links_back
from web.schedule_words import describe, next_fire


@pytest.mark.parametrize(("line", "html"), [
    ("plain", "plain"),
    ("<script>&", "&lt;script&gt;&amp;"),
    ("\x1b[31mred\x1b[0m after", '<span class="c1">red</span> after'),
    ("\x1b[1;92mbold bright\x1b[22m plain green",
     '<span class="c10 bold">bold bright</span><span class="c10"> plain green</span>'),
    ("\x1b[38;5;208m256\x1b[39m", '<span style="color:#ff8700">256</span>'),
    ("\x1b[48;2;1;2;3mtrue\x1b[m", '<span style="background:#010203">true</span>'),
    ("\x1b[2K\rprogress\x07", "progress"),
    ("\x1b[31m<b>\x1b[0m", '<span class="c1">&lt;b&gt;</span>'),
    ('\x1b[38;2;999;0;0m"q"', '<span style="color:#ff0000">"q"</span>'),
])
def test_ansi_colours_become_spans_and_everything_else_is_escaped(line: str, html: str) -> None:
    assert to_html(line) == html


def test_strip_leaves_the_text() -> None:
    assert strip("\x1b[1;31merror\x1b[0m: x\x07") == "error: x"


@pytest.mark.parametrize(("expr", "words"), [
    ("0 3 * * *", "every day at 03:00 Europe/Berlin"),
    ("*/5 * * * *", "every 5 minutes"),
    ("* * * * *", "every minute"),
    ("30 * * * *", "every hour at minute 30 Europe/Berlin"),
    ("0 */6 * * *", "every 6 hours at minute 0 Europe/Berlin"),
    ("0 9 * * 1-5", "every weekday at 09:00 Europe/Berlin"),
    ("15 8 * * 1,3", "every Monday and Wednesday at 08:15 Europe/Berlin"),
    ("0 8,20 * * *", "every day at 08:00, 20:00 Europe/Berlin"),
    ("15 2 1 * *", "every month on day 1 at 02:15 Europe/Berlin"),
    ("0 0 1 1 *", "every year on January 1 at 00:00 Europe/Berlin"),
    ("@daily", "every day at 00:00 Europe/Berlin"),
    ("H 3 * * *", "cron H 3 * * * Europe/Berlin"),
    ("0 3 1-7 * 1", "cron 0 3 1-7 * 1 Europe/Berlin"),
])
def test_schedules_in_words_fall_back_to_the_expression(expr: str, words: str) -> None:
    assert describe(expr, "Europe/Berlin") == words


def test_next_fire_uses_the_job_time_zone_and_the_earliest_schedule() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # 13:00 in Berlin
    fire = next_fire(("0 3 * * *", "0 14 * * *"), "Europe/Berlin", "job", now)
    assert fire is not None
    assert fire.isoformat() == "2026-11-22T14:00:00+01:00"


def test_links_back_only_to_web_addresses() -> None:
    links = links_back({"slack_channel": "C1", "repo": "acme/db", "pr": 12,
                        "html_url": "javascript:alert(1)"})
    assert [(link.label, link.url) for link in links] == [
        ("Slack channel", "https://slack.com/app_redirect?channel=C1"),
        ("acme/db#12", "https://github.com/acme/db/pull/12"),
    ]


def test_durations_read_well() -> None:
    assert [duration(s) for s in (None, 3.25, 42, 184, 7500)] == [
        "\u2013", "3.2s", "42s", "3m 04s", "2h 05m"]
