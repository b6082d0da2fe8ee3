"""The raw SQLite group-commit writes store exactly what SQLAlchemy would have stored."""

from __future__ import annotations

import itertools
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from core import sqlite_writes
from core.sqlite_writes import Checkpointer, Insert, RawWrite, known_keys
from core.store import SLACK_WORK, Store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    return store


def padded_rows(tag: str, count: int) -> list[dict[str, object]]:
    """Slack work rows of about 4 kB each: a page or more of WAL per row."""
    at = datetime(2026, 11, 22, tzinfo=UTC)
    return [{"key": f"{tag}-{i}", "kind": "command", "body": {"pad": "x" * 4000},
             "received_at": at, "done_at": None} for i in range(count)]


def stored(store: Store, key: str) -> tuple[object, ...]:
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT key, kind, body, received_at, done_at FROM slack_work "
                                "WHERE key = :key"), {"key": key}).one()
    return tuple(row)


def test_a_raw_row_is_stored_as_sqlalchemy_stores_it(sqlite_store: Store) -> None:
    at = datetime(2026, 3, 29, 1, 30, 5, 123456, tzinfo=UTC)
    body = {"text": "run hello", "nested": {"n": 1, "none": None}, "ü": "ß"}
    with sqlite_store.engine.begin() as conn:
        conn.execute(insert(SLACK_WORK), {"key": "orm", "kind": "command", "body": body,
                                          "received_at": at, "done_at": None})
    raw = RawWrite(sqlite_store.engine)
    columns = ["key", "kind", "body", "received_at", "done_at"]
    with raw.transaction() as cursor:
        Insert(SLACK_WORK, columns, sqlite_store.engine).execute(
            cursor, [{"key": "raw", "kind": "command", "body": body, "received_at": at,
                      "done_at": None}])
    assert stored(sqlite_store, "raw")[1:] == stored(sqlite_store, "orm")[1:]
    (work,) = [w for w in sqlite_store.unfinished_slack_work(datetime(2027, 1, 1, tzinfo=UTC))
               if w.key == "raw"]
    assert (work.body, work.received_at, work.done_at) == (body, at, None)


def test_a_failed_transaction_writes_nothing(sqlite_store: Store) -> None:
    raw = RawWrite(sqlite_store.engine)
    columns = ["key", "kind", "body", "received_at", "done_at"]
    row = {"key": "k1", "kind": "command", "body": {}, "received_at": datetime.now(UTC),
           "done_at": None}

    def fail_half_way() -> None:
        with raw.transaction() as cursor:
            Insert(SLACK_WORK, columns, sqlite_store.engine).execute(cursor, [row])
            raise RuntimeError("the batch failed half-way")

    with pytest.raises(RuntimeError):
        fail_half_way()
    with raw.transaction() as cursor:
        assert known_keys(cursor, SLACK_WORK, "key", ["k1"]) == set()
        Insert(SLACK_WORK, columns, sqlite_store.engine).execute(cursor, [row])
    with raw.transaction() as cursor:
        # Lookups go in chunks: more keys than one statement may bind.
        keys = [f"x{i}" for i in range(1200)] + ["k1"]
        assert known_keys(cursor, SLACK_WORK, "key", keys) == {"k1"}


