"""Logs in the database (with PostgreSQL): every replica writes and reads the same log.

A writer appends what it is given as a chunk (already masked) at most every FLUSH_DELAY,
in order by `seq`; when it closes, the attempt's chunks are merged into one compressed row.
Readers keep a cursor (the last seq read, and the line reached); a follower in the writer's
process is woken by each chunk, one in another process polls its cursor every `poll`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

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
from core.store.logs import ChunkRow, LogChunkStore, LogEnd

logger = logging.getLogger(__name__)

# How long a writer gathers output before it stores a chunk, and how much it gathers at most.
FLUSH_DELAY = 0.05
FLUSH_SIZE = 1024 * 1024
# Chunks read per query.
_PAGE = 64


def chunk_lines(row: ChunkRow) -> list[str]:
    """A chunk's lines, split as files are read (a lone carriage return ends a line too)."""
    text = row.text.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    lines.pop()  # a chunk ends with a newline
    return lines


def _stored(end: LogEnd | None) -> StoredEnd | None:
    if end is None:
        return None
    stamp = Stamp(end.stamp, end.stamp_lines) if end.stamp else None
    return StoredEnd(end.size, stamp, is_limit_marker(end.last_line))


class _DatabaseSink(Sink):
    """Gathers masked text and stores it as chunks from a task of its own."""

    def __init__(self, logs: DatabaseLogs, run_id: str, attempt: int, seq: int,
                 line: int) -> None:
        self._logs = logs
        self._run_id = run_id
        self._attempt = attempt
        self._seq = seq
        self._line = line
        self._buffer: list[str] = []
        self._size = 0
        self._stamp: Stamp | None = None
        self._pending = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"log-{run_id}-{attempt}")

    def append(self, text: str, lines: int, stamp: Stamp | None) -> None:
        self._buffer.append(text)
        self._size += len(text)
        self._stamp = stamp
        self._pending.set()

    async def _run(self) -> None:
        while not self._closing:
            await self._pending.wait()
            if self._size < FLUSH_SIZE and not self._closing:
                await asyncio.sleep(FLUSH_DELAY)
            self._pending.clear()
            if not await self._flush():
                await asyncio.sleep(1.0)  # the database is away: keep the text, try again
                self._pending.set()

    async def _flush(self) -> bool:
        if not self._buffer:
            return True
        taken = len(self._buffer)
        text = "".join(self._buffer[:taken]).encode()
        lines = chunk_lines(ChunkRow(0, 0, 0, text))
        stamp = self._stamp
        try:
            await asyncio.to_thread(
                self._logs.store.append_log_chunk, self._run_id, self._attempt, self._seq + 1,
                self._line, len(lines), text, stamp.at if stamp else None,
                stamp.count if stamp else 0)
        except Exception:
            logger.exception("storing a log chunk of run %s failed", self._run_id,
                             extra={"run_id": self._run_id})
            return False
        # Only what was stored leaves the buffer (more may have been appended meanwhile).
        self._size -= sum(len(piece) for piece in self._buffer[:taken])
        del self._buffer[:taken]
        self._seq += 1
        self._line += len(lines)
        self._logs.wake(self._run_id)
        return True

    async def close(self) -> None:
        self._closing = True
        self._pending.set()
        await asyncio.gather(self._task, return_exceptions=True)
        if not await self._flush():
            logger.error("%s bytes of the log of run %s (attempt %s) were not stored",
                         self._size, self._run_id, self._attempt,
                         extra={"run_id": self._run_id})
        try:
            await asyncio.to_thread(self._logs.store.compact_log, self._run_id, self._attempt)
        except Exception:
            logger.exception("compacting the log of run %s failed", self._run_id,
                             extra={"run_id": self._run_id})
        self._logs._writer_closed(self._run_id, self._attempt)


class DatabaseLogs(LogStore):
    """Logs as rows of the `log_chunks` table."""

    def __init__(self, store: LogChunkStore, limit: int = LOG_LIMIT) -> None:
        super().__init__(limit)
        self.store = store

    def location(self, run_id: str, attempt: int) -> str:
        return f"database:{run_id}/{attempt}"

    async def writer(self, run_id: str, attempt: int, masker: Masker) -> LogWriter:
        end = await asyncio.to_thread(self.store.log_end, run_id, attempt)
        sink = _DatabaseSink(self, run_id, attempt, end.seq if end else 0,
                             end.lines if end else 0)
        return LogWriter(sink, masker, self.limit, _stored(end))

    async def stored_end(self, run_id: str, attempt: int) -> StoredEnd | None:
        return _stored(await asyncio.to_thread(self.store.log_end, run_id, attempt))

    async def clear(self, run_id: str, attempt: int) -> None:
        await asyncio.to_thread(self.store.delete_log, run_id, attempt)

    def attempts(self, run_id: str) -> list[int]:
        return self.store.log_attempts(run_id)

    def _rows(self, run_id: str, attempt: int) -> Iterator[ChunkRow]:
        seq = 0
        while True:
            rows = self.store.log_chunks_after(run_id, attempt, seq, _PAGE)
            yield from rows
            if len(rows) < _PAGE:
                return
            seq = rows[-1].seq

    def read_lines(self, run_id: str, attempt: int) -> Iterator[str]:
        for row in self._rows(run_id, attempt):
            yield from chunk_lines(row)

    def read_text(self, run_id: str, attempt: int) -> Iterator[bytes]:
        for row in self._rows(run_id, attempt):
            yield row.text

    def line_count(self, run_id: str, attempt: int) -> int:
        return self.store.log_line_count(run_id, attempt)

    async def read_batches(self, run_id: str, attempt: int,
                           size: int) -> AsyncIterator[list[str]]:
        """A query per page of chunks, off the event loop."""
        seq = 0
        while True:
            rows = await asyncio.to_thread(self.store.log_chunks_after, run_id, attempt, seq,
                                           _PAGE)
            batch: list[str] = []
            for row in rows:
                batch.extend(chunk_lines(row))
                if len(batch) >= size:
                    yield batch
                    batch = []
            if batch:
                yield batch
            if len(rows) < _PAGE:
                return
            seq = rows[-1].seq

    async def follow_batches(
        self, run_id: str, attempt: int, finished: Callable[[], Awaitable[bool]],
        *, poll: float = 0.5, idle: float = 0.1,
    ) -> AsyncIterator[list[str]]:
        follower = self._follower(run_id, attempt)
        seq = line = 0
        try:
            done = False
            while True:
                # Cleared before reading, and `closed` read first, as with files.
                follower.event.clear()
                finishing = done or follower.closed
                read_any = False
                while True:
                    rows = await asyncio.to_thread(self.store.log_chunks_after, run_id,
                                                   attempt, seq, _PAGE)
                    for row in rows:
                        lines = chunk_lines(row)
                        # A compacted row starts before the cursor: skip what was read.
                        if line > row.first_line:
                            lines = lines[line - row.first_line:]
                        seq, line = row.seq, max(line, row.first_line + row.lines)
                        if lines:
                            read_any = True
                            yield lines
                    if len(rows) < _PAGE:
                        break
                if finishing:
                    return
                if read_any or await woken(follower.event, idle):
                    continue
                done = await finished()
                if not done:
                    await woken(follower.event, poll)
        finally:
            self._unfollow(run_id, follower)

    def delete(self, run_id: str) -> None:
        self.store.delete_logs([run_id])

    def delete_runs(self, run_ids: list[str]) -> None:
        """Pruning deleted their chunks with the runs already; this catches any written since."""
        self.store.delete_logs(run_ids)
