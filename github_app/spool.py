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

A file is deleted once every delivery in it has its row and has been handled, and it is no
longer the file being written to. A process that dies leaves its files behind, unlocked; the
next one to start hands their deliveries on and deletes them.
"""

from __future__ import annotations

import fcntl
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
    """This process's spool files in `directory`, and what is still waiting in each.

    Every file of a live spool is held open with an exclusive `flock` until it is deleted, so
    another process can tell a dead writer's files by taking that lock (`claim_dead`): the
    lock goes with the process, whatever its host name or process id was.
    """

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        # One name per spool: a restarted jobbot in the same process (tests) starts afresh.
        self._name = uuid.uuid4().hex
        self._sequence = 0
        self._path: Path | None = None
        self._size = 0
        # Every file this spool holds (locked): its own, and dead spools' files it claimed.
        self._fds: dict[Path, int] = {}
        self._waiting: dict[str, Path] = {}
        self._counts: Counter[Path] = Counter()

    def append(self, deliveries: Sequence[NewDelivery]) -> None:
        """Write the deliveries down (one write); each waits in its file until `done`."""
        if not deliveries:
            return
        data = b"".join(map(_record, deliveries))
        path = self._segment(len(data))
        fd = self._fds[path]
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write (a signal, a nearly full disk): go on
                written += os.write(fd, data[written:])
        except OSError:
            # Nothing half-written stays for a reader to stumble on: the records after it
            # would be read as part of it. If even that fails, the file takes no more.
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                self._end_segment()
            raise
        self._size += len(data)
        for delivery in deliveries:
            if delivery.id not in self._waiting:
                self._waiting[delivery.id] = path
                self._counts[path] += 1

    def sync(self) -> None:
        """Until what was appended is on the disk (for deliveries whose other copy goes)."""
        if self._path is not None:
            os.fsync(self._fds[self._path])
            directory = os.open(self.directory, os.O_RDONLY)  # and the file's name in it
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def done(self, delivery_ids: Iterable[str]) -> None:
        """These deliveries need their spool records no more; files left empty are deleted."""
        for delivery_id in delivery_ids:
            path = self._waiting.pop(delivery_id, None)
            if path is None:
                continue
            self._counts[path] -= 1
            if self._counts[path] == 0 and path != self._path:
                self._let_go(path)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def claim_dead(self) -> list[Path]:
        """Other spools' files whose writers have died (their lock was free), locked for this
        spool until `release`: a second process starting at the same moment passes them by."""
        if not self.directory.is_dir():
            return []
        claimed = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path in self._fds:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # its writer finished with it meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer holds it
                os.close(fd)
                continue
            if not os.path.exists(path):  # deleted by its writer before our lock
                os.close(fd)
                continue
            self._fds[path] = fd
            claimed.append(path)
        return claimed

    def release(self, paths: Iterable[Path]) -> None:
        """Delete claimed files whose deliveries are in this spool's own now."""
        for path in paths:
            self._let_go(path)

    def close(self) -> None:
        """Let go of every file; files with deliveries still waiting stay for the next jobbot."""
        self._end_segment()
        for path in list(self._fds):
            self._let_go(path, delete=False)

    def _segment(self, adding: int) -> Path:
        if self._path is not None and (
                self._size == 0 or self._size + adding <= self._segment_bytes):
            return self._path
        self._end_segment()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        name = f"{self._name}-{self._sequence:06d}{SUFFIX}"
        # Locked before it has its name: no one sees this file unlocked and takes it for dead.
        hidden = self.directory / f".{name}.new"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = self.directory / name
            os.rename(hidden, path)
        except OSError:
            os.close(fd)
            remove(hidden)
            raise
        self._fds[path] = fd
        self._path, self._size = path, 0
        return path

    def _end_segment(self) -> None:
        """Write no more to the current file (deleted if nothing in it waits)."""
        path, self._path = self._path, None
        if path is not None and self._counts[path] == 0:
            self._let_go(path)

    def _let_go(self, path: Path, *, delete: bool = True) -> None:
        self._counts.pop(path, None)
        if delete:
            remove(path)  # before the lock goes, so no one claims a file being deleted
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)


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
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:  # a read-only or failing disk: the file is left, the work goes on
        logger.warning("could not delete spool file %s: %s", path, exc)
