"""The answer-path group commits on SQLite, written through the DBAPI connection.

Slack and GitHub wait for jobbot's answer, and jobbot records each request before answering
(core/group_commit.py). Through SQLAlchemy's statement machinery such a transaction cost about
1.2 ms of Python per commit (cache keys, execution contexts, result objects), all of it holding
the GIL the event loop needs to answer; the same rows written here cost about a tenth of that,
most of it inside sqlite3 with the GIL released (measured with a 7 kB push payload; see
bench/github_webhook.py). The tables stay SQLModel's; each value still goes through its
column type's own conversion, so rows read back exactly as if SQLAlchemy had written them.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table

from core.group_commit import WriteLocked

logger = logging.getLogger(__name__)

# SQLite allows 32,766 bound parameters per statement; lookups go in chunks well below that.
CHUNK = 500
# Pages the WAL may grow to before a commit copies it into the database file (a checkpoint).
WAL_AUTOCHECKPOINT = 10_000
# SQLite's default page size, which jobbot's databases keep.
PAGE_SIZE = 4096
# Seconds between the checkpoints the checkpointer thread makes after raw commits.
CHECKPOINT_EVERY = 1.0


def _detached(engine: Engine) -> Any:
    """A DBAPI connection of the engine's (set up by its connect hook), out of the pool for good."""
    fairy = engine.raw_connection()
    fairy.detach()
    connection = fairy.dbapi_connection
    assert connection is not None  # just checked out
    return connection


class Checkpointer:
    """Copies the WAL into the database file for the raw commits, which never do it themselves:
    in a thread of its own, at most every `every` seconds while they go on, once the WAL file
    has reached `threshold` pages (SQLite's own autocheckpoint threshold, but off the commit).

    Without it the WAL grew without end whenever the raw commits were the only writes (660 MB
    after 40,000 GitHub deliveries in bench.github_webhook, the database file still empty).
    PASSIVE: it never waits for, nor blocks, a reader or a writer; what it could not copy
    this time, the next one does. The WAL starts again from its beginning only once a
    checkpoint has copied it all while no reader used it: under a long burst with readers
    always busy it still grows, more slowly (343 MB in the same run, the rows in the file).

    SQLite then reuses the file but never shrinks it. Once a turn finds no raw commit since
    the last one, a TRUNCATE checkpoint copies the rest and empties the file, if no reader
    is in the log at that moment (else it gives up at once and tries again on the next
    quiet turn); writers that come meanwhile wait for it, as for any checkpoint. Never in a
    commit: SQLite's own journal_size_limit cuts the file in the first commit after the log
    starts again, and cutting 160 MB there held up the answers waiting for it
    (bench.github_webhook --deliveries 20000 --rounds 4: round p99 of 47.5 and 94.3 ms,
    against 9-18 ms).
    """

    def __init__(self, engine: Engine, every: float = CHECKPOINT_EVERY,
                 threshold: int = WAL_AUTOCHECKPOINT) -> None:
        self._engine = engine
        self._every = every
        self._threshold = threshold
        database = engine.url.database
        self._wal = Path(f"{database}-wal") if database and database != ":memory:" else None
        self._dirty = False
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """A raw commit added to the WAL: the thread looks at it on its next turn. No wake-up
        here: the first commit of a burst waking the thread made it contend for the GIL with
        the burst's answers (2-4 ms more p99 per round in bench.slack_ack)."""
        self._dirty = True
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closing.is_set():
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="sqlite-checkpoint")
                    self._thread.start()

    def _run(self) -> None:
        connection = _detached(self._engine)
        # A TRUNCATE checkpoint waits for readers and writers through the busy handler, and
        # keeps new writers out meanwhile: here it gives up at once instead.
        connection.execute("PRAGMA busy_timeout=0")
        try:
            while not self._closing.wait(self._every):
                if not self._wal_may_be_large():
                    continue
                busy, self._dirty = self._dirty, False
                mode = "PASSIVE" if busy else "TRUNCATE"
                try:
                    connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
                except sqlite3.Error as exc:  # the next turn tries again
                    self._dirty = self._dirty or busy
                    logger.warning("checkpointing the SQLite WAL failed: %s", exc)
        finally:
            connection.close()

    def _wal_may_be_large(self) -> bool:
        """False while the WAL file is smaller than `threshold` pages: then it cannot hold that
        many. Only its size is read: opening and closing a file SQLite has locked would drop
        the process's POSIX locks on it (a -shm file read that way crashed jobbot with SIGBUS
        in bench.slack_ack once another connection reset the file)."""
        if self._wal is None:
            return True
        try:
            return self._wal.stat().st_size >= self._threshold * PAGE_SIZE
        except FileNotFoundError:
            return False

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)


