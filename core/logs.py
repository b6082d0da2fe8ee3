"""Run logs: one file per attempt under the data directory, readable while still written."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from core.masking import Masker

# A line longer than this is cut into pieces, so one runaway line cannot exhaust memory.
MAX_LINE = 64 * 1024
_CHUNK = 1024 * 1024


class LogWriter:
    """Appends masked lines to one attempt's log file and wakes followers."""

    def __init__(self, path: Path, masker: Masker, wake: Callable[[], None],
                 closed: Callable[[], None] | None = None) -> None:
        self.path = path
        self._masker = masker
        self._wake = wake
        self._closed = closed
        self._partial = b""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115  (closed in close())

    def write(self, chunk: bytes) -> None:
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        if lines:
            self._emit(lines)

    def line(self, text: str) -> None:
        """Write a line of jobbot's own (e.g. "attempt 2 started"), marked as such."""
        self._emit([f"[jobbot] {text}".encode()])

    def _emit(self, lines: list[bytes]) -> None:
        # Decoded and masked as one text, not line by line: a busy job writes thousands of
        # lines per read (and a secret spanning lines is masked too).
        text = self._masker.mask(b"\n".join(lines).decode("utf-8", "replace")) + "\n"
        self._file.write(text.encode())
        self._file.flush()
        self._wake()

    def close(self) -> None:
        if self._partial:
            self._emit([self._partial])
            self._partial = b""
        self._file.close()
        if self._closed is not None:
            self._closed()


@dataclass(eq=False)
class _Follower:
    """One reader of an attempt's file: woken by each write, told when its writer closed."""

    attempt: int
    event: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False


class LogStore:
    """Where logs live: <root>/<run id>/<attempt>.log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # One event per follower, so one follower's clear() never swallows another's wake-up.
        self._followers: dict[str, set[_Follower]] = {}

    def path(self, run_id: str, attempt: int) -> Path:
        return self.root / run_id / f"{attempt}.log"

    def writer(self, run_id: str, attempt: int, masker: Masker) -> LogWriter:
        return LogWriter(self.path(run_id, attempt), masker, lambda: self.wake(run_id),
                         lambda: self._writer_closed(run_id, attempt))

    def wake(self, run_id: str) -> None:
        for follower in self._followers.get(run_id, ()):
            follower.event.set()

    def _writer_closed(self, run_id: str, attempt: int) -> None:
        """This process wrote the attempt's last line: its followers need not ask the store."""
        for follower in self._followers.get(run_id, ()):
            if follower.attempt == attempt:
                follower.closed = True
                follower.event.set()

    def attempts(self, run_id: str) -> list[int]:
        folder = self.root / run_id
        if not folder.is_dir():
            return []
        return sorted(int(p.stem) for p in folder.glob("*.log") if p.stem.isdigit())

    def read_lines(self, run_id: str, attempt: int) -> Iterator[str]:
        """The attempt's lines without their newline, streamed from disk."""
        path = self.path(run_id, attempt)
        if not path.exists():
            return
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                yield line.rstrip("\n")

    def line_count(self, run_id: str, attempt: int) -> int:
        """Complete lines in the attempt's file so far, counted as `read_lines` and `follow`
        split them (text mode: a lone carriage return ends a line too)."""
        path = self.path(run_id, attempt)
        if not path.exists():
            return 0
        count = 0
        with open(path, encoding="utf-8", errors="replace") as handle:
            while chunk := handle.read(_CHUNK):
                count += chunk.count("\n")
        return count

    def tail(self, run_id: str, attempt: int, count: int) -> list[str]:
        from collections import deque

        return list(deque(self.read_lines(run_id, attempt), maxlen=count))

    async def follow(
        self, run_id: str, attempt: int, finished: Callable[[], Awaitable[bool]],
        poll: float = 0.5,
    ) -> AsyncIterator[str]:
        """Yield lines as they are written until `finished()` and the file is drained."""
        async for lines in self.follow_batches(run_id, attempt, finished, poll=poll):
            for line in lines:
                yield line

    async def follow_batches(
        self, run_id: str, attempt: int, finished: Callable[[], Awaitable[bool]],
        *, poll: float = 0.5, idle: float = 0.1,
    ) -> AsyncIterator[list[str]]:
        """The lines of each read (up to a megabyte) as they are written, until the writer has
        closed (or, from another process, `finished()`) and the file is drained.

        A read per wake-up, not a line per step: live pages follow 100,000-line logs."""
        path = self.path(run_id, attempt)
        follower = _Follower(attempt)
        self._followers.setdefault(run_id, set()).add(follower)
        handle: IO[str] | None = None
        partial = ""
        try:
            done = False
            while True:
                # Cleared before draining: a line written meanwhile sets it again, so the wait
                # below returns at once. `closed` is read first: all it covers is in the file.
                follower.event.clear()
                finishing = done or follower.closed
                read_any = False
                if handle is None and path.exists():
                    # A local file read is microseconds; not worth a thread per chunk.
                    handle = open(path, encoding="utf-8", errors="replace")  # noqa: ASYNC230, SIM115
                while handle is not None and (chunk := handle.read(_CHUNK)):
                    read_any = True
                    lines = (partial + chunk).split("\n")
                    partial = lines.pop()
                    if lines:
                        yield lines
                if finishing:
                    if partial:
                        yield [partial]
                    return
                if read_any or await _woken(follower.event, idle):
                    continue  # still being written: no need to ask the store
                # Quiet for `idle`: ask the store (the writer may be another process), then
                # drain once more (the `finishing` branch), so no line before the end is lost.
                done = await finished()
                if not done:
                    await _woken(follower.event, poll)
        finally:
            if handle is not None:
                handle.close()
            followers = self._followers.get(run_id, set())
            followers.discard(follower)
            if not followers:
                self._followers.pop(run_id, None)

    def delete(self, run_id: str) -> None:
        shutil.rmtree(self.root / run_id, ignore_errors=True)


async def _woken(event: asyncio.Event, within: float) -> bool:
    """Wait up to `within` seconds for `event`; True if it was set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), within)
    except TimeoutError:
        return False
    return True
