"""What the crew and the operator ask of the whole file: counts, retention, integrity, export.

`prune_sent` is the only deletion in the store, and only on the operator's request (invariant 5).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway.log import get_logger
from gateway.store.db import from_text, now, one_line, to_text
from gateway.store.passings import STATES, Passings

log = get_logger("gateway.store")

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


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    sent: int
    rejected: int
    reads: int
    oldest_pending_age_s: float | None
    token_session: str | None


class Admin(Passings):
    """Reads over every table, and the operator's explicit retention."""

    async def stats(self) -> OutboxStats:
        counts = dict.fromkeys(STATES, 0)
        for r in await self._fetchall("SELECT state, COUNT(*) AS n FROM passings GROUP BY state"):
            counts[r["state"]] = r["n"]
        reads = (await self._fetchall("SELECT COUNT(*) AS n FROM reads"))[0]["n"]
        sql = "SELECT MIN(created_at) AS oldest FROM passings WHERE state = 'Pending'"
        oldest = (await self._fetchall(sql))[0]["oldest"]
        current = await self.current_session()
        age = max(0.0, (now() - from_text(oldest)).total_seconds()) if oldest else None
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
        cutoff = to_text(now() - timedelta(seconds=older_than_s))
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
            return [str(r["integrity_check"]) for r in await self._fetchall("PRAGMA integrity_check")]
        except sqlite3.Error as exc:
            return [f"unreadable: {one_line(exc)}"]

    async def export_table(self, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of `reads`, `rejected_lines` or `sessions`, in storage order (for export)."""
        if table not in _EXPORTABLE:
            raise ValueError(f"table must be one of {sorted(_EXPORTABLE)}, got {table!r}")
        cols = _EXPORTABLE[table]
        rows = await self._fetchall(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid")
        return list(cols), [tuple(r[c] for c in cols) for r in rows]
