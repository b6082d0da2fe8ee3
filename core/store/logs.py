"""Log chunks: attempts' logs kept in the database (with PostgreSQL), appended in order,
merged into one compressed row once written, deleted with their runs."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select

from core.store.base import LOG_CHUNKS, StoreBase, chunks


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A stored piece of a log, its text uncompressed."""

    seq: int
    first_line: int
    lines: int
    text: bytes


@dataclass(frozen=True, slots=True)
class LogEnd:
    """Where an attempt's stored log ends: the next piece's seq and first line, its size, the
    source timestamp of its last line (and how many lines had it), and its last line."""

    seq: int
    lines: int
    size: int
    stamp: str | None
    stamp_lines: int
    last_line: str


def _text(data: bytes, compressed: bool) -> bytes:
    return zlib.decompress(data) if compressed else bytes(data)


class LogChunkStore(StoreBase):
    """Appending, reading, compacting and deleting log chunks."""

    def append_log_chunk(self, run_id: str, attempt: int, seq: int, first_line: int,
                         lines: int, text: bytes, stamp: str | None, stamp_lines: int) -> None:
        with self._writing() as conn:
            conn.execute(insert(LOG_CHUNKS).values(
                run_id=run_id, attempt=attempt, seq=seq, first_line=first_line, lines=lines,
                size=len(text), data=text, compressed=False, stamp=stamp,
                stamp_lines=stamp_lines))

    def log_chunks_after(self, run_id: str, attempt: int, seq: int,
                         limit: int = 64) -> list[ChunkRow]:
        """Up to `limit` pieces with a seq above `seq`, in order."""
        c = LOG_CHUNKS.c
        with self._reading() as conn:
            rows = conn.execute(
                select(c.seq, c.first_line, c.lines, c.data, c.compressed)
                .where(c.run_id == run_id, c.attempt == attempt, c.seq > seq)
                .order_by(c.seq).limit(limit)).all()
        return [ChunkRow(r.seq, r.first_line, r.lines, _text(r.data, r.compressed))
                for r in rows]

    def log_attempts(self, run_id: str) -> list[int]:
        c = LOG_CHUNKS.c
        with self._reading() as conn:
            return sorted(conn.execute(select(c.attempt).distinct()
                                       .where(c.run_id == run_id)).scalars())

    def log_line_count(self, run_id: str, attempt: int) -> int:
        c = LOG_CHUNKS.c
        with self._reading() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(c.lines), 0))
                                    .where(c.run_id == run_id, c.attempt == attempt))
                       .scalar_one())

    def log_end(self, run_id: str, attempt: int) -> LogEnd | None:
        """Where the attempt's stored log ends (None if nothing is stored)."""
        c = LOG_CHUNKS.c
        with self._reading() as conn:
            size = conn.execute(select(func.sum(c.size))
                                .where(c.run_id == run_id, c.attempt == attempt)).scalar()
            if size is None:
                return None
            last = conn.execute(
                select(c.seq, c.first_line, c.lines, c.data, c.compressed, c.stamp,
                       c.stamp_lines)
                .where(c.run_id == run_id, c.attempt == attempt)
                .order_by(c.seq.desc()).limit(1)).one()
        text = _text(last.data, last.compressed).decode("utf-8", "replace")
        last_line = text.rstrip("\n").rpartition("\n")[2]
        return LogEnd(last.seq, last.first_line + last.lines, int(size), last.stamp,
                      last.stamp_lines, last_line)

    def compact_log(self, run_id: str, attempt: int) -> None:
        """Merge the attempt's pieces into one compressed row (in one transaction), keeping the
        last piece's seq, so readers part way through go on from the right line."""
        c = LOG_CHUNKS.c
        mine = (c.run_id == run_id, c.attempt == attempt)
        with self._writing() as conn:
            rows = conn.execute(select(LOG_CHUNKS).where(*mine).order_by(c.seq)
                                .with_for_update()).all()
            if len(rows) < 2 and all(r.compressed for r in rows):
                return
            text = b"".join(_text(r.data, r.compressed) for r in rows)
            last = rows[-1]
            # Only the rows merged: a copy resumed elsewhere may have appended one since.
            conn.execute(delete(LOG_CHUNKS).where(*mine, c.seq <= last.seq))
            conn.execute(insert(LOG_CHUNKS).values(
                run_id=run_id, attempt=attempt, seq=last.seq, first_line=rows[0].first_line,
                lines=sum(r.lines for r in rows), size=len(text),
                data=zlib.compress(text, 6), compressed=True, stamp=last.stamp,
                stamp_lines=last.stamp_lines))

    def delete_logs(self, run_ids: Sequence[str]) -> None:
        with self._writing() as conn:
            for chunk in chunks(list(run_ids)):
                conn.execute(delete(LOG_CHUNKS).where(LOG_CHUNKS.c.run_id.in_(chunk)))

    def delete_log(self, run_id: str, attempt: int) -> None:
        c = LOG_CHUNKS.c
        with self._writing() as conn:
            conn.execute(delete(LOG_CHUNKS).where(c.run_id == run_id, c.attempt == attempt))
