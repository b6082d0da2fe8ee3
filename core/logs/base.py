"""What every log store shares: the writer (lines, masking, the per-attempt limit), where a
stored log ends, and the followers woken by this process's writers."""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from core.masking import Masker

# A line longer than this is cut into pieces, so one runaway line cannot exhaust memory.
MAX_LINE = 64 * 1024
# How much log (masked text) one attempt keeps; what comes after is dropped.
LOG_LIMIT = 32 * 1024 * 1024
# jobbot's own lines start with this.
OWN = "[jobbot] "


def limit_marker(limit: int) -> str:
    """The last line of an attempt's log once it reached the limit."""
    return f"{OWN}log limit of {_size(limit)} reached: the rest of this attempt's output is dropped"


def is_limit_marker(line: str) -> bool:
    """Whether `line` is the marker an attempt's log ends with once it reached a limit."""
    return line.startswith(f"{OWN}log limit of ")


def _size(limit: int) -> str:
    mib = limit / (1024 * 1024)
    return f"{mib:g} MiB" if mib >= 1 else f"{limit} bytes"


@dataclass(frozen=True, slots=True)
class Stamp:
    """The source's timestamp of the last line written (normalised: it sorts as text), and how
    many lines in a row had exactly it: a copy that starts again skips what it already kept."""

    at: str
    count: int


@dataclass(frozen=True, slots=True)
class StoredEnd:
    """What is already stored of an attempt's log: its size, its last line's stamp if the
    source gave one, and whether it already reached the limit."""

    size: int
    stamp: Stamp | None
    full: bool


class Sink(abc.ABC):
    """Where a writer's masked text goes: whole lines, each ending in a newline."""

    @abc.abstractmethod
    def append(self, text: str, lines: int, stamp: Stamp | None) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class LogWriter:
    """Cuts output into lines, masks them and hands them to the store, up to the limit."""

    def __init__(self, sink: Sink, masker: Masker, limit: int,
                 end: StoredEnd | None = None) -> None:
        self._sink = sink
        self._masker = masker
        self._limit = limit
        self._used = end.size if end else 0
        self._full = bool(end and end.full)
        self.stamp = end.stamp if end else None
        self._partial = b""
        self._closed = False

    @property
    def full(self) -> bool:
        """Whether the attempt's log reached the limit (what is written now is dropped)."""
        return self._full

    def write(self, chunk: bytes, stamp: Stamp | None = None) -> None:
        """Append output; `stamp` is the source's timestamp of the last whole line in it."""
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        if lines:
            self._emit(lines, stamp)

    def line(self, text: str) -> None:
        """Write a line of jobbot's own (e.g. "attempt 2 started"), marked as such."""
        self._emit([f"{OWN}{text}".encode()], None)

    def _emit(self, lines: list[bytes], stamp: Stamp | None) -> None:
        if self._full or self._closed:
            return  # past the limit; or output still arriving from a copy that was stopped
        # Decoded and masked as one text, not line by line: a busy job writes thousands of
        # lines per read (and a secret spanning lines is masked too).
        text = self._masker.mask(b"\n".join(lines).decode("utf-8", "replace")) + "\n"
        size = len(text.encode())
        count = len(lines)
        if self._used + size > self._limit:
            text, count = self._fit(text)
            self._full = True
            text += limit_marker(self._limit) + "\n"
            count += 1
            size = len(text.encode())
        self._used += size
        if stamp is not None:
            self.stamp = stamp
        self._sink.append(text, count, self.stamp)

    def _fit(self, text: str) -> tuple[str, int]:
        """The whole lines of `text` that still fit under the limit."""
        room = self._limit - self._used
        kept: list[str] = []
        for line in text.splitlines(keepends=True):
            room -= len(line.encode())
            if room < 0:
                break
            kept.append(line)
        return "".join(kept), len(kept)

    async def close(self) -> None:
        if self._partial:
            self._emit([self._partial], None)
            self._partial = b""
        self._closed = True
        await self._sink.close()


@dataclass(eq=False)
class Follower:
    """One reader of an attempt's log: woken by each write of this process, told when its
    writer here closed."""

    attempt: int
    event: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False


