"""The gateway's one SQLite file: the journal of every raw read, the outbox of passings, sessions, meta.

Modelled on zigpy's appdb: `PRAGMA user_version` migrations, a quick integrity check at open, WAL with
synchronous=FULL, one writer connection, explicit `BEGIN IMMEDIATE` transactions and batched `executemany`
(one thread hop per batch, never per row), WAL checkpoint then `await db.close()` at shutdown.

A lock file beside the database (`<db>.lock`, holding the pid) makes a second daemon on the same file refuse
to start (invariant 8). Read-only opens (the CLI's stats/export while the daemon runs) take no lock.

`num_passing` is allocated inside the transaction that stores the passing, above the session's high-water
mark, which is itself stored (`sessions.allocated`): pruning Sent rows can never make a number reusable.
Nothing here deletes data except `prune_sent`, which the operator asks for explicitly (invariant 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from gateway import failpoints
from gateway.aio import wait_event
from gateway.errors import DatabaseCorruptError, StorageError
from gateway.log import get_logger
from gateway.model import Passing, Read, format_ts

log = get_logger("gateway.outbox")

STATES = ("Pending", "Sent", "Rejected", "Moved", "Voided")
ORIGINS = ("reader", "manual")
VOID_REASON = "voided by operator"  # kept as the Voided row's reason, and how v4 found the voids of v1-v3
_CHUNK = 400  # rows per IN (...) lookup: far below SQLite's bound-parameter limit

# Each entry migrates from user_version == index to index + 1. Never edit a released entry: add one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE reads (
        id          INTEGER PRIMARY KEY,
        link        TEXT NOT NULL,
        reader      TEXT NOT NULL,
        seq         INTEGER,
        reader_ts   TEXT NOT NULL,
        received_at TEXT NOT NULL,
        chip        TEXT,
        bib         TEXT,
        antenna     INTEGER,
        rssi        REAL,
        raw         TEXT NOT NULL DEFAULT '',
        origin      TEXT NOT NULL DEFAULT 'reader' CHECK (origin IN ('reader', 'manual'))
    );
    CREATE UNIQUE INDEX reads_reader_seq ON reads (reader, seq) WHERE seq IS NOT NULL;
    CREATE TABLE rejected_lines (
        id          INTEGER PRIMARY KEY,
        link        TEXT NOT NULL,
        offset      INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        raw         TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    CREATE TABLE sessions (
        token_session TEXT PRIMARY KEY,
        alias         TEXT,
        deviceid      TEXT,
        created_by_us INTEGER NOT NULL DEFAULT 0,
        floor         INTEGER NOT NULL DEFAULT 0,
        allocated     INTEGER NOT NULL DEFAULT 0,
        active        INTEGER NOT NULL DEFAULT 0,
        created_at    TEXT NOT NULL,
        closed_at     TEXT
    );
    CREATE TABLE passings (
        id             INTEGER PRIMARY KEY,
        token_session  TEXT NOT NULL,
        num_passing    INTEGER NOT NULL CHECK (num_passing >= 1),
        timestamp      TEXT NOT NULL,
        bib            TEXT NOT NULL,
        chip           TEXT,
        participant_id TEXT,
        timezone       TEXT,
        latitude       REAL,
        longitude      REAL,
        gender         TEXT,
        status         TEXT,
        state          TEXT NOT NULL DEFAULT 'Pending' CHECK (state IN ('Pending', 'Sent', 'Rejected', 'Moved')),
        reason         TEXT,
        attempts       INTEGER NOT NULL DEFAULT 0,
        sent_at        TEXT,
        origin         TEXT NOT NULL DEFAULT 'reader' CHECK (origin IN ('reader', 'manual')),
        read_id        INTEGER REFERENCES reads (id),
        created_at     TEXT NOT NULL,
        UNIQUE (token_session, num_passing)
    );
    CREATE INDEX passings_state ON passings (state, token_session, num_passing);
    CREATE INDEX passings_read ON passings (read_id);
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE dedup (
        reader TEXT NOT NULL,
        key    TEXT NOT NULL,
        state  TEXT NOT NULL,
        PRIMARY KEY (reader, key)
    );
    """,
    # v2: a reader that restarts its numbering (memory wiped, new event file) reuses sequence numbers for NEW
    # reads. (reader, seq) alone cannot be unique then; a re-send is a read whose number AND content match.
    """
    DROP INDEX reads_reader_seq;
    CREATE INDEX reads_reader_seq ON reads (reader, seq) WHERE seq IS NOT NULL;
    """,
    # v3: the database enforces what journal_batch recognises as a re-send, so no other path (a tool, a future
    # bug) can store one read twice. The identity is exactly the app's: reader, sequence number, reader time
    # and chip, where a missing chip (a bib-only read) and an empty one are different values, as in Python.
    # Its (reader, seq) prefix serves the re-send look-up, so the plain v2 index goes.
    """
    DROP INDEX reads_reader_seq;
    CREATE UNIQUE INDEX reads_identity ON reads (reader, seq, reader_ts, chip IS NULL, COALESCE(chip, ''))
        WHERE seq IS NOT NULL;
    """,
    # v4: `Voided` is a state of its own. Until v3 a voided manual passing was `Rejected` with VOID_REASON, so
    # every query about the cloud's refusals had to exclude the operator's voids by that magic string. SQLite
    # cannot change a CHECK in place: the table is rebuilt (same columns, same ids, same indexes) and the old
    # voids are converted on the way. Nothing references passings, so the foreign keys are untouched.
    """
    CREATE TABLE passings_v4 (
        id             INTEGER PRIMARY KEY,
        token_session  TEXT NOT NULL,
        num_passing    INTEGER NOT NULL CHECK (num_passing >= 1),
        timestamp      TEXT NOT NULL,
        bib            TEXT NOT NULL,
        chip           TEXT,
        participant_id TEXT,
        timezone       TEXT,
        latitude       REAL,
        longitude      REAL,
        gender         TEXT,
        status         TEXT,
        state          TEXT NOT NULL DEFAULT 'Pending'
                       CHECK (state IN ('Pending', 'Sent', 'Rejected', 'Moved', 'Voided')),
        reason         TEXT,
        attempts       INTEGER NOT NULL DEFAULT 0,
        sent_at        TEXT,
        origin         TEXT NOT NULL DEFAULT 'reader' CHECK (origin IN ('reader', 'manual')),
        read_id        INTEGER REFERENCES reads (id),
        created_at     TEXT NOT NULL,
        UNIQUE (token_session, num_passing)
    );
    INSERT INTO passings_v4
        SELECT id, token_session, num_passing, timestamp, bib, chip, participant_id, timezone, latitude,
               longitude, gender, status,
               CASE WHEN state = 'Rejected' AND origin = 'manual' AND reason = 'voided by operator'
                    THEN 'Voided' ELSE state END,
               reason, attempts, sent_at, origin, read_id, created_at
        FROM passings ORDER BY id;
    DROP TABLE passings;
    ALTER TABLE passings_v4 RENAME TO passings;
    CREATE INDEX passings_state ON passings (state, token_session, num_passing);
    CREATE INDEX passings_read ON passings (read_id);
    """,
    # v5: a reader in first/last-seen mode (IPICO) says which of the two each read is; the journal keeps it so
    # the pipeline can keep only one of them (`[reader] ipico_seen`), on replay too. Older reads have none.
    """
    ALTER TABLE reads ADD COLUMN seen TEXT CHECK (seen IN ('first', 'last', 'both'));
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_PASSING_COLS = (
    "id, token_session, num_passing, timestamp, bib, chip, participant_id, timezone, latitude, longitude, "
    "gender, status, state, reason, attempts, sent_at, origin, read_id, created_at"
)


_EXPORTABLE: dict[str, tuple[str, ...]] = {
    "reads": (
        "id",
        "link",
        "reader",
        "seq",
        "reader_ts",
        "received_at",
        "chip",
        "bib",
        "antenna",
        "rssi",
        "raw",
        "origin",
        "seen",
    ),
    "rejected_lines": ("id", "link", "offset", "reason", "raw", "received_at"),
    "sessions": (
        "token_session",
        "alias",
        "deviceid",
        "created_by_us",
        "floor",
        "allocated",
        "active",
        "created_at",
        "closed_at",
    ),
}


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(dt: datetime) -> str:
    return format_ts(dt)


def _dt(text: str) -> datetime:
    """Our own stored timestamps (always written by format_ts): the C parser, not strptime, which
    dominated the pipeline's time."""
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    token_session: str
    passing: Passing
    state: str
    reason: str | None
    attempts: int
    sent_at: datetime | None
    origin: str
    read_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class SessionRecord:
    token_session: str
    alias: str | None
    deviceid: str | None
    created_by_us: bool
    floor: int
    active: bool
    created_at: datetime


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    sent: int
    rejected: int
    reads: int
    oldest_pending_age_s: float | None
    token_session: str | None


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


