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
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Table

# SQLite allows 32,766 bound parameters per statement; lookups go in chunks well below that.
CHUNK = 500
# Pages the WAL may grow to before a commit copies it into the database file (a checkpoint).
WAL_AUTOCHECKPOINT = 10_000


class RawWrite:
    """Write transactions (BEGIN IMMEDIATE ... COMMIT) on a connection of the calling thread's
    own, kept open: each answer-path writer is one thread, and it reuses its connection."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "sqlite":
            raise ValueError("RawWrite is for SQLite; other databases go through SQLAlchemy")
        self._engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Any] = []

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # Out of the pool for good (the engine's connect hook has set it up): a pooled
            # checkout and check-in around every commit, and setting the checkpoint PRAGMA
            # there and back, were five more calls into sqlite3, each of which gives up the
            # GIL and waits for it again while the event loop answers (py-spy in
            # bench.github_webhook: they took as long as the COMMIT itself).
            fairy = self._engine.raw_connection()
            fairy.detach()
            connection = fairy.dbapi_connection
            assert connection is not None  # just checked out
            # Never a checkpoint in these commits: copying 10,000 WAL pages into the database
            # file takes tens of milliseconds, and every request in the group waits for its
            # commit (bench.github_webhook: the slowest 1% of answers were those). The other
            # connections' commits (the work done after the answer) checkpoint as usual.
            connection.execute("PRAGMA wal_autocheckpoint=0")
            with self._lock:
                self._opened.append(connection)
            self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A DBAPI cursor inside a write transaction: committed on success, else rolled back."""
        connection = self._connection()
        cursor = connection.cursor()
        try:
            # IMMEDIATE, as Store._write: take the write lock now (busy_timeout queues us).
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:  # not even ROLLBACK worked: start afresh next time
                self._local.connection = None
                with self._lock:
                    self._opened.remove(connection)
                with contextlib.suppress(Exception):
                    connection.close()
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        """Close every thread's connection (each writer thread has stopped by then)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            with contextlib.suppress(Exception):
                connection.close()


class Insert:
    """`INSERT INTO table (columns) VALUES (?, ...)`, with rows converted by the column types;
    with `conflict` and `update`, rows meeting an existing `conflict` key update those columns."""

    def __init__(self, table: Table, columns: Sequence[str], engine: Engine, *,
                 conflict: Sequence[str] = (), update: Sequence[str] = ()) -> None:
        self.sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})")
        if conflict:
            changes = ", ".join(f"{name} = excluded.{name}" for name in update)
            self.sql += f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {changes}"
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
