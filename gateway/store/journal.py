"""The journal: every raw read, committed before its reader is acknowledged (invariant 1).

A read the reader sends again (same reader, sequence number AND content) is recognised and not stored twice;
the database enforces the same identity (schema v3). Lines no format could parse are kept in
`rejected_lines`, in the same transaction as the reads that arrived with them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway import failpoints
from gateway.errors import StorageError
from gateway.log import get_logger
from gateway.model import Read
from gateway.store.db import Columns, Database, from_text, insert_rows, keyed_chunks, now, to_text

log = get_logger("gateway.store")

ORIGINS = ("reader", "manual")
_INSERT_READS = (
    "INSERT INTO reads (link, reader, seq, reader_ts, received_at, chip, bib, antenna, rssi, raw, origin, seen) VALUES "
)


@dataclass(frozen=True)
class JournaledRead:
    """A row of `reads` as the pipeline sees it."""

    id: int
    link: str
    reader: str
    seq: int | None
    timestamp: datetime
    received_at: datetime
    chip: str | None
    bib: str | None
    antenna: int | None
    rssi: float | None
    origin: str
    seen: str | None = None  # "first", "last" or "both" from a first/last-seen reader, else None

    @classmethod
    def from_rows(cls, rows: Sequence[sqlite3.Row]) -> list[JournaledRead]:
        """Rows of `reads` by column name (looked up once: db.Columns); the reader's time is the timestamp."""
        c = Columns(rows)
        return [
            cls(
                id=r[c.id],
                link=r[c.link],
                reader=r[c.reader],
                seq=r[c.seq],
                timestamp=from_text(r[c.reader_ts]),
                received_at=from_text(r[c.received_at]),
                chip=r[c.chip],
                bib=r[c.bib],
                antenna=r[c.antenna],
                rssi=r[c.rssi],
                origin=r[c.origin],
                seen=r[c.seen],
            )
            for r in rows
        ]


