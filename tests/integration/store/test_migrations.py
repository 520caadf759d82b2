"""Schema migrations on files that hold data: every row survives; v3 makes the database enforce a read's identity;
v4 makes Voided a state of its own and converts the voids older gateways stored as Rejected; v5 journals a
first/last-seen reader's flag."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from gateway.store import MIGRATIONS, SCHEMA_VERSION, NewPassing, Store
from tests.fixtures.outbox import T0, count_rows, read_at

_READ = (
    "INSERT INTO reads (link, reader, seq, reader_ts, received_at, chip, bib, raw) "
    "VALUES (?, ?, ?, ?, '2024-05-01T09:00:00.000Z', ?, ?, '')"
)


def _old_file(db: Path, version: int) -> None:
    """A database as a gateway of schema `version` left it, with reads, a session and passings in it."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        for script in MIGRATIONS[:version]:
            con.executescript(script)
        con.execute(f"PRAGMA user_version = {version}")
        con.executemany(
            _READ,
            [
                ("mat", "box1", 1, "2024-05-01T09:00:01.000Z", "C1", None),
                ("mat", "box1", 2, "2024-05-01T09:00:02.000Z", None, "42"),  # a bib-only read
                ("mat", "box1", None, "2024-05-01T09:00:03.000Z", "C3", None),  # a reader without numbers
                ("manual", "manual", None, "2024-05-01T09:00:04.000Z", None, "7"),
            ],
        )
        if version >= 2:  # v2 allowed a reused number with other content: a reader that restarted its count
            con.execute(_READ, ("mat", "box1", 1, "2024-05-01T09:30:00.000Z", "D1", None))
        con.execute(
            "INSERT INTO sessions (token_session, active, created_at, allocated) "
            "VALUES ('tok-A', 1, '2024-05-01T09:00:00.000Z', 2)"
        )
        con.executemany(
            "INSERT INTO passings (token_session, num_passing, timestamp, bib, state, created_at) "
            "VALUES ('tok-A', ?, '2024-05-01T09:00:01.000Z', ?, ?, '2024-05-01T09:00:01.000Z')",
            [(1, "1", "Sent"), (2, "42", "Pending")],
        )
    finally:
        con.close()


@pytest.mark.parametrize("version", [1, 2, 3, 4])
async def test_an_old_file_with_data_migrates_and_keeps_every_row(db_path: Path, version: int) -> None:
    _old_file(db_path, version)
    before = count_rows(db_path)
    box = await Store.open(db_path)
    try:
        rows = await box.rows("tok-A")
        got = [(r.passing.num_passing, r.passing.bib, r.state) for r in rows]
        assert got == [(1, "1", "Sent"), (2, "42", "Pending")]
        assert (await box.current_session()) is not None
        # numbering continues above what the old file had allocated
        assert await box.add_passings("tok-A", [NewPassing(timestamp=T0, bib="9")]) == [3]
    finally:
        await box.close()
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        con.close()
    assert {"reads_identity", "passings_state", "passings_read"} <= indexes and "reads_reader_seq" not in indexes
    assert count_rows(db_path) == before  # every read survived the migration


async def test_a_migrated_journal_still_recognises_its_resends(db_path: Path) -> None:
    _old_file(db_path, 2)
    box = await Store.open(db_path)
    try:
        again = read_at(1, "C1", reader="box1", seq=1)  # 09:00:01 from T0 = the first migrated read
        assert await box.journal("mat", [again]) == [None]
        assert count_rows(db_path) == 5
    finally:
        await box.close()


async def test_the_database_itself_refuses_the_same_read_twice(db_path: Path) -> None:
    box = await Store.open(db_path)
    await box.close()
    con = sqlite3.connect(db_path, isolation_level=None)
    try:
        con.execute(_READ, ("mat", "box1", 1, "2024-05-01T09:00:01.000Z", "C1", None))
        with pytest.raises(sqlite3.IntegrityError):
            con.execute(_READ, ("other-link", "box1", 1, "2024-05-01T09:00:01.000Z", "C1", "9"))
        con.execute(_READ, ("mat", "box1", 2, "2024-05-01T09:00:02.000Z", None, "42"))
        with pytest.raises(sqlite3.IntegrityError):  # bib-only: the identity has no chip, and still holds
            con.execute(_READ, ("mat", "box1", 2, "2024-05-01T09:00:02.000Z", None, "42"))
        # what the app counts as different reads, the database lets in too
        con.execute(_READ, ("mat", "box1", 2, "2024-05-01T09:00:02.000Z", "", "42"))  # empty chip is not no chip
        con.execute(_READ, ("mat", "box1", 1, "2024-05-01T09:30:00.000Z", "D1", None))  # a restarted count
        con.execute(_READ, ("mat", "box2", 1, "2024-05-01T09:00:01.000Z", "C1", None))  # another reader
        con.execute(_READ, ("mat", "box1", None, "2024-05-01T09:00:01.000Z", "C1", None))  # no numbers at all
        con.execute(_READ, ("mat", "box1", None, "2024-05-01T09:00:01.000Z", "C1", None))
    finally:
        con.close()
    assert count_rows(db_path) == 7


