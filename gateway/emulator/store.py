"""The emulated cloud's data: devices, sessions, passings in SQLite (in memory, or a file that
survives a restart). Plain sqlite3 on the loop thread: every statement is a few rows on a local
database, and a test double that spawns no thread keeps the leak checks of the tests meaningful."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.emulator.timestamps import contract_now

PAGE = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    deviceid TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    alias TEXT, firmware TEXT, type TEXT,
    creation_date TEXT NOT NULL,
    last_seen TEXT,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_session TEXT PRIMARY KEY,
    deviceid TEXT NOT NULL REFERENCES devices(deviceid) ON DELETE CASCADE,
    alias TEXT,
    creation_date TEXT NOT NULL,
    closed_date TEXT,
    active INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS passings (
    token_session TEXT NOT NULL REFERENCES sessions(token_session) ON DELETE CASCADE,
    num_passing INTEGER NOT NULL,
    deviceid TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    bib TEXT NOT NULL,
    chip TEXT, participant_id TEXT, status TEXT, timezone TEXT, gender TEXT,
    latitude REAL, longitude REAL,
    PRIMARY KEY (token_session, num_passing)
);
CREATE INDEX IF NOT EXISTS passings_device_ts ON passings(deviceid, timestamp);
"""
_PASSING_COLS = (
    "token_session", "deviceid", "timestamp", "num_passing", "bib", "chip",
    "participant_id", "status", "timezone", "gender", "latitude", "longitude",
)  # fmt: skip


def now_ts() -> str:
    return contract_now()


def new_id() -> str:
    """64 uppercase hex characters, the vendor's shape for deviceid and token_session."""
    return secrets.token_hex(32).upper()


def _coord(value: Any) -> str | None:
    # Read back as strings, as in every vendor example ("0.0").
    return None if value is None else repr(float(value))