@dataclass(frozen=True)
class NewPassing:
    """A passing the pipeline derived; its num_passing is allocated when it is stored."""

    timestamp: datetime
    bib: str
    chip: str | None = None
    timezone: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    origin: str = "reader"
    read_id: int | None = None
    participant_id: str | None = None
    gender: str | None = None
    status: str | None = None


def _row(r: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        id=r[0],
        token_session=r[1],
        passing=Passing(
            timestamp=_dt(r[3]),
            num_passing=r[2],
            bib=r[4],
            chip=r[5],
            participant_id=r[6],
            timezone=r[7],
            latitude=r[8],
            longitude=r[9],
            gender=r[10],
            status=r[11],
        ),
        state=r[12],
        reason=r[13],
        attempts=r[14],
        sent_at=_dt(r[15]) if r[15] else None,
        origin=r[16],
        read_id=r[17],
        created_at=_dt(r[18]),
    )


def _session(r: Sequence[Any]) -> SessionRecord:
    return SessionRecord(
        token_session=r[0],
        alias=r[1],
        deviceid=r[2],
        created_by_us=bool(r[3]),
        floor=r[4],
        active=bool(r[5]),
        created_at=_dt(r[6]),
    )


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """SQLite's own words for a damaged file, as opposed to a locked, missing or read-only one."""
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__


class _LockFile:
    """fcntl.flock on `<db>.lock`: released by the kernel when the process dies, so a SIGKILLed daemon never
    leaves a stale lock; the pid inside is only for the message."""

    def __init__(self, db: Path) -> None:
        self.path = Path(str(db) + ".lock")
        self.fd: int | None = None

    def acquire(self, db: Path) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot create lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = "?"
            with contextlib.suppress(OSError, ValueError):
                pid = os.pread(fd, 32, 0).decode().strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StorageError(f"database {db} is in use by another rufus-gateway (pid {pid})") from None
            raise StorageError(f"cannot lock {self.path}: {exc.strerror}") from None
        with contextlib.suppress(OSError):  # a full disk must not stop the start: the pid is only for the message
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock
            self.fd = None


