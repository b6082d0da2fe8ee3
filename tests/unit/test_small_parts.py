"""Durations, masking, overrides, names and process identities."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.durations import format_duration, parse_duration
from core.errors import BadInput
from core.masking import MASK, Masker, is_sensitive_key, mask_mapping, secret_forms
from core.names import closest, is_dns_label, is_dns_subdomain
from core.overrides import parse_overrides
from core.procs import ProcessId


@pytest.mark.parametrize(("text", "seconds"), [
    (480, 480), ("480", 480), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172800),
    ("1d2h3m4s", 93784),
])
def test_parse_duration(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "1.5h", "-3", True, None, [], "h"])
def test_bad_durations_say_what_is_allowed(text: object) -> None:
    with pytest.raises(ValueError, match="1h30m"):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 59, 60, 185, 3600, 7260)] == [
        "0s", "59s", "1m", "3m05s", "1h", "2h01m"]


def test_masker_hides_secrets_longest_first() -> None:
    masker = Masker(["hunter2", "hunter2-extended", "ab"])
    assert masker.mask("pw=hunter2-extended x=hunter2 ab") == f"pw={MASK} x={MASK} ab"
    assert not Masker([]) and Masker([]).mask("x") == "x"


def test_secret_forms_are_the_ways_a_job_prints_a_value() -> None:
    forms = secret_forms(["pa$$\"word\n", "-----BEGIN-----\nkey-line-one\n-----END-----", "abc"])
    assert {"pa$$\"word\n", "pa$$\"word", 'pa$$\\"word', "cGEkJCJ3b3Jk"} <= forms
    assert {"key-line-one", "-----BEGIN-----"} <= forms
    assert not any("abc" in form for form in forms)  # too short to mask without harm
    masker = Masker(forms)
    assert masker.mask('json {"pw": "pa$$\\"word"} b64 cGEkJCJ3b3Jk key-line-one abc') == (
        f'json {{"pw": "{MASK}"}} b64 {MASK} {MASK} abc')


def test_sensitive_keys() -> None:
    assert all(is_sensitive_key(k) for k in ("DB_PASSWORD", "github_token", "API_KEY", "APIKEY"))
    assert not any(is_sensitive_key(k) for k in ("RAILS_ENV", "PORT", "GREETING"))
    assert mask_mapping({"TOKEN": "t", "X": "secretvalue"}, Masker(["secretvalue"])) == {
        "TOKEN": MASK, "X": MASK}


def test_parse_overrides() -> None:
    assert parse_overrides(["A=1", "B=two words", "C=x=y", "D="]) == {
        "A": "1", "B": "two words", "C": "x=y", "D": ""}
    for bad, message in [("A", "use KEY=VALUE"), ("1A=x", "names are letters"),
                         ("K\n=1", "names are letters"), ("A=a\nb", "contains a newline"),
                         ("A=" + "x" * 5000, "longer than")]:
        with pytest.raises(BadInput, match=message):
            parse_overrides([bad])


def test_names() -> None:
    assert is_dns_label("db-migrate") and not is_dns_label("DB") and not is_dns_label("-a")
    assert not is_dns_label("a" * 64)
    assert is_dns_subdomain("registry-credentials.v1") and not is_dns_subdomain("A.b")
    assert closest("migrat", ["migrate", "report"]) == "migrate"
    assert closest("zzz", ["migrate"]) is None


def test_process_ids_survive_a_round_trip_and_detect_death() -> None:
    me = ProcessId.current()
    assert me.is_alive()
    assert ProcessId.parse(str(me)) == me
    assert ProcessId.parse("garbage") is None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    handle = ProcessId.of(child.pid)
    child.wait()
    assert not handle.is_alive()
    # A reused pid has another start time, so it is not mistaken for the old process.
    assert not ProcessId(me.host, os.getpid(), me.start + 1).is_alive()
    assert not ProcessId("another-host", os.getpid(), me.start).is_alive()