class LogStore(abc.ABC):
    """Where attempts' logs live, keyed by run id (or a build's log key) and attempt."""

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self.limit = limit
        # One event per follower, so one follower's clear() never swallows another's wake-up.
        self._followers: dict[str, set[Follower]] = {}

    # -- writing --------------------------------------------------------------------------

    @abc.abstractmethod
    async def writer(self, run_id: str, attempt: int, masker: Masker) -> LogWriter:
        """A writer appending to the attempt's log (after whatever is stored already)."""

    @abc.abstractmethod
    async def stored_end(self, run_id: str, attempt: int) -> StoredEnd | None:
        """What the attempt's log holds already (None: nothing)."""

    @abc.abstractmethod
    async def clear(self, run_id: str, attempt: int) -> None:
        """Forget the attempt's log (to copy it again whole)."""

    @abc.abstractmethod
    def location(self, run_id: str, attempt: int) -> str:
        """Where the attempt's log is, as recorded with the attempt."""

    # -- reading --------------------------------------------------------------------------

    @abc.abstractmethod
    def attempts(self, run_id: str) -> list[int]:
        """The attempts that have a log."""

    @abc.abstractmethod
    def read_lines(self, run_id: str, attempt: int) -> Iterator[str]:
        """The attempt's lines without their newline, streamed."""

    @abc.abstractmethod
    def read_text(self, run_id: str, attempt: int) -> Iterator[bytes]:
        """The attempt's log as it is stored (UTF-8, already masked), in large pieces."""

    @abc.abstractmethod
    def line_count(self, run_id: str, attempt: int) -> int:
        """Complete lines stored so far, counted as `read_lines` and `follow` split them."""

    def tail(self, run_id: str, attempt: int, count: int) -> list[str]:
        return list(deque(self.read_lines(run_id, attempt), maxlen=count))

    async def read_batches(self, run_id: str, attempt: int,
                           size: int) -> AsyncIterator[list[str]]:
        """The attempt's lines in batches of `size`."""
        batch: list[str] = []
        for line in self.read_lines(run_id, attempt):
            batch.append(line)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def follow(
        self, run_id: str, attempt: int, finished: Callable[[], Awaitable[bool]],
        poll: float = 0.5,
    ) -> AsyncIterator[str]:
        """Yield lines as they are written until `finished()` and the log is drained."""
        async for lines in self.follow_batches(run_id, attempt, finished, poll=poll):
            for line in lines:
                yield line

    @abc.abstractmethod
    def follow_batches(
        self, run_id: str, attempt: int, finished: Callable[[], Awaitable[bool]],
        *, poll: float = 0.5, idle: float = 0.1,
    ) -> AsyncIterator[list[str]]:
        """The lines of each read as they are written, until the writer has closed (or, for a
        writer in another process, `finished()`) and the log is drained."""

    @abc.abstractmethod
    def delete(self, run_id: str) -> None:
        """Delete every attempt's log of the run."""

    def delete_runs(self, run_ids: list[str]) -> None:
        """Delete the logs of the runs history pruning deleted."""
        for run_id in run_ids:
            self.delete(run_id)

    # -- this process's followers ---------------------------------------------------------

    def _follower(self, run_id: str, attempt: int) -> Follower:
        follower = Follower(attempt)
        self._followers.setdefault(run_id, set()).add(follower)
        return follower

    def _unfollow(self, run_id: str, follower: Follower) -> None:
        followers = self._followers.get(run_id, set())
        followers.discard(follower)
        if not followers:
            self._followers.pop(run_id, None)

    def wake(self, run_id: str) -> None:
        for follower in self._followers.get(run_id, ()):
            follower.event.set()

    def _writer_closed(self, run_id: str, attempt: int) -> None:
        """This process wrote the attempt's last line: its followers need not ask the store."""
        for follower in self._followers.get(run_id, ()):
            if follower.attempt == attempt:
                follower.closed = True
                follower.event.set()


async def woken(event: asyncio.Event, within: float) -> bool:
    """Wait up to `within` seconds for `event`; True if it was set."""
    if event.is_set():
        return True
    try:
        # asyncio.timeout, not wait_for, which can swallow a cancellation in Python 3.11.
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        return False
    return True
