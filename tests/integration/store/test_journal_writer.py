"""Group commit: many concurrent submitters share few transactions, and every acknowledged read is durable."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.store import JournalWriter, Store
from tests.fixtures.outbox import count_rows, read_at


@contextlib.asynccontextmanager
async def running(writer: JournalWriter) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(writer.run(), name="journal")
    await asyncio.sleep(0)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_concurrent_submissions_share_transactions_and_survive_reopen(db_path: Path) -> None:
    box = await Store.open(db_path)
    writer = JournalWriter(box, max_rows=500, max_delay=0.005)
    async with running(writer):
        assert writer.alive

        async def link(k: int) -> list[bool]:
            acks: list[bool] = []
            for j in range(20):
                acks += await writer.journal(f"link{k}", [read_at(j, f"C{k}-{j}", reader=f"R{k}", seq=j)])
            return acks

        results = await asyncio.gather(*[link(k) for k in range(25)])
    await box.close()
    assert all(all(r) for r in results)
    assert writer.committed == 500
    # 500 submissions from 25 concurrent links: they shared fsyncs (about one per round of links)
    assert writer.batches <= 500 // 5, writer.batches
    assert writer.last_commit_at is not None and not writer.alive
    assert count_rows(db_path) == 500  # a brand-new connection after close: all durable


async def test_batches_respect_max_rows(outbox: Store) -> None:
    writer = JournalWriter(outbox, max_rows=10, max_delay=0.05)
    async with running(writer):
        await asyncio.gather(*[writer.journal("mat", [read_at(i, f"C{i}")]) for i in range(35)])
    assert writer.committed == 35
    assert writer.batches >= 4  # ceil(35 / 10): never more than max_rows per transaction


async def test_resent_reads_are_acked_but_not_stored_twice(outbox: Store, db_path: Path) -> None:
    writer = JournalWriter(outbox)
    async with running(writer):
        assert list(await writer.journal("mat", [read_at(1, seq=1, reader="R"), read_at(2, seq=2, reader="R")])) == [
            True,
            True,
        ]
        assert list(await writer.journal("mat", [read_at(2, seq=2, reader="R"), read_at(3, seq=3, reader="R")])) == [
            False,
            True,
        ]
        await writer.reject("mat", 42, "field 3: bad timestamp", "1,2,x")
    assert (writer.committed, writer.duplicates, writer.rejected) == (3, 1, 1)
    assert count_rows(db_path) == 3
    assert count_rows(db_path, "SELECT COUNT(*) FROM rejected_lines") == 1


async def test_cancel_flushes_what_was_submitted(outbox: Store, db_path: Path) -> None:
    # a long linger: the submissions are still queued when the writer is cancelled (SIGTERM path)
    writer = JournalWriter(outbox, max_rows=10_000, max_delay=30.0)
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(0)
    subs = [asyncio.create_task(writer.journal("mat", [read_at(i, f"C{i}")])) for i in range(40)]
    await asyncio.sleep(0.01)
    assert count_rows(db_path) == 0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    acks = await asyncio.wait_for(asyncio.gather(*subs), 5)
    assert [list(a) for a in acks] == [[True]] * 40
    assert count_rows(db_path) == 40
    with pytest.raises(StorageError, match="stopped"):
        await writer.journal("mat", [read_at(99)])


async def test_a_batch_of_many_statements_gives_each_read_its_own_row(outbox: Store, db_path: Path) -> None:
    """One transaction of 250 reads from three links (several INSERT statements of ROWS_PER_INSERT rows each),
    re-sends among them: each new read is told the id of the row holding it, in submission order."""
    await outbox.journal_batch([("mat", [read_at(i, f"OLD{i}", reader="R", seq=i) for i in range(5)], "reader")])
    batches = [
        (
            "mat",
            [read_at(i, f"OLD{i}", reader="R", seq=i) for i in range(5)]  # re-sent: not stored again
            + [read_at(i, f"A{i}", reader="R", seq=i) for i in range(5, 100)],
            "reader",
        ),
        ("start", [read_at(i, f"B{i}") for i in range(90)], "reader"),
        ("manual", [read_at(i, f"M{i}") for i in range(60)], "manual"),
    ]
    results = await outbox.journal_batch(batches)
    assert results[0][:5] == [None] * 5
    new = [i for ids in results for i in ids if i is not None]
    assert len(new) == 245 and new == sorted(new) and len(set(new)) == 245
    with sqlite3.connect(db_path) as con:
        stored = dict(con.execute("SELECT id, chip FROM reads").fetchall())
    for (_link, reads, _origin), ids in zip(batches, results, strict=True):
        for read, read_id in zip(reads, ids, strict=True):
            if read_id is not None:
                assert stored[read_id] == read.chip
    assert len(stored) == 250


async def test_a_resend_of_more_reads_than_one_lookup_takes_is_recognised_whole(outbox: Store) -> None:
    """1,000 numbered reads, then the same 1,000 again (a decoder replaying its memory) and one new: the
    re-send lookup runs in chunks of store.db.CHUNK pairs, and every chunk finds its reads."""
    first = [read_at(i, f"C{i}", reader="R", seq=i) for i in range(1000)]
    assert all(i is not None for i in (await outbox.journal_batch([("mat", first, "reader")]))[0])
    again = await outbox.journal_batch([("mat", [*first, read_at(1000, "C1000", reader="R", seq=1000)], "reader")])
    assert again[0][:1000] == [None] * 1000 and again[0][1000] is not None
    assert len(await outbox.reads_after(0, 5000)) == 1001