def test_raw_writes_are_for_sqlite_only(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(ValueError, match="SQLite"):
        RawWrite(engine)


def test_raw_commits_leave_the_checkpoint_to_the_checkpointer_thread(tmp_path: Path) -> None:
    # A checkpoint copies the WAL into the database file: the file grows only when one runs.
    path = tmp_path / "jobbot.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    with store.engine.begin() as conn:  # a checkpoint now, so the next ones show
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    size = path.stat().st_size
    columns = ["key", "kind", "body", "received_at", "done_at"]
    raw = RawWrite(store.engine)

    class SizeAtCommit:
        sizes: list[int] = []

        def committed(self) -> None:
            self.sizes.append(path.stat().st_size)

        def close(self) -> None:
            pass

    raw._checkpointer = SizeAtCommit()  # type: ignore[assignment]
    with raw.transaction() as cursor:
        assert cursor.connection.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        Insert(SLACK_WORK, columns, store.engine).execute(cursor, padded_rows("raw", 100))
    assert SizeAtCommit.sizes == [size]  # the commit itself copied nothing
    assert not Checkpointer(store.engine, threshold=10_000)._wal_may_be_large()
    checkpointer = Checkpointer(store.engine, threshold=100)
    assert checkpointer._wal_may_be_large()  # a page or more for each of the 100 rows
    checkpointer.committed()
    deadline = time.monotonic() + 30
    while path.stat().st_size < size + 80 * 4096 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.stat().st_size >= size + 80 * 4096  # the checkpointer thread did: 100 rows
    checkpointer.close()
    raw.close()
    store.close()


def test_the_checkpointer_waits_between_checkpoints_and_stops_on_close(
        sqlite_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[float] = []
    checkpointer = Checkpointer(sqlite_store.engine, every=0.2, threshold=0)
    real = sqlite_writes._detached

    def counting(engine: object) -> object:
        connection = real(engine)  # type: ignore[arg-type]

        class Counting:
            def execute(self, sql: str) -> object:
                made.append(time.monotonic())
                return connection.execute(sql)

            def close(self) -> None:
                connection.close()

        return Counting()

    monkeypatch.setattr(sqlite_writes, "_detached", counting)
    for _ in range(50):
        checkpointer.committed()
        time.sleep(0.01)
    checkpointer.close()
    assert 1 <= len(made) <= 3  # 0.5 s of commits, a checkpoint every 0.2 s
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(made))
    count = len(made)
    checkpointer.committed()  # closed: no thread starts again
    time.sleep(0.05)
    assert len(made) == count


def test_each_thread_keeps_its_own_connection_until_close(sqlite_store: Store) -> None:
    raw = RawWrite(sqlite_store.engine)

    def connection_of_a_transaction() -> object:
        with raw.transaction() as cursor:
            return cursor.connection

    first = connection_of_a_transaction()
    assert connection_of_a_transaction() is first  # kept open for the next commit
    with ThreadPoolExecutor(max_workers=1) as other_thread:
        other = other_thread.submit(connection_of_a_transaction).result()
    assert other is not first
    raw.close()
    for connection in (first, other):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            connection.execute("SELECT 1")  # type: ignore[attr-defined]


def test_a_quiet_checkpointer_empties_the_wal_file_once_no_reader_is_in_it(
        tmp_path: Path) -> None:
    path = tmp_path / "jobbot.db"
    wal = Path(f"{path}-wal")
    store = Store(f"sqlite:///{path}")
    store.migrate()
    raw = RawWrite(store.engine)
    insert_rows = Insert(SLACK_WORK, ["key", "kind", "body", "received_at", "done_at"],
                         store.engine)

    def write(tag: str, count: int) -> None:
        with raw.transaction() as cursor:
            insert_rows.execute(cursor, padded_rows(tag, count))

    write("first", 1)
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM slack_work").fetchall()  # a snapshot in the log
    checkpointer = Checkpointer(store.engine, every=0.02, threshold=16)
    for batch in range(10):
        write(f"burst{batch}", 50)
        checkpointer.committed()  # its PASSIVE checkpoints copy what they may
        time.sleep(0.03)
    grown = wal.stat().st_size
    assert grown > 1024 * 1024  # 500 rows of 4 kB: the reader keeps the log from restarting
    time.sleep(0.2)  # quiet turns: TRUNCATE tries, and gives up while the reader is in
    assert wal.stat().st_size == grown
    assert reader.execute("SELECT count(*) FROM slack_work").fetchone() == (1,)
    reader.rollback()
    reader.close()
    deadline = time.monotonic() + 30
    while wal.stat().st_size > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert wal.stat().st_size == 0
    checkpointer.close()
    with store.engine.connect() as conn:  # every row is in the database file now
        assert conn.execute(text("SELECT count(*) FROM slack_work")).scalar() == 501
    raw.close()
    store.close()