class Store:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.db = sqlite3.connect(path or ":memory:", isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA foreign_keys = ON")
        if path:
            self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _seq(self, table: str) -> int:
        row = self.db.execute(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table}").fetchone()
        return int(row[0])

    # -- devices ---------------------------------------------------------------------------------------

    def bind(self, model: str, serial: str, alias: str | None, firmware: str | None, type_: str | None) -> str:
        """Binding the same model + serial again answers the existing deviceid (a gateway that lost its
        database binds again and must land on the same device)."""
        row = self.db.execute(
            "SELECT deviceid FROM devices WHERE model = ? AND serial_number = ?", (model, serial)
        ).fetchone()
        if row:
            self.db.execute(
                "UPDATE devices SET alias = COALESCE(?, alias), firmware = COALESCE(?, firmware),"
                " type = COALESCE(?, type) WHERE deviceid = ?",
                (alias, firmware, type_, row[0]),
            )
            return str(row[0])
        deviceid = new_id()
        self.db.execute(
            "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (deviceid, model, serial, alias, firmware, type_, now_ts(), self._seq("devices")),
        )
        return deviceid

    def unbind(self, deviceid: str) -> bool:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM passings WHERE deviceid = ?", (deviceid,))
            self.db.execute("DELETE FROM sessions WHERE deviceid = ?", (deviceid,))
            cur = self.db.execute("DELETE FROM devices WHERE deviceid = ?", (deviceid,))
        return cur.rowcount > 0

    def has_device(self, deviceid: str) -> bool:
        return self.db.execute("SELECT 1 FROM devices WHERE deviceid = ?", (deviceid,)).fetchone() is not None

    def device(self, deviceid: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT d.*, (SELECT COUNT(*) FROM sessions s WHERE s.deviceid = d.deviceid) AS sessions,"
            " (SELECT COUNT(*) FROM passings p WHERE p.deviceid = d.deviceid) AS passings"
            " FROM devices d WHERE deviceid = ?",
            (deviceid,),
        ).fetchone()
        return None if row is None else self._device_dict(row)

    @staticmethod
    def _device_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "deviceid": row["deviceid"], "type": row["type"], "model": row["model"], "alias": row["alias"],
            "firmware": row["firmware"], "serial_number": row["serial_number"],
            "creation_date": row["creation_date"], "sessions": row["sessions"], "passings": row["passings"],
            "last_seen": row["last_seen"],
        }  # fmt: skip

    def devices(self, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        total = int(self.db.execute("SELECT COUNT(*) FROM devices").fetchone()[0])
        rows = self.db.execute(
            "SELECT d.*, (SELECT COUNT(*) FROM sessions s WHERE s.deviceid = d.deviceid) AS sessions,"
            " (SELECT COUNT(*) FROM passings p WHERE p.deviceid = d.deviceid) AS passings"
            " FROM devices d ORDER BY seq LIMIT ? OFFSET ?",
            (limit, (page - 1) * limit),
        ).fetchall()
        return [self._device_dict(r) for r in rows], total

    # -- sessions --------------------------------------------------------------------------------------

    def create_session(self, deviceid: str, alias: str | None) -> str:
        token = new_id()
        now = now_ts()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "UPDATE sessions SET active = 0, closed_date = ? WHERE deviceid = ? AND active = 1", (now, deviceid)
            )
            self.db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, NULL, 1, ?)",
                (token, deviceid, alias, now, self._seq("sessions")),
            )
        return token

    def close_session(self, token: str) -> bool:
        row = self.db.execute("SELECT active FROM sessions WHERE token_session = ?", (token,)).fetchone()
        if row is None:
            return False
        if row[0]:
            self.db.execute(
                "UPDATE sessions SET active = 0, closed_date = ? WHERE token_session = ?", (now_ts(), token)
            )
        return True

    def session_row(self, token: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute("SELECT * FROM sessions WHERE token_session = ?", (token,)).fetchone()
        return row

    def _session_dict(self, row: sqlite3.Row, detailed: bool) -> dict[str, Any]:
        stats = self.db.execute(
            "SELECT COUNT(*), MIN(num_passing), MAX(num_passing) FROM passings WHERE token_session = ?",
            (row["token_session"],),
        ).fetchone()
        out: dict[str, Any] = {
            "token_session": row["token_session"],
            "alias": row["alias"],
            "creation_date": row["creation_date"],
        }
        if detailed:
            start = datetime.strptime(row["creation_date"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            end_text = row["closed_date"]
            end = (
                datetime.strptime(end_text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                if end_text
                else datetime.now(UTC)
            )
            out["duration"] = max(0, int((end - start).total_seconds()))  # whole seconds open
        out["active"] = bool(row["active"])
        out["passings"] = int(stats[0])
        if detailed:
            out["first"] = stats[1]
            out["last"] = stats[2]
        return out

    def sessions_of(self, deviceid: str, active_only: bool) -> list[dict[str, Any]]:
        sql = "SELECT * FROM sessions WHERE deviceid = ?" + (" AND active = 1" if active_only else "") + " ORDER BY seq"
        return [self._session_dict(r, detailed=active_only) for r in self.db.execute(sql, (deviceid,)).fetchall()]

    def session(self, token: str) -> dict[str, Any] | None:
        row = self.session_row(token)
        return None if row is None else self._session_dict(row, detailed=True)

    # -- passings --------------------------------------------------------------------------------------

    def insert(self, token: str, deviceid: str, items: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """Store new passings; a (token, num_passing) already held is a duplicate, never stored twice."""
        inserted = 0
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for it in items:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO passings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        token, it["num_passing"], deviceid, it["timestamp"], it["bib"], it.get("chip"),
                        it.get("participant_id"), it.get("status"), it.get("timezone"), it.get("gender"),
                        it.get("latitude"), it.get("longitude"),
                    ),
                )  # fmt: skip
                inserted += cur.rowcount
            self.db.execute("UPDATE devices SET last_seen = ? WHERE deviceid = ?", (now_ts(), deviceid))
        return inserted, len(items) - inserted

    @staticmethod
    def _passing_dict(row: sqlite3.Row) -> dict[str, Any]:
        out = {k: row[k] for k in _PASSING_COLS}
        out["latitude"] = _coord(row["latitude"])
        out["longitude"] = _coord(row["longitude"])
        return out

    def session_passings(self, token: str, first: int | None, last: int | None, page: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM passings WHERE token_session = ? AND num_passing >= COALESCE(?, num_passing)"
            " AND num_passing <= COALESCE(?, num_passing) ORDER BY num_passing LIMIT ? OFFSET ?",
            (token, first, last, PAGE, (page - 1) * PAGE),
        ).fetchall()
        return [self._passing_dict(r) for r in rows]

    def device_passings(self, deviceid: str, start: str | None, end: str | None, page: int) -> list[dict[str, Any]]:
        # The timestamps share one fixed-width form, so text order is time order.
        rows = self.db.execute(
            "SELECT p.* FROM passings p JOIN sessions s USING (token_session) WHERE p.deviceid = ?"
            " AND p.timestamp >= COALESCE(?, p.timestamp) AND p.timestamp <= COALESCE(?, p.timestamp)"
            " ORDER BY p.timestamp, s.seq, p.num_passing LIMIT ? OFFSET ?",
            (deviceid, start, end, PAGE, (page - 1) * PAGE),
        ).fetchall()
        return [self._passing_dict(r) for r in rows]

    # -- whole-state views (admin endpoint, HTML page) --------------------------------------------------

    def all_devices(self) -> list[dict[str, Any]]:
        return self.devices(1, 1 << 30)[0]

    def all_sessions(self) -> list[sqlite3.Row]:
        return list(self.db.execute("SELECT * FROM sessions ORDER BY seq").fetchall())

    def num_passings(self, token: str) -> list[int]:
        return [
            int(r[0])
            for r in self.db.execute(
                "SELECT num_passing FROM passings WHERE token_session = ? ORDER BY num_passing", (token,)
            )
        ]

    def passings_of(self, token: str, limit: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM passings WHERE token_session = ? ORDER BY num_passing LIMIT ?", (token, limit)
        ).fetchall()
        return [self._passing_dict(r) for r in rows]

    def reset(self) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM passings")
            self.db.execute("DELETE FROM sessions")
            self.db.execute("DELETE FROM devices")
