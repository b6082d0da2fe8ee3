"""Run logs: one file per attempt under the data directory, readable while still written."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO

from core.masking import Masker

# A line longer than this is cut into pieces, so one runaway line cannot exhaust memory.
MAX_LINE = 64 * 1024
_CHUNK = 1024 * 1024


class LogWriter:
    """Appends masked lines to one attempt's log file and wakes followers."""

    def __init__(self, path: Path, masker: Masker, wake: Callable[[], None]) -> None:
        self.path = path
        self._masker = masker
        self._wake = wake
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
        text = "".join(self._masker.mask(raw.decode("utf-8", "replace")) + "\n" for raw in lines)
        self._file.write(text.encode())
        self._file.flush()
        self._wake()

    def close(self) -> None:
        if self._partial:
            self._emit([self._partial])
            self._partial = b""
        self._file.close()


class LogStore:
    """Where logs live: <root>/<run id>/<attempt>.log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # One event per follower, so one follower's clear() never swallows another's wake-up.
        self._followers: dict[str, set[asyncio.Event]] = {}

    def path(self, run_id: str, attempt: int) -> Path:
        return self.root / run_id / f"{attempt}.log"

    def writer(self, run_id: str, attempt: int, masker: Masker) -> LogWriter:
        return LogWriter(self.path(run_id, attempt), masker, lambda: self.wake(run_id))

    def wake(self, run_id: str) -> None:
        for event in self._followers.get(run_id, ()):
            event.set()

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

    def tail(self, run_id: str, attempt: int, count: int) -> list[str]:
        from collections import deque

        return list(deque(self.read_lines(run_id, attempt), maxlen=count))

    async def follow(
        self, run_id: str, attempt: int, finished: Callable[[], Awaitable[bool]],
        poll: float = 0.5,
    ) -> AsyncIterator[str]:
        """Yield lines as they are written until `finished()` and the file is drained."""
        path = self.path(run_id, attempt)
        event = asyncio.Event()
        self._followers.setdefault(run_id, set()).add(event)
        handle: IO[str] | None = None
        partial = ""
        try:
            while True:
                done = await finished()  # asked before draining, so no later line is lost
                if handle is None and path.exists():
                    # A local file read is microseconds; not worth a thread per chunk.
                    handle = open(path, encoding="utf-8", errors="replace")  # noqa: ASYNC230, SIM115
                while handle is not None and (chunk := handle.read(_CHUNK)):
                    lines = (partial + chunk).split("\n")
                    partial = lines.pop()
                    for line in lines:
                        yield line
                if done:
                    if partial:
                        yield partial
                    return
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=poll)
        finally:
            if handle is not None:
                handle.close()
            followers = self._followers.get(run_id, set())
            followers.discard(event)
            if not followers:
                self._followers.pop(run_id, None)

    def delete(self, run_id: str) -> None:
        shutil.rmtree(self.root / run_id, ignore_errors=True)
