"""The SQLite store on real files: schema, journal, num_passing allocation, states, retention, locking."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.errors import DatabaseCorruptError, StorageError
from gateway.store import SCHEMA_VERSION, NewPassing, Store
from tests.fixtures.outbox import T0, count_rows, read_at


def _wal_size(db: Path) -> int:
    wal = Path(str(db) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def _scribble(db: Path) -> None:
    """Overwrite most of a b-tree page in the middle of the file (not the header): a damaged disk."""
    data = bytearray(db.read_bytes())
    assert len(data) > 8192
    data[4096 + 16 : 4096 + 1200] = b"\x5a" * (1200 - 16)
    db.write_bytes(bytes(data))


def _write(db: Path, data: bytes) -> None:
    db.write_bytes(data)


def _np(i: int, *, origin: str = "reader") -> NewPassing:
    return NewPassing(timestamp=T0 + timedelta(seconds=i), bib=str(i), chip=f"C{i}", origin=origin)


async def test_migrates_an_empty_file_and_sets_wal(db_path: Path) -> None:
    box = await Store.open(db_path)
    await box.close()
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()
    assert {"reads", "rejected_lines", "passings", "sessions", "meta"} <= tables
    # the checkpoint at close left no WAL content behind
    assert _wal_size(db_path) == 0


async def test_reopen_resumes_sessions_meta_reads_and_numbering(db_path: Path) -> None:
    box = await Store.open(db_path)
    await box.set_meta("deviceid", "dev-9")
    await box.set_current_session("tok-A", alias="race", deviceid="dev-9", created_by_us=True)
    await box.journal("mat", [read_at(1), read_at(2, "C2")])
    assert await box.add_passings("tok-A", [_np(1), _np(2)]) == [1, 2]
    await box.close()

    box = await Store.open(db_path)
    try:
        assert await box.get_meta("deviceid") == "dev-9"
        cur = await box.current_session()
        assert cur is not None and cur.token_session == "tok-A" and cur.created_by_us and cur.alias == "race"
        assert (await box.stats()).reads == 2
        assert await box.add_passings("tok-A", [_np(3)]) == [3]
        await box.set_meta("deviceid", None)
        assert await box.get_meta("deviceid") is None
    finally:
        await box.close()


async def test_resent_reads_are_recognised_not_journaled_twice(outbox: Store, db_path: Path) -> None:
    first = await outbox.journal("mat", [read_at(1, seq=7, reader="R1"), read_at(2, seq=8, reader="R1")])
    assert None not in first
    # the reader re-sends seq 8 (it never got the ack) together with a new one, and one twice in a batch
    again = await outbox.journal(
        "mat", [read_at(2, seq=8, reader="R1"), read_at(3, seq=9, reader="R1"), read_at(3, seq=9, reader="R1")]
    )
    assert again[0] is None and again[1] is not None and again[2] is None
    # the same seq from another reader is a different read; reads without seq are never merged
    other = await outbox.journal("mat", [read_at(2, seq=8, reader="R2"), read_at(5), read_at(5)])
    assert None not in other
    assert count_rows(db_path) == 6
    # reader id defaults to the link's name, so a protocol without ids still dedups per link
    a = await outbox.journal("tcp-1", [read_at(1, seq=1)])
    b = await outbox.journal("tcp-1", [read_at(1, seq=1)])
    c = await outbox.journal("tcp-2", [read_at(1, seq=1)])
    assert a[0] is not None and b == [None] and c[0] is not None


async def test_journal_is_durable_when_it_returns(outbox: Store, db_path: Path) -> None:
    await outbox.journal("mat", [read_at(i, f"C{i}") for i in range(50)])
    await outbox.reject_line("mat", 120, "field 3: not a timestamp", "x,y,zz")
    # another connection sees the committed rows before this one closes
    assert count_rows(db_path) == 50
    assert count_rows(db_path, "SELECT COUNT(*) FROM rejected_lines WHERE offset = 120") == 1


async def test_num_passing_gapless_and_unique_under_concurrency(session_outbox: Store, db_path: Path) -> None:
    box = session_outbox

    async def writer(k: int) -> list[int]:
        got: list[int] = []
        for j in range(10):
            got += await box.add_passings("tok-A", [_np(k * 100 + j), _np(k * 100 + j + 50)])
        return got

    results = await asyncio.gather(*[writer(k) for k in range(8)])
    nums = sorted(n for r in results for n in r)
    assert nums == list(range(1, 161))
    assert count_rows(db_path, "SELECT COUNT(DISTINCT num_passing) FROM passings WHERE token_session = 'tok-A'") == 160
    assert await box.max_num_passing("tok-A") == 160


async def test_adopted_session_numbers_above_its_floor(outbox: Store) -> None:
    await outbox.set_current_session("tok-B", alias=None, deviceid=None, created_by_us=False, floor=41)
    assert await outbox.add_passings("tok-B", [_np(1), _np(2)]) == [42, 43]
    # adopting again with a lower floor never lowers numbering
    await outbox.set_current_session("tok-B", alias=None, deviceid=None, created_by_us=False, floor=5)
    assert await outbox.add_passings("tok-B", [_np(3)]) == [44]
    rec = await outbox.current_session()
    assert rec is not None and rec.floor == 41 and not rec.created_by_us


async def test_switching_session_deactivates_the_other(session_outbox: Store) -> None:
    await session_outbox.set_current_session("tok-C", alias="second", deviceid="dev-1", created_by_us=True)
    sessions = {s.token_session: s for s in await session_outbox.sessions()}
    assert sessions["tok-C"].active and not sessions["tok-A"].active
    assert (await session_outbox.current_session()).token_session == "tok-C"  # type: ignore[union-attr]


async def test_pending_sent_attempts_rejected(session_outbox: Store) -> None:
    box = session_outbox
    await box.add_passings("tok-A", [_np(i) for i in range(1, 6)])
    assert [r.passing.num_passing for r in await box.pending("tok-A", 3)] == [1, 2, 3]
    await box.add_attempt("tok-A", [1, 2])
    assert await box.mark_sent("tok-A", [1, 2]) == 2
    assert await box.mark_sent("tok-A", [1, 2]) == 0  # already Sent: nothing changes
    await box.mark_rejected("tok-A", 3, "bib 3: unknown participant")
    rows = {r.passing.num_passing: r for r in await box.rows("tok-A")}
    assert rows[1].state == "Sent" and rows[1].sent_at is not None and rows[1].attempts == 1
    assert rows[3].state == "Rejected" and rows[3].reason == "bib 3: unknown participant"
    assert [r.passing.num_passing for r in await box.pending("tok-A", 10)] == [4, 5]
    st = await box.stats()
    assert (st.pending, st.sent, st.rejected, st.token_session) == (2, 2, 1, "tok-A")
    assert st.oldest_pending_age_s is not None and st.oldest_pending_age_s >= 0
    # requeue: Sent -> Pending (reconcile found them missing), same numbers
    assert await box.requeue("tok-A", [1, 3]) == 1
    assert [r.passing.num_passing for r in await box.pending("tok-A", 10)] == [1, 4, 5]


async def test_renumber_within_session_keeps_old_rows_as_moved(session_outbox: Store) -> None:
    box = session_outbox
    await box.add_passings("tok-A", [_np(i) for i in range(1, 6)])
    await box.mark_sent("tok-A", [1, 2])
    # someone else used 3..5 in the cloud; the cloud's highest is 9
    mapping = await box.renumber("tok-A", [3, 4, 5, 1], to_session="tok-A", floor=9)
    assert mapping == {3: 10, 4: 11, 5: 12}  # the Sent row 1 is never touched
    rows = {r.passing.num_passing: r for r in await box.rows("tok-A")}
    assert rows[1].state == "Sent"
    assert rows[3].state == "Moved" and "num_passing 10" in (rows[3].reason or "")
    assert rows[10].state == "Pending" and rows[10].passing.bib == rows[3].passing.bib
    assert rows[10].passing.timestamp == rows[3].passing.timestamp
    # numbering continues above; 3..5 are never reused
    assert await box.add_passings("tok-A", [_np(6)]) == [13]


async def test_renumber_all_pending_to_another_session(session_outbox: Store) -> None:
    box = session_outbox
    await box.add_passings("tok-A", [_np(i) for i in range(1, 5)])
    await box.mark_sent("tok-A", [1])
    mapping = await box.renumber("tok-A", None, to_session="tok-Z", floor=100)
    assert mapping == {2: 101, 3: 102, 4: 103}
    assert [r.passing.num_passing for r in await box.pending("tok-Z", 10)] == [101, 102, 103]
    assert await box.pending("tok-A", 10) == []
    assert {r.state for r in await box.rows("tok-A")} == {"Sent", "Moved"}
    assert await box.renumber("tok-A", None, to_session="tok-Z", floor=100) == {}


async def test_void_only_a_pending_manual_passing(session_outbox: Store) -> None:
    box = session_outbox
    await box.add_passings("tok-A", [_np(1), _np(2, origin="manual"), _np(3, origin="manual")])
    await box.mark_sent("tok-A", [3])
    assert not await box.void("tok-A", 1)  # a reader passing
    assert not await box.void("tok-A", 3)  # already in the cloud
    assert await box.void("tok-A", 2)
    row = next(r for r in await box.rows("tok-A") if r.passing.num_passing == 2)
    assert row.state == "Voided" and row.reason == "voided by operator"


async def test_prune_deletes_only_old_sent_and_never_frees_numbers(session_outbox: Store, db_path: Path) -> None:
    box = session_outbox
    await box.journal("mat", [read_at(1)])
    await box.add_passings("tok-A", [_np(i) for i in range(1, 4)])
    await box.mark_sent("tok-A", [2, 3])
    assert await box.prune_sent(3600) == 0  # sent just now: younger than an hour
    assert await box.prune_sent(0) == 2
    assert [r.passing.num_passing for r in await box.rows("tok-A")] == [1]
    assert count_rows(db_path) == 1  # the journal is kept
    # 2 and 3 were the highest numbers: they stay allocated
    assert await box.add_passings("tok-A", [_np(4)]) == [4]


async def test_second_opener_is_refused_and_read_only_is_not(db_path: Path) -> None:
    box = await Store.open(db_path)
    try:
        with pytest.raises(StorageError, match=r"in use by another rufus-gateway \(pid \d+\)"):
            await Store.open(db_path)
        ro = await Store.open(db_path, lock=False, read_only=True)
        try:
            assert (await ro.stats()).reads == 0
            with pytest.raises(StorageError, match="read-only"):
                await ro.set_meta("k", "v")
        finally:
            await ro.close()
    finally:
        await box.close()
    # released at close: the next daemon starts
    again = await Store.open(db_path)
    await again.close()


async def test_corrupted_file_is_refused_in_one_line(db_path: Path) -> None:
    box = await Store.open(db_path)
    await box.journal("mat", [read_at(i, f"C{i}", bib="x" * 200) for i in range(400)])
    await box.close()
    _scribble(db_path)
    with pytest.raises(DatabaseCorruptError) as err:  # typed, so the daemon can move it aside
        await Store.open(db_path)
    msg = str(err.value)
    assert "\n" not in msg and str(db_path) in msg
    assert "integrity" in msg or "damaged" in msg
    # the failed open released its lock: nothing stays locked by a daemon that never started
    fd = os.open(str(db_path) + ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


async def test_not_a_database_is_refused_in_one_line(db_path: Path) -> None:
    _write(db_path, b"this is a text file, not SQLite\n" * 200)
    with pytest.raises(StorageError, match="damaged") as err:
        await Store.open(db_path)
    assert "\n" not in str(err.value)


async def test_newer_schema_is_refused(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StorageError, match="newer than this gateway"):
        await Store.open(db_path)


async def test_read_only_open_of_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        await Store.open(tmp_path / "nope.db", read_only=True)
    assert not (tmp_path / "nope.db").exists()


async def test_integrity_check_ok(outbox: Store) -> None:
    assert await outbox.integrity_check() == ["ok"]


async def test_use_after_close_is_a_storage_error(db_path: Path) -> None:
    box = await Store.open(db_path)
    await box.close()
    await box.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await box.stats()
    with pytest.raises(StorageError, match="closed"):
        await box.journal("mat", [read_at(1)])


async def test_cancelled_writes_leave_a_usable_store_and_gapless_numbers(session_outbox: Store) -> None:
    """Cancel writes at every point of their transaction (SIGTERM cancelling a task): no transaction is left
    open, and whatever landed is numbered without a gap."""
    box = session_outbox
    for k in range(40):
        task = asyncio.create_task(box.add_passings("tok-A", [_np(k), _np(k + 100)]))
        for _ in range(k):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    last = await box.add_passings("tok-A", [_np(999)])
    nums = sorted(r.passing.num_passing for r in await box.rows("tok-A"))
    assert nums == list(range(1, len(nums) + 1)) and last == [nums[-1]]
    assert await box.integrity_check() == ["ok"]
