"""A pod's log read with timestamps: each line's timestamp is stripped and kept with the log,
so a copy that starts again (after a restart, or on another replica) goes on from the last
line kept, without repeating or losing lines."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from core.logs import MAX_LINE, LogWriter, Stamp

# Added to the time since the last kept line when asking for the log again: covers clocks of
# jobbot and the node that disagree. Lines at or before the last kept one are skipped here.
SKEW_MARGIN = 300


def normalised(raw: bytes) -> str | None:
    """A kubelet timestamp (RFC 3339 in UTC, nanoseconds with trailing zeros trimmed) at a
    fixed width, so that stamps sort as text; None if `raw` is not one."""
    text = raw.decode("ascii", "replace")
    if len(text) < 20 or not text.endswith("Z") or text[10] != "T":
        return None
    whole, _, fraction = text[:-1].partition(".")
    if len(whole) != 19 or (fraction and not fraction.isdigit()):
        return None
    return f"{whole}.{fraction[:9].ljust(9, '0')}Z"


def since_seconds(stamp: Stamp, now: datetime | None = None) -> int:
    """The `sinceSeconds` that covers the line stamped `stamp.at` (and a margin)."""
    at = datetime.fromisoformat(stamp.at[:19]).replace(tzinfo=UTC)
    elapsed = ((now or datetime.now(UTC)) - at).total_seconds()
    return max(1, math.ceil(elapsed) + SKEW_MARGIN)


class StampedLines:
    """Feeds a writer from a `timestamps=true` log stream, after the lines already kept."""

    def __init__(self, writer: LogWriter, after: Stamp | None) -> None:
        self._writer = writer
        self._after = after
        self._stamp = after
        self._rest = b""
        # In the middle of a line longer than MAX_LINE (its timestamp already stripped).
        self._inside = False

    def feed(self, chunk: bytes) -> None:
        data = self._rest + chunk
        pieces = data.split(b"\n")
        self._rest = pieces.pop()
        kept: list[bytes] = []
        for piece in pieces:
            line = self._line(piece)
            if line is not None:
                kept.append(line)
        if kept:
            self._writer.write(b"\n".join(kept) + b"\n", self._stamp)
        if len(self._rest) > MAX_LINE:
            # A runaway line: hand its start over now (the writer cuts it into pieces).
            start = self._rest if self._inside else self._open(self._rest)
            self._rest = b""
            self._inside = True
            if start is not None:
                self._writer.write(start)

    def close(self) -> None:
        if self._rest:
            line = self._line(self._rest)
            self._rest = b""
            if line is not None:
                self._writer.write(line + b"\n", self._stamp)

    def _line(self, piece: bytes) -> bytes | None:
        """The text of one whole line, or None if it was kept before."""
        if self._inside:
            self._inside = False
            return piece
        return self._open(piece)

    def _open(self, piece: bytes) -> bytes | None:
        head, space, text = piece.partition(b" ")
        at = normalised(head) if space else None
        if at is None:
            return piece  # no timestamp (not expected): kept as it is
        after = self._after
        if after is not None:
            if at < after.at:
                return None
            if at == after.at and after.count > 0:
                self._after = Stamp(after.at, after.count - 1)
                return None
            self._after = None  # past the kept lines: everything from here is new
        previous = self._stamp
        self._stamp = Stamp(at, previous.count + 1 if previous and previous.at == at else 1)
        return text
