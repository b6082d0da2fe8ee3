"""Signed run links."""

from __future__ import annotations

import pytest

from core.links import Links

KEY = b"k" * 32


def test_a_link_verifies_for_its_run_only() -> None:
    links = Links("https://jobbot.example.com/", KEY)
    token = links.token("abc", now=1000)
    assert links.verify("abc", token, now=1001)
    assert not links.verify("abd", token, now=1001)
    assert links.run_url("abc").startswith("https://jobbot.example.com/runs/abc?t=")


def test_expired_forged_and_garbled_tokens_fail() -> None:
    links = Links("http://x", KEY, ttl=60)
    token = links.token("abc", now=1000)
    assert not links.verify("abc", token, now=1061)
    assert not Links("http://x", b"other-key-0123456789").verify("abc", token, now=1001)
    assert not links.verify("abc", "not-base64!", now=1001)
    assert not links.verify("abc", token[:-2], now=1001)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Links("http://x", b"short")
