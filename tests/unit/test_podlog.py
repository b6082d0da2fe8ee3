"""Pod logs read with timestamps: stamps normalised, lines already kept skipped on a resume."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from core.executors.k8s.podlog import SKEW_MARGIN, StampedLines, normalised, since_seconds
from core.logs import LogWriter, Stamp
from core.logs.base import Sink
from core.masking import Masker


class Kept(Sink):
    """What a writer hands its store: the text and the stamp of each append."""

    def __init__(self) -> None:
        self.appended: list[tuple[str, Stamp | None]] = []

    def append(self, text: str, lines: int, stamp: Stamp | None) -> None:
        self.appended.append((text, stamp))

    async def close(self) -> None:
        return None


def test_kubelet_stamps_sort_as_text_once_normalised() -> None:
    shorter = normalised(b"2026-12-07T01:02:03.1Z")
    longer = normalised(b"2026-12-07T01:02:03.12Z")
    assert shorter == "2026-12-07T01:02:03.100000000Z"
    assert shorter is not None and longer is not None and shorter < longer
    assert normalised(b"2026-12-07T01:02:03Z") == "2026-12-07T01:02:03.000000000Z"
    assert normalised(b"hello") is None
    assert normalised(b"2026-12-07T01:02:03.x1Z") is None


def test_since_seconds_covers_the_last_line_and_a_margin() -> None:
    now = datetime(2026, 12, 7, 1, 0, 10, 500000, tzinfo=UTC)
    assert since_seconds(Stamp("2026-12-07T01:00:00.900000000Z", 1), now) == 11 + SKEW_MARGIN


def test_a_resumed_copy_skips_what_was_kept_even_within_one_timestamp() -> None:
    sink = Kept()
    writer = LogWriter(sink, Masker([]), 1 << 20)
    kept = Stamp("2026-12-07T01:00:01.000000000Z", 2)
    lines = StampedLines(writer, kept)
    lines.feed(b"2026-12-07T01:00:00.5Z old\n2026-12-07T01:00:01Z three\n2026-12-07T01:00:01Z fo")
    lines.feed(b"ur\n2026-12-07T01:00:01Z five\n2026-12-07T01:00:02.25Z six")
    lines.close()
    asyncio.run(writer.close())
    assert "".join(text for text, _ in sink.appended) == "five\nsix\n"
    assert sink.appended[0][1] == Stamp("2026-12-07T01:00:01.000000000Z", 3)
    assert sink.appended[-1][1] == Stamp("2026-12-07T01:00:02.250000000Z", 1)


def test_a_writer_stops_at_its_limit_with_one_marker_line() -> None:
    sink = Kept()
    writer = LogWriter(sink, Masker(["s3cr3t-value"]), 40)
    writer.write(b"first s3cr3t-value\nsecond line\nthird line\n")
    writer.write(b"more\n")
    writer.line("stopping")
    text = "".join(text for text, _ in sink.appended)
    assert text == ("first ********\nsecond line\nthird line\n"
                    "[jobbot] log limit of 40 bytes reached: the rest of this attempt's output "
                    "is dropped\n")
    assert writer.full
