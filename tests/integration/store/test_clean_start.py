"""Start-up without an O(database) scan: after a clean close the next open skips quick_check when the file is
exactly as that close left it (store.db.CleanStamp in the lock file), and the check runs beside the gateway
instead (Store.check_aside). Anything else (a crash, a touched file, a WAL with changes, a check still owed)
checks the whole file before open() returns, as every start did before."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.errors import DatabaseCorruptError
from gateway.store import Store
from tests.fixtures.outbox import read_at


async def _filled(db: Path) -> None:
    box = await Store.open(db)
    assert box.checked_at_open  # a new file: nobody closed it cleanly yet
    await box.journal("mat", [read_at(i, f"C{i}", bib="x" * 200) for i in range(400)])
    await box.close()


def _damage_keeping_stat(db: Path) -> None:
    """A failing card: pages change in place, inode, size and modification time as they were."""
    st = os.stat(db)
    with open(db, "r+b") as f:
        f.seek(4096 + 16)
        f.write(b"\x5a" * 1184)
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(db).st_ino == st.st_ino and os.stat(db).st_mtime_ns == st.st_mtime_ns


def _left(db: Path) -> str:
    """What the last holder left in the lock file."""
    return Path(str(db) + ".lock").read_text()


def _disturb(db: Path, how: str) -> None:
    if how == "crash":
        Path(str(db) + ".lock").write_text("4242\n")  # what a killed daemon leaves: its pid, no stamp
    elif how == "touched":
        os.utime(db)
    elif how == "replaced":  # same bytes, another file (a copy put back from a laptop)
        data = db.read_bytes()
        db.unlink()
        db.write_bytes(data)
    else:
        Path(str(db) + "-wal").write_bytes(b"\x00" * 64)  # changes the stamp does not cover


async def test_a_clean_close_lets_the_next_open_skip_the_check_and_owe_it(db_path: Path) -> None:
    await _filled(db_path)
    assert _left(db_path).startswith("clean ")
    box = await Store.open(db_path)
    assert not box.checked_at_open and box.check_owed
    assert await box.check_aside() == ["ok"]
    assert not box.check_owed and box.damaged is None
    await box.close()
    again = await Store.open(db_path)  # checked beside the last run: skipped again
    assert not again.checked_at_open
    await again.close()


async def test_a_check_still_owed_at_close_is_not_skipped_twice(db_path: Path) -> None:
    await _filled(db_path)
    box = await Store.open(db_path)
    assert not box.checked_at_open
    await box.close()  # stopped before check_aside ran (or a crew command that wrote without a daemon)
    again = await Store.open(db_path)
    assert again.checked_at_open
    await again.close()


@pytest.mark.parametrize("how", ["crash", "touched", "replaced", "wal"])
async def test_anything_but_the_file_as_closed_is_checked_first(db_path: Path, how: str) -> None:
    await _filled(db_path)
    _disturb(db_path, how)
    box = await Store.open(db_path)
    assert box.checked_at_open
    await box.close()


async def test_damage_that_keeps_the_stamp_is_found_beside_and_refused_at_the_next_start(db_path: Path) -> None:
    await _filled(db_path)
    _damage_keeping_stat(db_path)
    box = await Store.open(db_path)  # the stamp holds: no check before READY
    assert not box.checked_at_open
    found = await box.check_aside()
    assert found != ["ok"] and box.damaged
    await box.close()
    assert not _left(db_path).startswith("clean")
    with pytest.raises(DatabaseCorruptError):
        await Store.open(db_path)


async def test_a_stop_during_the_check_beside_leaves_it_owed(db_path: Path) -> None:
    await _filled(db_path)
    box = await Store.open(db_path)
    assert box.check_owed
    task = asyncio.create_task(box.check_aside())
    await asyncio.sleep(0)  # the check is under way in its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert box.check_owed and box.damaged is None
    await box.close()
    assert not _left(db_path).startswith("clean")  # so the next start checks before READY
    again = await Store.open(db_path)
    assert again.checked_at_open
    await again.close()
