"""The one connection every part of the store shares: open, pragmas, file lock, transactions, close.

Modelled on zigpy's appdb: a quick integrity check at open, WAL with synchronous=FULL, one writer connection,
explicit `BEGIN IMMEDIATE` transactions, WAL checkpoint then `await db.close()` at shutdown.

A lock file beside the database (`<db>.lock`, holding the pid) makes a second daemon on the same file refuse
to start (invariant 8). Read-only opens (the CLI's stats/export while the daemon runs) take no lock.

Every part of the store (journal, sessions, passings, progress, admin) is a subclass of `Database` and the
facade `Store` is all of them at once: there is one connection and one lock per open file, so a transaction
that writes to several tables (a pipeline step: passings, sessions' high-water mark, cursor, dedup) is one
transaction whichever module its statements come from.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import aiosqlite

from gateway.errors import DatabaseCorruptError, StorageError
from gateway.log import get_logger
from gateway.model import format_ts
from gateway.store import schema

log = get_logger("gateway.store")

CHUNK = 400  # rows per IN (...) lookup: far below SQLite's bound-parameter limit


def keyed_chunks(pairs: Sequence[tuple[Any, Any]]) -> Iterator[tuple[str, list[Any]]]:
    """A lookup by two columns, CHUNK pairs at a time: (`WITH k(r, s) AS (VALUES ...)`, its parameters). The
    caller's `FROM k CROSS JOIN t ON t.a = k.r AND t.b = k.s` keeps the keys outside: one index search each,
    never a scan of the table."""
    for i in range(0, len(pairs), CHUNK):
        chunk = pairs[i : i + CHUNK]
        yield "WITH k(r, s) AS (VALUES " + ",".join(["(?, ?)"] * len(chunk)) + ")", [v for pair in chunk for v in pair]


PARAMS_PER_STATEMENT = 999  # SQLite's oldest bound-parameter limit (3.32 raised its default to 32766)


async def insert_rows(db: aiosqlite.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """`head` ("INSERT INTO t (a, b) VALUES ") with every row, in as few statements as the parameter limit
    allows; `tail` follows each one (an ON CONFLICT clause).

    Not executemany: that is one statement step per row, and sqlite3 releases the GIL around every step. With
    the event loop busy (a burst of reads being parsed) the database thread then waits for the GIL again at
    every row, the convoy effect, and journaling and parsing ran one after the other instead of side by side.
    Many rows per statement make it one wait per statement: `journal_batch` alone went from 10.6 to 6.8 us a
    read, the whole daemon's ingest from about 52,000 to 59,000 reads/s (benchmarks/README.md)."""
    if not rows:
        return
    width = len(rows[0])
    per = max(1, PARAMS_PER_STATEMENT // width)
    one = "(" + ", ".join(["?"] * width) + ")"
    for i in range(0, len(rows), per):
        chunk = rows[i : i + per]
        await db.execute(head + ", ".join([one] * len(chunk)) + tail, [v for row in chunk for v in row])


def now() -> datetime:
    return datetime.now(UTC)


def to_text(dt: datetime) -> str:
    """How the store writes every timestamp (format_ts), so `from_text` can read it back with the C parser."""
    return format_ts(dt)


def from_text(text: str) -> datetime:
    """Our own stored timestamps (always written by format_ts): the C parser, not strptime, which
    dominated the pipeline's time."""
    return datetime.fromisoformat(text)


class Columns:
    """Where each column of one result set sits, found by name once for the whole result: `r[c.bib]`.

    sqlite3.Row finds a column by name with a string comparison against every column before it, on every
    access; by index it is an array access. For the bulk reads (the uploader's pending batch, the pipeline's
    reads) that was a third of the mapping's time per row, so their mappers look the names up here once.
    Plain attributes (set one by one, no __getattr__ at run time) keep each `c.name` a specialised lookup."""

    def __init__(self, rows: Sequence[sqlite3.Row]) -> None:
        for i, name in enumerate(rows[0].keys() if rows else ()):  # no rows: no column is ever asked for
            setattr(self, name, i)

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> int: ...  # every column name is an int; a wrong one, AttributeError


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """SQLite's own words for a damaged file, as opposed to a locked, missing or read-only one."""
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


class _LockFile:
    """fcntl.flock on `<db>.lock`: released by the kernel when the process dies, so a SIGKILLed daemon never
    leaves a stale lock; the pid inside is only for the message."""

    def __init__(self, db: Path) -> None:
        self.path = Path(str(db) + ".lock")
        self.fd: int | None = None
        self.left = ""  # what the last holder left in the file: a clean stamp (see CleanStamp), or nothing

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
        with contextlib.suppress(OSError, UnicodeDecodeError):
            self.left = os.pread(fd, 200, 0).decode()
        with contextlib.suppress(OSError):  # a full disk must not stop the start: the pid is only for the message
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self, leave: str = "") -> None:
        """Unlock, leaving `leave` in the file (a clean stamp) instead of our pid."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
                if leave:
                    os.pwrite(self.fd, leave.encode(), 0)
                    os.fsync(self.fd)
            os.close(self.fd)  # closing drops the flock
            self.fd = None


@dataclass(frozen=True)
class CleanStamp:
    """What a clean close leaves in the lock file: the database file as it was closed (checkpointed, no WAL).

    The next open that finds the file exactly so (same inode, size and modification time, no WAL) knows no
    process wrote it since, and skips the quick_check before READY: O(database), 1.5 s for a million passings
    on a laptop and four times that on a Pi. A start after a crash or a power cut finds no stamp (the running
    daemon's lock file holds its pid) and checks the whole file first, as does a start after anything touched
    the file. Damage that changes nothing of that (a failing SD card) is what the check beside the running
    gateway is for (Database.check_aside)."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> CleanStamp | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)

    def text(self) -> str:
        return f"clean {self.inode} {self.size} {self.mtime_ns}\n"

    @classmethod
    def parse(cls, text: str) -> CleanStamp | None:
        parts = text.split()
        if len(parts) != 4 or parts[0] != "clean" or not all(p.isdigit() for p in parts[1:]):
            return None
        return cls(int(parts[1]), int(parts[2]), int(parts[3]))

    @staticmethod
    def holds(left: str, path: Path) -> bool:
        """The file is as a clean close left it, and no WAL holds changes made since."""
        stamp = CleanStamp.parse(left)
        if stamp is None or stamp != CleanStamp.of(path):
            return False
        wal = Path(str(path) + "-wal")
        return not wal.exists() or wal.stat().st_size == 0


class Database:
    """The connection and its plumbing. Create with `await <class>.open(path)`; the parts of the store add
    the coroutines, each write one transaction."""

    def __init__(self, db: aiosqlite.Connection, path: Path, lock: _LockFile | None, read_only: bool) -> None:
        self._db = db
        self.path = path
        self._lockfile = lock
        self.read_only = read_only
        # One connection, several coroutines: a transaction spans several awaits, so they must not interleave.
        self._lock = asyncio.Lock()
        self._closed = False
        self.checked_at_open = False  # quick_check ran before open() returned
        # The open skipped the check (a clean stamp) and check_aside has not finished one since: close() leaves
        # no stamp then, so the check is not skipped twice in a row (a daemon stopped before its check_aside
        # ended, a crew command that wrote without a daemon).
        self.check_owed = False
        self.damaged: str | None = None  # what check_aside found: no clean stamp then, the next start checks

    # -- open / close ---------------------------------------------------------------------------------
    @classmethod
    async def open(
        cls, path: str | Path, *, lock: bool = True, read_only: bool = False, quick_check: bool = True
    ) -> Self:
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
            db.row_factory = sqlite3.Row  # every part reads its columns by name
            self = cls(db, path, lockfile, read_only)
            clean = lockfile is not None and CleanStamp.holds(lockfile.left, path)
            self.checked_at_open = quick_check and not clean
            self.check_owed = quick_check and clean
            await self._prepare(self.checked_at_open, refuse_damage=quick_check)
            return self
        except BaseException as exc:
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            if lockfile is not None:
                lockfile.release()
            if isinstance(exc, sqlite3.DatabaseError) and _is_damage(exc):
                raise DatabaseCorruptError(f"database {path} is damaged: {one_line(exc)}") from None
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"database {path} is unusable: {one_line(exc)}") from None
            raise

    async def _prepare(self, quick_check: bool, *, refuse_damage: bool) -> None:
        """`quick_check`: check the whole file now. `refuse_damage` False only for `outbox check`, which must
        be able to open a damaged file to report on it."""
        db = self._db
        await db.execute("PRAGMA busy_timeout = 5000")  # a reader may meet the daemon's checkpoint
        check = [r["quick_check"] for r in await db.execute_fetchall("PRAGMA quick_check")] if quick_check else ["ok"]
        if check != ["ok"]:
            raise DatabaseCorruptError(
                f"database {self.path} failed its integrity check ({'; '.join(check[:3])}): "
                "restore it from a backup or move it aside"
            )
        version = int((await self._one("PRAGMA user_version"))["user_version"])
        if not refuse_damage and self.read_only:
            return  # `outbox check` on a damaged file: let integrity_check report, do not refuse here
        if version > schema.SCHEMA_VERSION:
            raise StorageError(
                f"database {self.path} has schema version {version}, newer than this gateway's {schema.SCHEMA_VERSION}"
            )
        if self.read_only:
            if version < schema.SCHEMA_VERSION:
                raise StorageError(
                    f"database {self.path} has schema version {version}: start the gateway once to migrate it"
                )
            return
        mode = (await self._one("PRAGMA journal_mode = WAL"))["journal_mode"]
        if str(mode).lower() != "wal":
            raise StorageError(f"database {self.path}: cannot switch to WAL (journal_mode is {mode})")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        for step in schema.steps(version):
            async with self._txn():
                for statement in step.statements:
                    await db.execute(statement)
            log.info("database migrated", db=str(self.path), from_version=step.from_version, to_version=step.to_version)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            stamp = ""
            async with self._lock:
                if not self.read_only:
                    with contextlib.suppress(sqlite3.Error):
                        await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                await self._db.close()
                if not self.read_only and self.damaged is None and not self.check_owed:
                    clean = CleanStamp.of(self.path)  # closed: the file as the next open should find it
                    stamp = clean.text() if clean is not None else ""
        finally:
            if self._lockfile is not None:
                self._lockfile.release(stamp)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def check_aside(self) -> list[str]:
        """PRAGMA quick_check on a connection of its own, in a thread, beside the running gateway (WAL: it
        reads a snapshot and blocks no writer): the start that skipped it, after a clean close, still has the
        whole file checked. Problems found (not ["ok"]) are kept in `damaged`, so close() leaves no clean stamp
        and the next start checks before READY (and moves a damaged file aside)."""

        opened: list[sqlite3.Connection] = []

        def check() -> list[str]:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            opened.append(con)
            try:
                con.execute("PRAGMA busy_timeout = 5000")
                return [str(r[0]) for r in con.execute("PRAGMA quick_check")]
            finally:
                con.close()

        try:
            found = await asyncio.to_thread(check)
        except asyncio.CancelledError:
            # A stop during the check: interrupt it, or asyncio.run would wait for the thread (seconds on a Pi
            # with a big file) before the process exits. The check stays owed: no clean stamp at close.
            for con in opened:
                with contextlib.suppress(sqlite3.Error):
                    con.interrupt()
            raise
        except sqlite3.DatabaseError as exc:
            found = [one_line(exc)]
        if found != ["ok"]:
            self.damaged = "; ".join(found[:3])
        self.check_owed = False
        return found

    # -- plumbing -------------------------------------------------------------------------------------
    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row or None, inside a transaction or open() (the caller holds the lock, or needs none)."""
        rows = list(await self._db.execute_fetchall(sql, params))
        first: sqlite3.Row | None = rows[0] if rows else None
        return first

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row:
        """`_fetchone` of a statement that always yields a row (a pragma, an aggregate)."""
        row = await self._fetchone(sql, params)
        if row is None:
            raise StorageError(f"database {self.path}: no row from {sql.split()[0]}")
        return row

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            if self._closed:
                raise StorageError(f"database {self.path} is closed")
            try:
                return list(await self._db.execute_fetchall(sql, params))
            except sqlite3.DatabaseError as exc:
                damage = self._damage(exc)
                if damage is None:
                    raise
                raise damage from None

    def _damage(self, exc: sqlite3.DatabaseError) -> DatabaseCorruptError | None:
        """A damaged page met while running (a start that trusted its clean stamp, a card failing now): the
        typed error the daemon exits on for systemd to restart it, and no clean stamp at close, so that start
        checks the file first and moves it aside. None for any other SQLite error."""
        if not _is_damage(exc):
            return None
        self.damaged = one_line(exc)
        return DatabaseCorruptError(
            f"database {self.path} is damaged ({self.damaged}): the next start checks it and moves it aside"
        )

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
            raise StorageError(f"database {self.path}: commit failed: {one_line(exc)}") from None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            if self._closed:
                raise StorageError(f"database {self.path} is closed")
            try:
                async with self._txn() as db:
                    yield db
            except sqlite3.Error as exc:
                damage = self._damage(exc) if isinstance(exc, sqlite3.DatabaseError) else None
                raise damage or StorageError(f"database {self.path}: write failed: {one_line(exc)}") from None