def _v3_with_voids(db: Path) -> None:
    """A database exactly as today's v3 gateway leaves it after `mark --void`: the void is Rejected with the
    operator's reason, beside a manual passing still Pending and one the cloud really refused."""
    _old_file(db, 3)
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.executemany(
            "INSERT INTO passings (token_session, num_passing, timestamp, bib, state, reason, origin, created_at) "
            "VALUES ('tok-A', ?, '2024-05-01T09:00:04.000Z', ?, ?, ?, ?, '2024-05-01T09:00:04.000Z')",
            [
                (3, "7", "Rejected", "voided by operator", "manual"),  # the crew took it back
                (4, "8", "Pending", None, "manual"),
                (5, "666", "Rejected", "bib 666: unknown participant", "reader"),  # the cloud's refusal
                (6, "9", "Rejected", "voided by operator", "reader"),  # that reason on a read: not a void
            ],
        )
    finally:
        con.close()


async def test_v4_turns_stored_voids_into_the_voided_state_and_nothing_else(db_path: Path) -> None:
    _v3_with_voids(db_path)
    box = await Store.open(db_path)
    try:
        got = {r.passing.num_passing: (r.state, r.reason) for r in await box.rows("tok-A")}
        assert got == {
            1: ("Sent", None),
            2: ("Pending", None),
            3: ("Voided", "voided by operator"),
            4: ("Pending", None),
            5: ("Rejected", "bib 666: unknown participant"),
            6: ("Rejected", "voided by operator"),
        }
        assert [r.passing.num_passing for r in await box.rows("tok-A", "Voided")] == [3]
        assert (await box.stats()).rejected == 2  # the crew's void is no longer counted as a cloud refusal
        # `requeue --rejected` needs no magic string any more: the void stays, the refusals go back
        assert await box.requeue_rejected() == 2
        assert await box.void("tok-A", 4) is True
        states = {r.passing.num_passing: r.state for r in await box.rows("tok-A")}
        assert states == {1: "Sent", 2: "Pending", 3: "Voided", 4: "Voided", 5: "Pending", 6: "Pending"}
        # numbering continues above the voided numbers: a void never frees its num_passing
        assert await box.add_passings("tok-A", [NewPassing(timestamp=T0, bib="10")]) == [7]
    finally:
        await box.close()


async def test_the_database_refuses_a_state_outside_the_five(db_path: Path) -> None:
    box = await Store.open(db_path)
    await box.close()
    con = sqlite3.connect(db_path)
    try:
        con.execute("INSERT INTO sessions (token_session, created_at) VALUES ('t', '2024-05-01T09:00:00.000Z')")
        for state in ("Pending", "Sent", "Rejected", "Moved", "Voided"):
            con.execute(
                "INSERT INTO passings (token_session, num_passing, timestamp, bib, state, created_at) "
                "VALUES ('t', (SELECT COUNT(*) + 1 FROM passings), 'x', '1', ?, 'x')",
                (state,),
            )
        with pytest.raises(sqlite3.IntegrityError):
            con.execute(
                "INSERT INTO passings (token_session, num_passing, timestamp, bib, state, created_at) "
                "VALUES ('t', 99, 'x', '1', 'Lost', 'x')"
            )
    finally:
        con.close()


async def test_v5_journals_first_and_last_seen_and_leaves_older_reads_without(db_path: Path) -> None:
    _old_file(db_path, 4)
    box = await Store.open(db_path)
    try:
        fs = dataclasses.replace(read_at(10, "C10", reader="box1"), seen="first")
        ls = dataclasses.replace(read_at(11, "C10", reader="box1"), seen="last")
        await box.journal("mat", [fs, ls, read_at(12, "C12", reader="box1")])
        got = [(r.chip, r.seen) for r in await box.reads_after(0, 100)]
    finally:
        await box.close()
    old = [("C1", None), (None, None), ("C3", None), (None, None), ("D1", None)]  # journaled before v5
    assert got == [*old, ("C10", "first"), ("C10", "last"), ("C12", None)]
    con = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            con.execute(
                "INSERT INTO reads (link, reader, reader_ts, received_at, raw, seen) "
                "VALUES ('m', 'b', 'x', 'x', '', 'sometimes')"
            )
    finally:
        con.close()
