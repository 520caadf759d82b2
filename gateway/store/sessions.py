"""Sessions and num_passing allocation.

`num_passing` is allocated inside the transaction that stores the passing, above the session's high-water
mark, which is itself stored (`sessions.allocated`): pruning Sent rows can never make a number reusable
(invariant 2). The allocation helpers take the open transaction's connection, so whichever part of the store
stores passings numbers them in its own transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from gateway.errors import StorageError
from gateway.log import get_logger
from gateway.store.db import Database, from_text, now, to_text

log = get_logger("gateway.store")


@dataclass(frozen=True)
class SessionRecord:
    token_session: str
    alias: str | None
    deviceid: str | None
    created_by_us: bool
    floor: int
    active: bool
    created_at: datetime

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> SessionRecord:
        return cls(
            token_session=r["token_session"],
            alias=r["alias"],
            deviceid=r["deviceid"],
            created_by_us=bool(r["created_by_us"]),
            floor=r["floor"],
            active=bool(r["active"]),
            created_at=from_text(r["created_at"]),
        )


_SESSION_COLS = "token_session, alias, deviceid, created_by_us, floor, active, created_at"


class Sessions(Database):
    """Which session new passings are numbered in, and the numbers each session has handed out."""

    async def current_session(self) -> SessionRecord | None:
        rows = await self._fetchall(f"SELECT {_SESSION_COLS} FROM sessions WHERE active = 1 LIMIT 1")
        return SessionRecord.from_row(rows[0]) if rows else None

    async def sessions(self) -> list[SessionRecord]:
        rows = await self._fetchall(f"SELECT {_SESSION_COLS} FROM sessions ORDER BY created_at, rowid")
        return [SessionRecord.from_row(r) for r in rows]

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
        stamp = to_text(now())
        async with self._write() as db:
            await db.execute(
                "UPDATE sessions SET active = 0, closed_at = COALESCE(closed_at, ?) "
                "WHERE active = 1 AND token_session != ?",
                (stamp, token_session),
            )
            await db.execute(
                "INSERT INTO sessions (token_session, alias, deviceid, created_by_us, floor, active, created_at) "
                "VALUES (?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (token_session) DO UPDATE SET active = 1, closed_at = NULL, "
                "alias = COALESCE(excluded.alias, alias), deviceid = COALESCE(excluded.deviceid, deviceid), "
                "floor = MAX(floor, excluded.floor)",
                (token_session, alias, deviceid, int(created_by_us), max(0, floor), stamp),
            )
        log.info("current session set", token_session=token_session, floor=floor, created_by_us=created_by_us)

    async def max_num_passing(self, token_session: str) -> int:
        """The highest num_passing allocated locally in the session (0 if none)."""
        rows = await self._fetchall(
            "SELECT MAX(COALESCE((SELECT allocated FROM sessions WHERE token_session = ?), 0), "
            "COALESCE((SELECT MAX(num_passing) FROM passings WHERE token_session = ?), 0)) AS highest",
            (token_session, token_session),
        )
        return int(rows[0]["highest"])

    # -- inside another part's transaction ------------------------------------------------------------
    async def _current_token(self) -> str | None:
        row = await self._fetchone("SELECT token_session FROM sessions WHERE active = 1 LIMIT 1")
        return None if row is None else str(row["token_session"])

    @staticmethod
    async def _ensure_session(db: aiosqlite.Connection, token_session: str, floor: int) -> None:
        await db.execute(
            "INSERT INTO sessions (token_session, floor, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (token_session) DO UPDATE SET floor = MAX(floor, excluded.floor)",
            (token_session, max(0, floor), to_text(now())),
        )

    async def _allocate(self, db: aiosqlite.Connection, token_session: str, count: int) -> int:
        """Reserve `count` consecutive numbers in the open transaction; returns the first."""
        row = await self._fetchone(
            "SELECT MAX(s.floor, s.allocated, COALESCE((SELECT MAX(num_passing) FROM passings p "
            "WHERE p.token_session = s.token_session), 0)) AS highest FROM sessions s WHERE s.token_session = ?",
            (token_session,),
        )
        if row is None:
            raise StorageError(f"session {token_session} is unknown to database {self.path}")
        first = int(row["highest"]) + 1
        await db.execute(
            "UPDATE sessions SET allocated = ? WHERE token_session = ?", (first + count - 1, token_session)
        )
        return first