class RawWrite:
    """Write transactions (BEGIN IMMEDIATE ... COMMIT) on a connection of the calling thread's
    own, kept open: each answer-path writer (a thread, or the event loop) reuses its own."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "sqlite":
            raise ValueError("RawWrite is for SQLite; other databases go through SQLAlchemy")
        self._engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []
        self._checkpointer = Checkpointer(engine)

    def _connection(self, wait: bool) -> Any:
        connection = getattr(self._local, _slot(wait), None)
        if connection is None:
            # Out of the pool for good (the engine's connect hook has set it up): a pooled
            # checkout and check-in around every commit, and setting the checkpoint PRAGMA
            # there and back, were five more calls into sqlite3, each of which gives up the
            # GIL and waits for it again while the event loop answers (py-spy in
            # bench.github_webhook: they took as long as the COMMIT itself).
            connection = _detached(self._engine)
            # Never a checkpoint in these commits: copying 10,000 WAL pages into the database
            # file takes tens of milliseconds, and every request in the group waits for its
            # commit (bench.github_webhook: the slowest 1% of answers were those). The
            # checkpointer thread does it instead.
            connection.execute("PRAGMA wal_autocheckpoint=0")
            if not wait:  # SQLITE_BUSY at once when another connection holds the write lock
                connection.execute("PRAGMA busy_timeout=0")
            with self._lock:
                self._opened.append(connection)
            setattr(self._local, _slot(wait), connection)
        return connection

    @contextlib.contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[Any]:
        """A DBAPI cursor inside a write transaction: committed on success, else rolled back.
        With `wait=False` (the event loop's writes) it raises WriteLocked, having written
        nothing, when another connection holds the write lock, instead of waiting for it."""
        connection = self._connection(wait)
        cursor = connection.cursor()
        try:
            # IMMEDIATE, as Store._write: take the write lock now (busy_timeout queues us).
            try:
                cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not wait and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                    raise WriteLocked(str(exc)) from exc
                raise
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
            self._checkpointer.committed()
        except BaseException:
            if connection.in_transaction:  # not even ROLLBACK worked: start afresh next time
                setattr(self._local, _slot(wait), None)
                with self._lock:
                    self._opened.remove(connection)
                with contextlib.suppress(Exception):
                    connection.close()
            raise
        finally:
            cursor.close()

    def read(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """The rows of one statement on the calling thread's connection, outside any
        transaction: it reads the newest commit (WAL: readers never wait for the writer)."""
        return list(self._connection(wait=True).execute(sql, parameters).fetchall())

    def close(self) -> None:
        """Close every thread's connection (each writer thread has stopped by then)."""
        self._checkpointer.close()
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            with contextlib.suppress(Exception):
                connection.close()


def _slot(wait: bool) -> str:
    """A thread keeps a connection for each kind of write: one waits for the lock, one not."""
    return "waiting" if wait else "not_waiting"


class Insert:
    """`INSERT INTO table (columns) VALUES (?, ...)`, with rows converted by the column types;
    with `conflict` and `update`, rows meeting an existing `conflict` key update those columns
    (only where the SQL condition `only_if` holds, if given)."""

    def __init__(self, table: Table, columns: Sequence[str], engine: Engine, *,
                 conflict: Sequence[str] = (), update: Sequence[str] = (),
                 only_if: str | None = None) -> None:
        self.sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})")
        if conflict:
            changes = ", ".join(f"{name} = excluded.{name}" for name in update)
            self.sql += f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {changes}"
            if only_if:
                self.sql += f" WHERE {only_if}"
        self._columns = tuple(columns)
        converters: list[Callable[[Any], Any] | None] = [
            # The dialect's own variant of each type (SQLite's DATETIME, JSON), as SQLAlchemy
            # itself converts bound values.
            table.c[name].type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
            for name in columns]
        self._converters = tuple(converters)

    def rows(self, rows: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return [tuple(value if convert is None else convert(value)
                      for convert, value in zip(self._converters,
                                                (row[name] for name in self._columns),
                                                strict=True))
                for row in rows]

    def execute(self, cursor: Any, rows: Iterable[Mapping[str, Any]]) -> None:
        cursor.executemany(self.sql, self.rows(rows))


def known_keys(cursor: Any, table: Table, column: str, keys: Sequence[str]) -> set[str]:
    """Which of `keys` the table's `column` already holds."""
    known: set[str] = set()
    for start in range(0, len(keys), CHUNK):
        chunk = list(keys[start:start + CHUNK])
        marks = ", ".join("?" for _ in chunk)
        cursor.execute(f"SELECT {column} FROM {table.name} WHERE {column} IN ({marks})", chunk)
        known.update(row[0] for row in cursor.fetchall())
    return known