class Journal(Database):
    """Reads in, in id order; the pipeline reads them back with `reads_after`."""

    # For the pipeline's clock-closed windows (pipeline.py, step): the arrival time stamped on the journal
    # transaction now open (None: none is), and the highest read id this object has committed. A read not
    # yet visible to the pipeline is in that transaction, or has committed above its cursor. (Class-level
    # defaults, immutable: each instance gets its own value on the first assignment.)
    journal_open_since: datetime | None = None
    journal_last_id: int = 0

    async def journal(self, link: str, reads: Sequence[Read], *, origin: str = "reader") -> list[int | None]:
        """Store reads in ONE transaction; durable when this returns. Returns each read's id, or None for a
        read already journaled (same reader and sequence number: a reader re-sending what it was not acked)."""
        result = await self.journal_batch([(link, reads, origin)])
        return result[0]

    async def last_seqs(self, link: str) -> dict[str, int]:
        """Per reader id, the highest sequence number journaled from `link`: after a restart, the first read
        that arrives shows what was missed while the gateway was down (and can be fetched again)."""
        rows = await self._fetchall(
            "SELECT reader, MAX(seq) AS last_seq FROM reads WHERE link = ? AND seq IS NOT NULL GROUP BY reader",
            (link,),
        )
        return {str(r["reader"]): int(r["last_seq"]) for r in rows}

    async def reject_line(self, link: str, offset: int, reason: str, raw: str) -> None:
        await self.journal_batch([], [(link, offset, reason, raw)])

    async def journal_batch(
        self,
        batches: Sequence[tuple[str, Sequence[Read], str]],
        rejects: Sequence[tuple[str, int, str, str]] = (),
    ) -> list[list[int | None]]:
        """Group commit: several submissions (link, reads, origin) and rejected lines in one transaction."""
        for _, _, origin in batches:
            if origin not in ORIGINS:
                raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
        results: list[list[int | None]] = [[None] * len(reads) for _, reads, _ in batches]
        try:
            return await self._journal_batch(batches, rejects, results)
        finally:
            self.journal_open_since = None  # committed (or rolled back): visible to the next read of the journal

    async def _journal_batch(
        self,
        batches: Sequence[tuple[str, Sequence[Read], str]],
        rejects: Sequence[tuple[str, int, str, str]],
        results: list[list[int | None]],
    ) -> list[list[int | None]]:
        async with self._write() as db:
            received = to_text(now())  # under the lock: arrival times never run backwards against read ids
            self.journal_open_since = from_text(received)  # exactly what its reads will carry
            # Which reads are already in the journal (re-sends), or earlier in this same batch? A re-send has
            # the same reader, sequence number AND content; a reused number with other content is a reader
            # that restarted its numbering, and its read is new (dropping it would lose a runner's time).
            keyed = {
                (read.reader or link, read.seq) for link, reads, _ in batches for read in reads if read.seq is not None
            }
            existing: set[tuple[str, int, str, str | None]] = set()
            for with_keys, args in keyed_chunks(list(keyed)):
                rows = await db.execute_fetchall(
                    f"{with_keys} SELECT k.r AS reader, k.s AS seq, reads.reader_ts, reads.chip "
                    "FROM k CROSS JOIN reads ON reads.reader = k.r AND reads.seq = k.s WHERE reads.seq IS NOT NULL",
                    args,
                )
                existing.update((r["reader"], r["seq"], r["reader_ts"], r["chip"]) for r in rows)
            numbers_seen = {(r, s) for r, s, _, _ in existing}
            reused: list[tuple[str, int]] = []
            inserts: list[tuple[Any, ...]] = []
            slots: list[tuple[int, int]] = []
            for b, (link, reads, origin) in enumerate(batches):
                for i, read in enumerate(reads):
                    reader = read.reader or link
                    if read.seq is not None:
                        identity = (reader, read.seq, to_text(read.timestamp), read.chip)
                        if identity in existing:
                            continue
                        if (reader, read.seq) in numbers_seen:
                            reused.append((reader, read.seq))
                        existing.add(identity)
                        numbers_seen.add((reader, read.seq))
                    inserts.append(
                        (
                            link,
                            reader,
                            read.seq,
                            to_text(read.timestamp),
                            received,
                            read.chip,
                            read.bib,
                            read.antenna,
                            read.rssi,
                            read.raw,
                            origin,
                            read.seen,
                        )
                    )
                    slots.append((b, i))
            if reused:
                log.warning(
                    "reader reused sequence numbers for new reads (numbering restarted?): kept as new",
                    reader=reused[0][0],
                    first_seq=reused[0][1],
                    count=len(reused),
                )
            if inserts:
                before = int((await self._one("SELECT COALESCE(MAX(id), 0) AS last_id FROM reads"))["last_id"])
                await insert_rows(db, _INSERT_READS, inserts)
                # We hold the write lock, so the rows after `before` are exactly ours, in insertion order: asked
                # for as one row of figures, not a row per read (a step per row: see insert_rows).
                got = await self._one(
                    "SELECT COUNT(*) AS n, MIN(id) AS first, MAX(id) AS last FROM reads WHERE id > ?", (before,)
                )
                if got["n"] != len(slots) or (got["n"] and got["last"] - got["first"] + 1 != got["n"]):
                    raise StorageError(f"database {self.path}: journal insert stored {got['n']} of {len(slots)}")
                ids = range(got["first"], got["first"] + got["n"])
                for (b, i), read_id in zip(slots, ids, strict=True):
                    results[b][i] = read_id
            if rejects:
                await db.executemany(
                    "INSERT INTO rejected_lines (link, offset, reason, raw, received_at) VALUES (?, ?, ?, ?, ?)",
                    [(link, offset, reason, raw, received) for link, offset, reason, raw in rejects],
                )
            failpoints.hit("mid_batch_commit")
        self.journal_last_id = max([self.journal_last_id, *(i for ids in results for i in ids if i is not None)])
        failpoints.hit("after_journal_commit")
        return results

    async def reads_after(self, cursor: int, limit: int) -> list[JournaledRead]:
        """Journaled reads with id > cursor, in id order (the pipeline's input)."""
        rows = await self._fetchall(
            "SELECT id, link, reader, seq, reader_ts, received_at, chip, bib, antenna, rssi, origin, seen FROM reads "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (cursor, limit),
        )
        return JournaledRead.from_rows(rows)

    async def rejected_lines(self, limit: int | None = None) -> list[tuple[str, int, str, str]]:
        rows = await self._fetchall(
            "SELECT link, offset, reason, raw FROM rejected_lines ORDER BY id LIMIT ?", (limit or -1,)
        )
        return [(r["link"], r["offset"], r["reason"], r["raw"]) for r in rows]
