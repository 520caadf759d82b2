"""The outbox proper: passings and their states, Pending -> Sent | Rejected | Moved | Voided.

A passing leaves `Pending` only through the uploader's verdicts (mark_sent, mark_rejected), the operator's
void, or renumber (which keeps the old row as `Moved`): nothing here deletes a row (invariant 5; retention is
admin.py's `prune_sent`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite

from gateway.errors import StorageError
from gateway.log import get_logger
from gateway.model import Passing
from gateway.store.db import CHUNK, Columns, from_text, insert_rows, now, to_text
from gateway.store.sessions import Sessions

log = get_logger("gateway.store")

STATES = ("Pending", "Sent", "Rejected", "Moved", "Voided")
VOID_REASON = "voided by operator"  # kept as the Voided row's reason, and how v4 found the voids of v1-v3

_PASSING_COLS = (
    "id, token_session, num_passing, timestamp, bib, chip, participant_id, timezone, latitude, longitude, "
    "gender, status, state, reason, attempts, sent_at, origin, read_id, created_at"
)
_INSERT_PASSINGS = (
    "INSERT INTO passings (token_session, num_passing, timestamp, bib, chip, participant_id, timezone, "
    "latitude, longitude, gender, status, origin, read_id, created_at) VALUES "
)


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

    @classmethod
    def from_rows(cls, rows: Sequence[sqlite3.Row]) -> list[OutboxRow]:
        """Rows of `SELECT {_PASSING_COLS} FROM passings`, by column name (looked up once: db.Columns)."""
        c = Columns(rows)
        return [
            cls(
                id=r[c.id],
                token_session=r[c.token_session],
                passing=Passing(
                    timestamp=from_text(r[c.timestamp]),
                    num_passing=r[c.num_passing],
                    bib=r[c.bib],
                    chip=r[c.chip],
                    participant_id=r[c.participant_id],
                    timezone=r[c.timezone],
                    latitude=r[c.latitude],
                    longitude=r[c.longitude],
                    gender=r[c.gender],
                    status=r[c.status],
                ),
                state=r[c.state],
                reason=r[c.reason],
                attempts=r[c.attempts],
                sent_at=from_text(r[c.sent_at]) if r[c.sent_at] else None,
                origin=r[c.origin],
                read_id=r[c.read_id],
                created_at=from_text(r[c.created_at]),
            )
            for r in rows
        ]


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


class VoidRefused(StorageError):
    """`void` of a manual passing that a request may already have carried to the cloud."""


class Passings(Sessions):
    """Passings stored, numbered in their session, and moved through their states."""

    async def _insert_passings(self, db: aiosqlite.Connection, token: str, passings: Sequence[NewPassing]) -> list[int]:
        """Store passings in `token`'s session inside the caller's open transaction, numbered in it."""
        if not passings:
            return []
        first = await self._allocate(db, token, len(passings))
        created = to_text(now())
        nums = list(range(first, first + len(passings)))
        await insert_rows(
            db,
            _INSERT_PASSINGS,
            [
                (
                    token,
                    n,
                    to_text(p.timestamp),
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

    async def pending(self, token_session: str, limit: int) -> list[OutboxRow]:
        rows = await self._fetchall(
            f"SELECT {_PASSING_COLS} FROM passings WHERE state = 'Pending' AND token_session = ? "
            "ORDER BY num_passing LIMIT ?",
            (token_session, limit),
        )
        return OutboxRow.from_rows(rows)

    async def mark_sent(self, token_session: str, nums: Sequence[int], *, reason: str | None = None) -> int:
        """Pending -> Sent. `reason` notes a Sent the gateway could not verify (the crew sees it in lists)."""
        if not nums:
            return 0
        sent_at = to_text(now())  # one instant for the batch: the 2xx that made it Sent
        wanted = sorted(set(nums))
        marked = 0
        async with self._write() as db:
            # one UPDATE per CHUNK numbers, not one per row: a batch of 500 was 500 statements (profile)
            for i in range(0, len(wanted), CHUNK):
                chunk = wanted[i : i + CHUNK]
                cur = await db.execute(
                    "UPDATE passings SET state = 'Sent', sent_at = ?, reason = ? WHERE token_session = ? "
                    f"AND state = 'Pending' AND num_passing IN ({','.join('?' * len(chunk))})",
                    (sent_at, reason, token_session, *chunk),
                )
                marked += max(cur.rowcount, 0)
        return marked

    async def last_sent(self, token_session: str) -> OutboxRow | None:
        """The session's highest-numbered Sent passing (a passing the cloud is known to have taken)."""
        rows = await self._fetchall(
            f"SELECT {_PASSING_COLS} FROM passings WHERE token_session = ? AND state = 'Sent' "
            "ORDER BY num_passing DESC LIMIT 1",
            (token_session,),
        )
        return next(iter(OutboxRow.from_rows(rows)), None)

    async def add_attempt(self, token_session: str, nums: Sequence[int]) -> set[int]:
        """Count an attempt on the rows about to be sent; returns those still Pending, the only ones to send.

        Called before every request, in the same lock as `void`: a row voided after the uploader read it is
        left out of the request, and once its attempt is counted it can no longer be voided."""
        if not nums:
            return set()
        async with self._write() as db:
            live: set[int] = set()
            wanted = sorted(set(nums))
            for i in range(0, len(wanted), CHUNK):
                chunk = wanted[i : i + CHUNK]
                marks = ",".join("?" * len(chunk))
                await db.execute(
                    "UPDATE passings SET attempts = attempts + 1 "
                    f"WHERE token_session = ? AND state = 'Pending' AND num_passing IN ({marks})",
                    (token_session, *chunk),
                )
                rows = await db.execute_fetchall(
                    f"SELECT num_passing FROM passings WHERE token_session = ? AND state = 'Pending' "
                    f"AND num_passing IN ({','.join('?' * len(chunk))})",
                    (token_session, *chunk),
                )
                live.update(int(r["num_passing"]) for r in rows)
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
                rows = list(await db.execute_fetchall(sql + "ORDER BY num_passing", (token_session,)))
            else:
                rows = []
                wanted = sorted(set(nums))
                for i in range(0, len(wanted), CHUNK):
                    chunk = wanted[i : i + CHUNK]
                    rows += await db.execute_fetchall(
                        f"SELECT {_PASSING_COLS} FROM passings WHERE state = 'Pending' AND token_session = ? "
                        f"AND num_passing IN ({','.join('?' * len(chunk))}) ORDER BY num_passing",
                        (token_session, *chunk),
                    )
            old = OutboxRow.from_rows(rows)
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
            await insert_rows(
                db,
                _INSERT_PASSINGS,
                [
                    (
                        to_session,
                        mapping[r.passing.num_passing],
                        to_text(r.passing.timestamp),
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
                        to_text(r.created_at),
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
            found = await self._fetchone(
                "SELECT attempts FROM passings "
                "WHERE token_session = ? AND num_passing = ? AND state = 'Pending' AND origin = 'manual'",
                (token_session, num),
            )
            if found is not None and int(found["attempts"]) > 0:
                raise VoidRefused(
                    f"num_passing {num} was already sent to the cloud ({found['attempts']} attempt(s)) and may be "
                    "there: not voided; once it is Sent, correct it in the results (or mark the right bib) instead"
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
        return next(iter(OutboxRow.from_rows(rows)), None)

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
        return OutboxRow.from_rows(rows)