class Outbox:
    """The store. Create with `await Outbox.open(path)`; every method is a coroutine, each write one transaction."""

    def __init__(self, db: aiosqlite.Connection, path: Path, lock: _LockFile | None, read_only: bool) -> None:
        self._db = db
        self.path = path
        self._lockfile = lock
        self.read_only = read_only
        # One connection, several coroutines: a transaction spans several awaits, so they must not interleave.
        self._lock = asyncio.Lock()
        self._closed = False
        # For the pipeline's clock-closed windows (pipeline.py, step): the arrival time stamped on the journal
        # transaction now open (None: none is), and the highest read id this object has committed. A read
        # not yet visible to the pipeline is in that transaction, or has committed above its cursor.
        self.journal_open_since: datetime | None = None
        self.journal_last_id = 0

    # -- open / close ---------------------------------------------------------------------------------
    @classmethod
    async def open(
        cls, path: str | Path, *, lock: bool = True, read_only: bool = False, quick_check: bool = True
    ) -> Outbox:
        """Open (creating and migrating unless read-only). `quick_check=False` only for `outbox check`, which
        runs the full integrity_check itself and must be able to report on a damaged file."""
        path = Path(path)
        if read_only and not path.exists():
            raise StorageError(f"database {path} does not exist")
        lockfile: _LockFile | None = None
        if lock and not read_only:
            lockfile = _LockFile(path)
            lockfile.acquire(path)
        db: aiosqlite.Connection | None = None
        try:
            if read_only:
                db = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                db = await aiosqlite.connect(path, isolation_level=None)
            self = cls(db, path, lockfile, read_only)
            await self._prepare(quick_check)
            return self
        except BaseException as exc:
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            if lockfile is not None:
                lockfile.release()
            if isinstance(exc, sqlite3.DatabaseError) and _is_damage(exc):
                raise DatabaseCorruptError(f"database {path} is damaged: {_one_line(exc)}") from None
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"database {path} is unusable: {_one_line(exc)}") from None
            raise

    async def _prepare(self, quick_check: bool) -> None:
        db = self._db
        await db.execute("PRAGMA busy_timeout = 5000")  # a reader may meet the daemon's checkpoint
        check = [r[0] for r in await db.execute_fetchall("PRAGMA quick_check")] if quick_check else ["ok"]
        if check != ["ok"]:
            raise DatabaseCorruptError(
                f"database {self.path} failed its integrity check ({'; '.join(check[:3])}): "
                "restore it from a backup or move it aside"
            )
        version = (await self._fetchone("PRAGMA user_version"))[0]
        if not quick_check and self.read_only:
            return  # `outbox check` on a damaged file: let integrity_check report, do not refuse here
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"database {self.path} has schema version {version}, newer than this gateway's {SCHEMA_VERSION}"
            )
        if self.read_only:
            if version < SCHEMA_VERSION:
                raise StorageError(
                    f"database {self.path} has schema version {version}: start the gateway once to migrate it"
                )
            return
        mode = (await self._fetchone("PRAGMA journal_mode = WAL"))[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"database {self.path}: cannot switch to WAL (journal_mode is {mode})")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        while version < SCHEMA_VERSION:
            # executescript would COMMIT on its own; run the statements one by one inside our transaction.
            async with self._txn():
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version + 1}")
            log.info("database migrated", db=str(self.path), from_version=version, to_version=version + 1)
            version += 1

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            async with self._lock:
                if not self.read_only:
                    with contextlib.suppress(sqlite3.Error):
                        await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                await self._db.close()
        finally:
            if self._lockfile is not None:
                self._lockfile.release()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------------------------------------
    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any]:
        rows = list(await self._db.execute_fetchall(sql, params))
        return rows[0] if rows else ()

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        async with self._lock:
            if self._closed:
                raise StorageError(f"database {self.path} is closed")
            return list(await self._db.execute_fetchall(sql, params))

    @contextlib.asynccontextmanager
    async def _txn(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error or cancellation. The caller holds self._lock
        (or is open(), before anyone else can see this object)."""
        if self.read_only:
            raise StorageError(f"database {self.path} is open read-only")
        try:
            # aiosqlite runs a request even when its awaiter is cancelled: a cancel here may still leave BEGIN
            # executed, so it is rolled back like any other interruption (or the connection stays in a txn).
            await self._db.execute("BEGIN IMMEDIATE")
            yield self._db
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db.execute("ROLLBACK")
            raise
        try:
            await self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(Exception):
                await self._db.execute("ROLLBACK")
            raise StorageError(f"database {self.path}: commit failed: {_one_line(exc)}") from None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            if self._closed:
                raise StorageError(f"database {self.path} is closed")
            try:
                async with self._txn() as db:
                    yield db
            except sqlite3.Error as exc:
                raise StorageError(f"database {self.path}: write failed: {_one_line(exc)}") from None

    # -- meta -----------------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        rows = await self._fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str | None) -> None:
        async with self._write() as db:
            await self._set_meta(db, {key: value})

    @staticmethod
    async def _set_meta(db: aiosqlite.Connection, values: Mapping[str, str | None]) -> None:
        sets = [(k, v) for k, v in values.items() if v is not None]
        dels = [(k,) for k, v in values.items() if v is None]
        if sets:
            await db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                sets,
            )
        if dels:
            await db.executemany("DELETE FROM meta WHERE key = ?", dels)

    # -- sessions -------------------------------------------------------------------------------------
    _SESSION_COLS = "token_session, alias, deviceid, created_by_us, floor, active, created_at"

    async def current_session(self) -> SessionRecord | None:
        rows = await self._fetchall(f"SELECT {self._SESSION_COLS} FROM sessions WHERE active = 1 LIMIT 1")
        return _session(rows[0]) if rows else None

    async def sessions(self) -> list[SessionRecord]:
        rows = await self._fetchall(f"SELECT {self._SESSION_COLS} FROM sessions ORDER BY created_at, rowid")
        return [_session(r) for r in rows]

    async def set_current_session(
        self,
        token_session: str,
        *,
        alias: str | None,
        deviceid: str | None,
        created_by_us: bool,
        floor: int = 0,
    ) -> None:
        """Make `token_session` the one new passings are numbered in. A session seen before keeps its history
        and its high-water mark; the floor only ever rises, so numbering continues above max(floor, local max)."""
        now = _ts(_now())
        async with self._write() as db:
            await db.execute(
                "UPDATE sessions SET active = 0, closed_at = COALESCE(closed_at, ?) "
                "WHERE active = 1 AND token_session != ?",
                (now, token_session),
            )
            await db.execute(
                "INSERT INTO sessions (token_session, alias, deviceid, created_by_us, floor, active, created_at) "
                "VALUES (?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (token_session) DO UPDATE SET active = 1, closed_at = NULL, "
                "alias = COALESCE(excluded.alias, alias), deviceid = COALESCE(excluded.deviceid, deviceid), "
                "floor = MAX(floor, excluded.floor)",
                (token_session, alias, deviceid, int(created_by_us), max(0, floor), now),
            )
        log.info("current session set", token_session=token_session, floor=floor, created_by_us=created_by_us)

    async def _ensure_session(self, db: aiosqlite.Connection, token_session: str, floor: int) -> None:
        await db.execute(
            "INSERT INTO sessions (token_session, floor, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (token_session) DO UPDATE SET floor = MAX(floor, excluded.floor)",
            (token_session, max(0, floor), _ts(_now())),
        )

    async def _allocate(self, db: aiosqlite.Connection, token_session: str, count: int) -> int:
        """Reserve `count` consecutive numbers in the open transaction; returns the first."""
        row = await self._fetchone(
            "SELECT MAX(s.floor, s.allocated, COALESCE((SELECT MAX(num_passing) FROM passings p "
            "WHERE p.token_session = s.token_session), 0)) FROM sessions s WHERE s.token_session = ?",
            (token_session,),
        )
        if not row:
            raise StorageError(f"session {token_session} is unknown to database {self.path}")
        first = int(row[0]) + 1
        await db.execute(
            "UPDATE sessions SET allocated = ? WHERE token_session = ?", (first + count - 1, token_session)
        )
        return first

    async def max_num_passing(self, token_session: str) -> int:
        """The highest num_passing allocated locally in the session (0 if none)."""
        rows = await self._fetchall(
            "SELECT MAX(COALESCE((SELECT allocated FROM sessions WHERE token_session = ?), 0), "
            "COALESCE((SELECT MAX(num_passing) FROM passings WHERE token_session = ?), 0))",
            (token_session, token_session),
        )
        return int(rows[0][0])

    # -- journal --------------------------------------------------------------------------------------
    async def journal(self, link: str, reads: Sequence[Read], *, origin: str = "reader") -> list[int | None]:
        """Store reads in ONE transaction; durable when this returns. Returns each read's id, or None for a
        read already journaled (same reader and sequence number: a reader re-sending what it was not acked)."""
        result = await self.journal_batch([(link, reads, origin)])
        return result[0]

    async def last_seqs(self, link: str) -> dict[str, int]:
        """Per reader id, the highest sequence number journaled from `link`: after a restart, the first read
        that arrives shows what was missed while the gateway was down (and can be fetched again)."""
        rows = await self._fetchall(
            "SELECT reader, MAX(seq) FROM reads WHERE link = ? AND seq IS NOT NULL GROUP BY reader", (link,)
        )
        return {str(r[0]): int(r[1]) for r in rows}

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
            received = _ts(_now())  # under the lock: arrival times never run backwards against read ids
            self.journal_open_since = _dt(received)  # exactly what its reads will carry
            # Which reads are already in the journal (re-sends), or earlier in this same batch? A re-send has
            # the same reader, sequence number AND content; a reused number with other content is a reader
            # that restarted its numbering, and its read is new (dropping it would lose a runner's time).
            keyed = {
                (read.reader or link, read.seq) for link, reads, _ in batches for read in reads if read.seq is not None
            }
            existing: set[tuple[str, int, str, str | None]] = set()
            pairs = list(keyed)
            for i in range(0, len(pairs), _CHUNK):
                chunk = pairs[i : i + _CHUNK]
                marks = ",".join("(?, ?)" for _ in chunk)
                # CROSS JOIN keeps the few keys outside: one index search each, never a scan of the journal
                rows = await db.execute_fetchall(
                    f"WITH k(r, s) AS (VALUES {marks}) SELECT k.r, k.s, reads.reader_ts, reads.chip FROM k "
                    "CROSS JOIN reads ON reads.reader = k.r AND reads.seq = k.s WHERE reads.seq IS NOT NULL",
                    [v for pair in chunk for v in pair],
                )
                existing.update((r[0], r[1], r[2], r[3]) for r in rows)
            numbers_seen = {(r, s) for r, s, _, _ in existing}
            reused: list[tuple[str, int]] = []
            inserts: list[tuple[Any, ...]] = []
            slots: list[tuple[int, int]] = []
            for b, (link, reads, origin) in enumerate(batches):
                for i, read in enumerate(reads):
                    reader = read.reader or link
                    if read.seq is not None:
                        identity = (reader, read.seq, _ts(read.timestamp), read.chip)
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
                            _ts(read.timestamp),
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
                before = int((await self._fetchone("SELECT COALESCE(MAX(id), 0) FROM reads"))[0])
                await db.executemany(
                    "INSERT INTO reads (link, reader, seq, reader_ts, received_at, chip, bib, antenna, rssi, raw,"
                    " origin, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    inserts,
                )
                # We hold the write lock, so the rows after `before` are exactly ours, in insertion order.
                ids = [
                    r[0] for r in await db.execute_fetchall("SELECT id FROM reads WHERE id > ? ORDER BY id", (before,))
                ]
                if len(ids) != len(slots):
                    raise StorageError(f"database {self.path}: journal insert stored {len(ids)} of {len(slots)}")
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
        return [
            JournaledRead(
                id=r[0],
                link=r[1],
                reader=r[2],
                seq=r[3],
                timestamp=_dt(r[4]),
                received_at=_dt(r[5]),
                chip=r[6],
                bib=r[7],
                antenna=r[8],
                rssi=r[9],
                origin=r[10],
                seen=r[11],
            )
            for r in rows
        ]

    async def rejected_lines(self, limit: int | None = None) -> list[tuple[str, int, str, str]]:
        rows = await self._fetchall(
            "SELECT link, offset, reason, raw FROM rejected_lines ORDER BY id LIMIT ?", (limit or -1,)
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # -- pipeline state -------------------------------------------------------------------------------
    async def dedup_state(self) -> dict[tuple[str, str], str]:
        rows = await self._fetchall("SELECT reader, key, state FROM dedup")
        return {(r[0], r[1]): r[2] for r in rows}

    async def commit_step(
        self,
        passings: Sequence[NewPassing],
        *,
        meta: Mapping[str, str | None],
        dedup_set: Mapping[tuple[str, str], str] | None = None,
        dedup_delete: Iterable[tuple[str, str]] = (),
    ) -> tuple[str, list[int]] | None:
        """One pipeline step in ONE transaction: store the passings in the current session (allocating their
        num_passings), advance the cursor (meta) and the dedup state. None, and nothing written, when there
        is no current session."""
        try:
            return await self._commit_step(passings, meta, dedup_set, dedup_delete)
        except _NoSession:
            return None

    async def _commit_step(
        self,
        passings: Sequence[NewPassing],
        meta: Mapping[str, str | None],
        dedup_set: Mapping[tuple[str, str], str] | None,
        dedup_delete: Iterable[tuple[str, str]],
    ) -> tuple[str, list[int]]:
        async with self._write() as db:
            row = await self._fetchone("SELECT token_session FROM sessions WHERE active = 1 LIMIT 1")
            if not row:
                raise _NoSession
            token = str(row[0])
            nums = await self._insert_passings(db, token, passings)
            await self._set_meta(db, meta)
            if dedup_set:
                await db.executemany(
                    "INSERT INTO dedup (reader, key, state) VALUES (?, ?, ?) "
                    "ON CONFLICT (reader, key) DO UPDATE SET state = excluded.state",
                    [(r, k, s) for (r, k), s in dedup_set.items()],
                )
            dels = list(dedup_delete)
            if dels:
                await db.executemany("DELETE FROM dedup WHERE reader = ? AND key = ?", dels)
        return token, nums

    async def _insert_passings(
        self, db: aiosqlite.Connection, token: str, passings: Sequence[NewPassing], created_at: str | None = None
    ) -> list[int]:
        if not passings:
            return []
        first = await self._allocate(db, token, len(passings))
        created = created_at or _ts(_now())
        nums = list(range(first, first + len(passings)))
        await db.executemany(
            "INSERT INTO passings (token_session, num_passing, timestamp, bib, chip, participant_id, timezone, "
            "latitude, longitude, gender, status, origin, read_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    token,
                    n,
                    _ts(p.timestamp),
                    p.bib,
                    p.chip,
                    p.participant_id,
                    p.timezone,
                    p.latitude,
                    p.longitude,
                    p.gender,
                    p.status,
                    p.origin,
                    p.read_id,
                    created,
                )
                for n, p in zip(nums, passings, strict=True)
            ],
        )
        return nums

    async def add_passings(self, token_session: str, passings: Sequence[NewPassing]) -> list[int]:
        """Store passings directly in a session (tests, imports); numbers allocated in the same transaction."""
        async with self._write() as db:
            await self._ensure_session(db, token_session, 0)
            return await self._insert_passings(db, token_session, passings)

    # -- outbox states --------------------------------------------------------------------------------
    async def pending(self, token_session: str, limit: int) -> list[OutboxRow]:
        rows = await self._fetchall(
            f"SELECT {_PASSING_COLS} FROM passings WHERE state = 'Pending' AND token_session = ? "
            "ORDER BY num_passing LIMIT ?",
            (token_session, limit),
        )
        return [_row(r) for r in rows]

    async def mark_sent(self, token_session: str, nums: Sequence[int], *, reason: str | None = None) -> int:
        """Pending -> Sent. `reason` notes a Sent the gateway could not verify (the crew sees it in lists)."""
        if not nums:
            return 0
        async with self._write() as db:
            cur = await db.executemany(
                "UPDATE passings SET state = 'Sent', sent_at = ?, reason = ? "
                "WHERE token_session = ? AND num_passing = ? AND state = 'Pending'",
                [(_ts(_now()), reason, token_session, n) for n in nums],
            )
            return max(cur.rowcount, 0)

    async def last_sent(self, token_session: str) -> OutboxRow | None:
        """The session's highest-numbered Sent passing (a passing the cloud is known to have taken)."""
        rows = await self._fetchall(
            f"SELECT {_PASSING_COLS} FROM passings WHERE token_session = ? AND state = 'Sent' "
            "ORDER BY num_passing DESC LIMIT 1",
            (token_session,),
        )
        return _row(rows[0]) if rows else None

    async def add_attempt(self, token_session: str, nums: Sequence[int]) -> set[int]:
        """Count an attempt on the rows about to be sent; returns those still Pending, the only ones to send.

        Called before every request, in the same lock as `void`: a row voided after the uploader read it is
        left out of the request, and once its attempt is counted it can no longer be voided."""
        if not nums:
            return set()
        async with self._write() as db:
            await db.executemany(
                "UPDATE passings SET attempts = attempts + 1 "
                "WHERE token_session = ? AND num_passing = ? AND state = 'Pending'",
                [(token_session, n) for n in nums],
            )
            live: set[int] = set()
            wanted = sorted(set(nums))
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                rows = await db.execute_fetchall(
                    f"SELECT num_passing FROM passings WHERE token_session = ? AND state = 'Pending' "
                    f"AND num_passing IN ({','.join('?' * len(chunk))})",
                    (token_session, *chunk),
                )
                live.update(int(r[0]) for r in rows)
            return live

    async def mark_rejected(self, token_session: str, num: int, reason: str) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE passings SET state = 'Rejected', reason = ? "
                "WHERE token_session = ? AND num_passing = ? AND state = 'Pending'",
                (reason, token_session, num),
            )
        log.warning("passing rejected", token_session=token_session, num_passing=num, reason=reason)

    async def renumber(
        self, token_session: str, nums: Sequence[int] | None, *, to_session: str, floor: int
    ) -> dict[int, int]:
        """Give Pending rows fresh numbers in `to_session` (which may be the same session) above
        max(floor, its local max), in num order, in ONE transaction. The old rows stay, as 'Moved' with a
        reason naming where they went: nothing is deleted, a Sent row is never touched."""
        async with self._write() as db:
            if nums is None:
                sql = f"SELECT {_PASSING_COLS} FROM passings WHERE state = 'Pending' AND token_session = ? "
                rows = await db.execute_fetchall(sql + "ORDER BY num_passing", (token_session,))
            else:
                rows = []
                wanted = sorted(set(nums))
                for i in range(0, len(wanted), _CHUNK):
                    chunk = wanted[i : i + _CHUNK]
                    rows += await db.execute_fetchall(
                        f"SELECT {_PASSING_COLS} FROM passings WHERE state = 'Pending' AND token_session = ? "
                        f"AND num_passing IN ({','.join('?' * len(chunk))}) ORDER BY num_passing",
                        (token_session, *chunk),
                    )
            old = [_row(r) for r in rows]
            if not old:
                return {}
            await self._ensure_session(db, to_session, floor)
            first = await self._allocate(db, to_session, len(old))
            mapping = {row.passing.num_passing: first + i for i, row in enumerate(old)}
            # The old rows leave Pending first so the new ones never coexist with them as two Pending copies.
            await db.executemany(
                "UPDATE passings SET state = 'Moved', reason = ? WHERE id = ?",
                [(f"moved to session {to_session} as num_passing {mapping[r.passing.num_passing]}", r.id) for r in old],
            )
            await db.executemany(
                "INSERT INTO passings (token_session, num_passing, timestamp, bib, chip, participant_id, timezone, "
                "latitude, longitude, gender, status, origin, read_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        to_session,
                        mapping[r.passing.num_passing],
                        _ts(r.passing.timestamp),
                        r.passing.bib,
                        r.passing.chip,
                        r.passing.participant_id,
                        r.passing.timezone,
                        r.passing.latitude,
                        r.passing.longitude,
                        r.passing.gender,
                        r.passing.status,
                        r.origin,
                        r.read_id,
                        _ts(r.created_at),
                    )  # keeps its age: oldest_pending_age_s stays honest
                    for r in old
                ],
            )
        log.warning(
            "passings renumbered",
            from_session=token_session,
            to_session=to_session,
            count=len(mapping),
            first=min(mapping.values()),
            last=max(mapping.values()),
            floor=floor,
        )
        return mapping

    async def requeue(self, token_session: str, nums: Sequence[int]) -> int:
        """Sent -> Pending: a reconcile found them missing in the cloud. Same numbers: the cloud dedups."""
        if not nums:
            return 0
        async with self._write() as db:
            cur = await db.executemany(
                "UPDATE passings SET state = 'Pending', sent_at = NULL, reason = 'requeued: missing in the cloud' "
                "WHERE token_session = ? AND num_passing = ? AND state = 'Sent'",
                [(token_session, n) for n in nums],
            )
            changed = max(cur.rowcount, 0)
        log.warning("passings requeued", token_session=token_session, count=changed)
        return changed

    async def unreject(self, token_session: str, nums: Sequence[int], reason: str) -> int:
        """Rejected (for exactly `reason`) -> Pending: the uploader found the refusal was the cloud's, not the
        row's. Same numbers; a Voided row is never touched (it is not Rejected)."""
        if not nums:
            return 0
        async with self._write() as db:
            cur = await db.executemany(
                "UPDATE passings SET state = 'Pending', reason = NULL WHERE token_session = ? AND num_passing = ? "
                "AND state = 'Rejected' AND reason = ?",
                [(token_session, n, reason) for n in nums],
            )
            changed = max(cur.rowcount, 0)
        if changed:
            log.warning(
                "rejected passings back to Pending: the cloud refused every passing, not these",
                token_session=token_session,
                count=changed,
                reason=reason,
            )
        return changed

    async def requeue_rejected(self, token_session: str | None = None) -> int:
        """`outbox requeue --rejected`: every Rejected row the operator did not void goes back to Pending, with
        its num_passing (of one session, or of all). The old reason is kept after a 'requeued' prefix."""
        sql = (
            "UPDATE passings SET state = 'Pending', reason = 'requeued after: ' || COALESCE(reason, '?') "
            "WHERE state = 'Rejected'"
        )
        params: tuple[Any, ...] = ()
        if token_session is not None:
            sql += " AND token_session = ?"
            params += (token_session,)
        async with self._write() as db:
            cur = await db.execute(sql, params)
            changed = max(cur.rowcount, 0)
        log.warning("rejected passings requeued", token_session=token_session or "(all)", count=changed)
        return changed

    async def void(self, token_session: str, num: int) -> bool:
        """A manual passing the operator takes back, while it is still Pending and was never sent: False when
        it is not a Pending manual passing; VoidRefused when a request carrying it has gone out (the cloud
        may hold it, so voiding it here would only hide it from the crew)."""
        async with self._write() as db:
            found = await db.execute_fetchall(
                "SELECT attempts FROM passings "
                "WHERE token_session = ? AND num_passing = ? AND state = 'Pending' AND origin = 'manual'",
                (token_session, num),
            )
            rows = list(found)
            if rows and int(rows[0][0]) > 0:
                raise VoidRefused(
                    f"num_passing {num} was already sent to the cloud ({rows[0][0]} attempt(s)) and may be there: "
                    "not voided; once it is Sent, correct it in the results (or mark the right bib) instead"
                )
            cur = await db.execute(
                "UPDATE passings SET state = 'Voided', reason = ? WHERE token_session = ? AND num_passing = ? "
                "AND state = 'Pending' AND origin = 'manual' AND attempts = 0",
                (VOID_REASON, token_session, num),
            )
            done = cur.rowcount == 1
        if done:
            log.info("manual passing voided", token_session=token_session, num_passing=num)
        return done

    async def passing_of_read(self, read_id: int) -> OutboxRow | None:
        """The passing a journaled read became (the newest, if it was moved), or None if none yet."""
        rows = await self._fetchall(
            f"SELECT {_PASSING_COLS} FROM passings WHERE read_id = ? ORDER BY id DESC LIMIT 1", (read_id,)
        )
        return _row(rows[0]) if rows else None

    async def rows(
        self,
        token_session: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        *,
        newest_first: bool = False,
    ) -> list[OutboxRow]:
        """Passings in storage order (oldest first unless `newest_first`), optionally filtered."""
        if state is not None and state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        where, params = [], []
        if token_session is not None:
            where.append("token_session = ?")
            params.append(token_session)
        if state is not None:
            where.append("state = ?")
            params.append(state)
        sql = f"SELECT {_PASSING_COLS} FROM passings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        sql += " LIMIT ?"
        rows = await self._fetchall(sql, (*params, -1 if limit is None else limit))
        return [_row(r) for r in rows]

    async def stats(self) -> OutboxStats:
        counts = dict.fromkeys(STATES, 0)
        for state, n in await self._fetchall("SELECT state, COUNT(*) FROM passings GROUP BY state"):
            counts[state] = n
        reads = (await self._fetchall("SELECT COUNT(*) FROM reads"))[0][0]
        oldest = (await self._fetchall("SELECT MIN(created_at) FROM passings WHERE state = 'Pending'"))[0][0]
        current = await self.current_session()
        age = max(0.0, (_now() - _dt(oldest)).total_seconds()) if oldest else None
        return OutboxStats(
            pending=counts["Pending"],
            sent=counts["Sent"],
            rejected=counts["Rejected"],
            reads=int(reads),
            oldest_pending_age_s=age,
            token_session=current.token_session if current else None,
        )

    async def prune_sent(self, older_than_s: float) -> int:
        """Explicit retention (invariant 5): delete Sent passings sent more than `older_than_s` ago. The
        journal of raw reads is kept, and numbers stay allocated (the session's high-water mark)."""
        if older_than_s < 0:
            raise ValueError("older_than_s must be >= 0")
        cutoff = _ts(_now() - timedelta(seconds=older_than_s))
        async with self._write() as db:
            # The high-water mark first, so a pruned top number can never be handed out again.
            await db.execute(
                "UPDATE sessions SET allocated = MAX(allocated, COALESCE((SELECT MAX(num_passing) FROM passings p "
                "WHERE p.token_session = sessions.token_session), 0))"
            )
            cur = await db.execute("DELETE FROM passings WHERE state = 'Sent' AND sent_at <= ?", (cutoff,))
            deleted = max(cur.rowcount, 0)
        log.warning("pruned sent passings", count=deleted, sent_before=cutoff, db=str(self.path))
        return deleted

    async def integrity_check(self) -> list[str]:
        """Full check (every page, every index): ['ok'] when fine, else SQLite's list of problems."""
        try:
            return [str(r[0]) for r in await self._fetchall("PRAGMA integrity_check")]
        except sqlite3.Error as exc:
            return [f"unreadable: {_one_line(exc)}"]

    async def export_table(self, table: str) -> tuple[list[str], list[Sequence[Any]]]:
        """Column names and rows of `reads`, `rejected_lines` or `sessions`, in storage order (for export)."""
        if table not in _EXPORTABLE:
            raise ValueError(f"table must be one of {sorted(_EXPORTABLE)}, got {table!r}")
        cols = _EXPORTABLE[table]
        return list(cols), await self._fetchall(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid")


class VoidRefused(StorageError):
    """`void` of a manual passing that a request may already have carried to the cloud."""


class _NoSession(Exception):
    """Internal: commit_step found no current session (rolled back)."""


@dataclass
class _Submission:
    link: str
    reads: Sequence[Read]
    reject: tuple[str, int, str, str] | None
    future: asyncio.Future[list[int | None]]


class JournalWriter:
    """Group commit in front of `Outbox.journal`: concurrent submissions from every link are committed in ONE
    transaction (up to `max_rows`), then every submitter's future resolves. Under load that is one fsync per
    batch, never per read. By default there is no linger timer (`max_delay=0`): what queues while a commit's
    fsync is in flight forms the next batch by itself, so batching follows the disk's own speed.
    benchmarks/journal.py measured a 5 ms linger at 0.27x a naive commit-per-read with trickling readers,
    adding ~6 ms to every acknowledgement; without it, 2.7x with the same 0.25 transactions per read.

    Also the links' ReadSink: `journal(link, reads)` returns once the reads are durable (acknowledge then).
    """

    def __init__(self, outbox: Outbox, *, max_rows: int = 500, max_delay: float = 0.0) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        self.outbox = outbox
        self.max_rows = max_rows
        self.max_delay = max_delay
        self._queue: list[_Submission] = []
        self._queued_rows = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._running = False
        self._stopped = False
        # plain attributes for the watchdog and status page
        self.committed = 0  # reads stored (new ones)
        self.duplicates = 0  # re-sent reads recognised and not stored twice
        self.rejected = 0  # unreadable lines kept in rejected_lines
        self.batches = 0  # transactions
        self.last_commit_at: float | None = None  # time.time() of the last commit

    @property
    def alive(self) -> bool:
        return self._running

    @property
    def queued(self) -> int:
        return self._queued_rows

    async def journal(self, link: str, reads: Sequence[Read]) -> Sequence[bool]:
        if not reads:
            return []
        ids = await self._submit(_Submission(link, list(reads), None, self._future()))
        return [i is not None for i in ids]

    async def reject(self, link: str, offset: int, reason: str, raw: str) -> None:
        await self._submit(_Submission(link, [], (link, offset, reason, raw), self._future()))

    @staticmethod
    def _future() -> asyncio.Future[list[int | None]]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, sub: _Submission) -> list[int | None]:
        if self._stopped:
            raise StorageError("journal writer stopped: read not taken")
        self._queue.append(sub)
        self._queued_rows += max(1, len(sub.reads))
        self._wake.set()
        if self._queued_rows >= self.max_rows:
            self._full.set()
        # shield: a submitter giving up (link closed) must not cancel the commit other submitters wait for
        return await asyncio.shield(sub.future)

    async def run(self) -> None:
        self._running = True
        try:
            while True:
                await self._wake.wait()
                if self._queued_rows < self.max_rows and self.max_delay > 0:
                    # linger so that concurrent links share the fsync
                    await wait_event(self._full, self.max_delay)
                flush = asyncio.ensure_future(self._flush_once())
                try:
                    await asyncio.shield(flush)
                except asyncio.CancelledError:
                    await flush  # the commit in flight completes: its submitters are acked
                    raise
        except asyncio.CancelledError:
            # Shutdown: commit what was already taken (invariant 7), then stop.
            self._stopped = True
            while self._queue:
                await self._flush_once()
            raise
        finally:
            self._running = False
            self._stopped = True
            for sub in self._queue:
                if not sub.future.done():
                    sub.future.set_exception(StorageError("journal writer stopped before committing"))
            self._queue.clear()

    async def _flush_once(self) -> None:
        batch: list[_Submission] = []
        rows = 0
        while self._queue and (not batch or rows + max(1, len(self._queue[0].reads)) <= self.max_rows):
            sub = self._queue.pop(0)
            batch.append(sub)
            rows += max(1, len(sub.reads))
        self._queued_rows -= rows
        if not self._queue:
            self._wake.clear()
        if self._queued_rows < self.max_rows:
            self._full.clear()
        if not batch:
            return
        reads = [s for s in batch if s.reject is None]
        rejects = [s.reject for s in batch if s.reject is not None]
        try:
            results = await self.outbox.journal_batch([(s.link, s.reads, "reader") for s in reads], rejects)
        except BaseException as exc:
            err = exc if isinstance(exc, Exception) else StorageError("journal commit interrupted")
            for s in batch:
                if not s.future.done():
                    s.future.set_exception(err)
            raise
        self.batches += 1
        self.last_commit_at = time.time()
        self.rejected += len(rejects)
        for s, ids in zip(reads, results, strict=True):
            new = sum(1 for i in ids if i is not None)
            self.committed += new
            self.duplicates += len(ids) - new
            if not s.future.done():
                s.future.set_result(ids)
        for s in batch:
            if s.reject is not None and not s.future.done():
                s.future.set_result([])
