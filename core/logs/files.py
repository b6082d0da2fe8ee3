"""Logs as files: one per attempt under the data directory, readable while still written
(the store for SQLite, where jobbot is one process on one host)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO

from core.logs.base import (
    LOG_LIMIT,
    LogStore,
    LogWriter,
    Sink,
    Stamp,
    StoredEnd,
    is_limit_marker,
    woken,
)
from core.masking import Masker

_CHUNK = 1024 * 1024
# Enough of a log's end to hold its last line when that is jobbot's limit line.
_END = 512


class _FileSink(Sink):
    """Appends to the attempt's file; a source timestamp goes to a file beside it."""

    def __init__(self, store: FileLogs, run_id: str, attempt: int) -> None:
        self._store = store
        self._run_id = run_id
        self._attempt = attempt
        self.path = store.path(run_id, attempt)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115  (closed in close())
        self._stamp: Stamp | None = None

    def append(self, text: str, lines: int, stamp: Stamp | None) -> None:
        self._file.write(text.encode())
        self._file.flush()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            self._store.stamp_path(self._run_id, self._attempt).write_text(
                f"{stamp.at} {stamp.count}\n")
        self._store.wake(self._run_id)

    async def close(self) -> None:
        self._file.close()
        self._store._writer_closed(self._run_id, self._attempt)


class FileLogs(LogStore):
    """Where logs live: <root>/<run id>/<attempt>.log."""

    def __init__(self, root: Path, limit: int = LOG_LIMIT) -> None:
        super().__init__(limit)
        self.root = root

    def path(self, run_id: str, attempt: int) -> Path:
        return self.root / run_id / f"{attempt}.log"

    def stamp_path(self, run_id: str, attempt: int) -> Path:
        return self.root / run_id / f"{attempt}.stamp"

    def location(self, run_id: str, attempt: int) -> str:
        return str(self.path(run_id, attempt))

    async def writer(self, run_id: str, attempt: int, masker: Masker) -> LogWriter:
        end = await self.stored_end(run_id, attempt)
        return LogWriter(_FileSink(self, run_id, attempt), masker, self.limit, end)

    async def stored_end(self, run_id: str, attempt: int) -> StoredEnd | None:
        path = self.path(run_id, attempt)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        with open(path, "rb") as handle:  # noqa: ASYNC230  (the last few hundred bytes)
            handle.seek(max(0, size - _END))
            last = handle.read().decode("utf-8", "replace").rstrip("\n").rpartition("\n")[2]
        stamp = None
        try:
            at, _, count = self.stamp_path(run_id, attempt).read_text().strip().partition(" ")
            stamp = Stamp(at, int(count))
        except (FileNotFoundError, ValueError):
            pass
        return StoredEnd(size, stamp, is_limit_marker(last))

    async def clear(self, run_id: str, attempt: int) -> None:
        self.path(run_id, attempt).unlink(missing_ok=True)
        self.stamp_path(run_id, attempt).unlink(missing_ok=True)

    def attempts(self, run_id: str) -> list[int]:
        folder = self.root / run_id
        if not folder.is_dir():
            return []
        return sorted(int(p.stem) for p in folder.glob("*.log") if p.stem.isdigit())

    def read_lines(self, run_id: str, attempt: int) -> Iterator[str]:
        path = self.path(run_id, attempt)
        if not path.exists():
            return
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                yield line.rstrip("\n")

    def read_text(self, run_id: str, attempt: int) -> Iterator[bytes]:
        try:
            handle = open(self.path(run_id, attempt), "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with handle:
            while chunk := handle.read(_CHUNK * 16):
                yield chunk

    def line_count(self, run_id: str, attempt: int) -> int:
        """Complete lines in the attempt's file so far (text mode: a lone carriage return ends
        a line too)."""
        path = self.path(run_id, attempt)
        if not path.exists():
            return 0
        count = 0
        with open(path, encoding="utf-8", errors="replace") as handle:
            while chunk := handle.read(_CHUNK):
                count += chunk.count("\n")
        return count

    async def follow_batches(
        self, run_id: str, attempt: int, finished: Callable[[], Awaitable[bool]],
        *, poll: float = 0.5, idle: float = 0.1,
    ) -> AsyncIterator[list[str]]:
        """A read per wake-up (up to a megabyte), not a line per step: live pages follow
        100,000-line logs."""
        path = self.path(run_id, attempt)
        follower = self._follower(run_id, attempt)
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
                if read_any or await woken(follower.event, idle):
                    continue  # still being written: no need to ask the store
                # Quiet for `idle`: ask the store (the writer may be another process), then
                # drain once more (the `finishing` branch), so no line before the end is lost.
                done = await finished()
                if not done:
                    await woken(follower.event, poll)
        finally:
            if handle is not None:
                handle.close()
            self._unfollow(run_id, follower)

    def delete(self, run_id: str) -> None:
        shutil.rmtree(self.root / run_id, ignore_errors=True)



