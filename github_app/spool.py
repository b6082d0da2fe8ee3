"""The delivery spool: answered deliveries appended to files, so an answer never waits for an index.

With SQLite, each delivery the webhook answers is appended here first, by one `os.write` in
a file of this process's own. Its row in the `deliveries` table (which redeliveries are checked
against) is written later, in a quiet spell between answers (github_app/journal.py). Like
SQLite's own commits with synchronous=NORMAL, an append outlives the process, not the machine.

Before the spool, the row and its 7-9 kB payload were committed on the event loop before the
answer, in groups: 26 us per delivery (a timeit of `Store.record_deliveries` in groups of 10
and 30), and the checkpoints that later copied those WAL pages into the database file cost as
much again. An answer also waited for its group's commit at the end of the loop's turn, after
every other request read in that turn. Now the answer path reads whether the id is known
(3 us) and appends (7-8 us), and the answer goes out in the turn its request was read in.

A file is deleted once every delivery in it has its row and has been handled. A process that
dies leaves its files behind; the next one to start hands their deliveries on and deletes them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import msgspec

from core.store import NewDelivery

logger = logging.getLogger(__name__)

SUFFIX = ".spool"
# A new file is begun once the current one is this large.
SEGMENT_BYTES = 64 * 1024 * 1024
# Each record: its length (4 bytes, little-endian), then the delivery as msgpack.
_LENGTH = struct.Struct("<I")
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(NewDelivery)


class DeliverySpool:
    """This process's spool files in `directory`, and what is still waiting in each."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        # One name per spool: a restarted jobbot in the same process (tests) starts afresh.
        self._name = uuid.uuid4().hex
        self._sequence = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._waiting: dict[str, Path] = {}
        self._counts: Counter[Path] = Counter()

    def append(self, deliveries: Sequence[NewDelivery]) -> None:
        """Write the deliveries down (one write); each waits in its file until `done`."""
        if not deliveries:
            return
        data = b"".join(map(_record, deliveries))
        fd, path = self._segment(len(data))
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write (a signal, a nearly full disk): go on
                written += os.write(fd, data[written:])
        except OSError:
            # Nothing half-written stays for a reader to stumble on: the records after it
            # would be read as part of it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._size += len(data)
        for delivery in deliveries:
            if delivery.id not in self._waiting:
                self._waiting[delivery.id] = path
                self._counts[path] += 1

    def done(self, delivery_ids: Iterable[str]) -> None:
        """These deliveries need their spool records no more; files left empty are deleted."""
        for delivery_id in delivery_ids:
            path = self._waiting.pop(delivery_id, None)
            if path is None:
                continue
            self._counts[path] -= 1
            if self._counts[path] == 0 and path != self._path:
                del self._counts[path]
                remove(path)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def others(self) -> list[Path]:
        """Spool files of other spools (other processes, or this one's earlier jobbot)."""
        if not self.directory.is_dir():
            return []
        mine = f"{self._name}-"
        return sorted(path for path in self.directory.glob(f"*{SUFFIX}")
                      if not path.name.startswith(mine))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None and self._counts[self._path] == 0:
            remove(self._path)
        self._path = None

    def _segment(self, adding: int) -> tuple[int, Path]:
        if self._fd is not None and self._path is not None and (
                self._size == 0 or self._size + adding <= self._segment_bytes):
            return self._fd, self._path
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        self._path = self.directory / f"{self._name}-{self._sequence:06d}{SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        return self._fd, self._path


def read(path: Path) -> Iterator[NewDelivery]:
    """The deliveries in a spool file, in order; a record cut short (the writer died) ends it."""
    data = path.read_bytes()
    offset = 0
    while offset + _LENGTH.size <= len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        start = offset + _LENGTH.size
        if start + length > len(data):
            logger.warning("%s: the last record is cut short; ignoring it", path)
            return
        try:
            yield _DECODER.decode(data[start:start + length])
        except msgspec.DecodeError:
            logger.warning("%s: an unreadable record at byte %d; ignoring the rest", path,
                           offset)
            return
        offset = start + length


def _record(delivery: NewDelivery) -> bytes:
    body = _ENCODER.encode(delivery)
    return _LENGTH.pack(len(body)) + body


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
