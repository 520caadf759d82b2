"""Clock and disk guards: the two things a Pi at a finish line gets wrong without anyone noticing.

A Pi has no real-time clock: until NTP (or GPS) sets it, it reads whatever systemd restored at boot, possibly
days behind, and the reader timestamps the crew relies on are compared with it nowhere. And an SD card fills
up: SQLite then refuses every write. Each guard keeps plain attributes the status surfaces read (the page,
/status.json, /metrics, sd_notify STATUS=), and logs one line when its verdict changes, not once a minute.

Both take their probe as an argument (a clock-status function, a disk-usage function), so tests drive them
without root and without touching the host's clock or disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import shutil
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.log import get_logger
from gateway.model import Read

log = get_logger("gateway.guards")

CHECK_INTERVAL_S = 60.0  # the clock and the disk are looked at this often (and at start)
FULL_RETRY_S = 5.0  # while the database cannot grow, room is looked for this often
SKEW_WINDOW_S = 60.0  # a reader's clock offset is judged on its freshest read within this long

# The release date of this package: no correct clock reads earlier. A constant written at release rather
# than the mtime of the installed files: those are whatever the Pi's clock said when pip unpacked them, which
# is exactly the clock in doubt (1970 after a boot without network, or ahead after a bad NTP server).
RELEASED = datetime(2026, 12, 1, tzinfo=UTC)


# -- the clock ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClockSync:
    """What the system says of its clock: synchronised (True/False) or unknown (None), and who said it."""

    synced: bool | None
    source: str
    detail: str = ""


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (Linux, LP64 and ILP32 alike: every field is an int or a long)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


STA_UNSYNC = 0x0040
TIME_ERROR = 5


def kernel_clock() -> ClockSync:
    """The kernel's own verdict, as `timedatectl` shows it ("System clock synchronized"): adjtimex(2) with no
    mode set only reads, needs no privilege, and answers for whatever disciplines the clock (timesyncd,
    chrony, ntpd, gpsd all clear STA_UNSYNC once they have a good time)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError) as exc:
        return ClockSync(None, "unavailable", f"adjtimex: {exc}")
    if state < 0:
        return ClockSync(None, "unavailable", f"adjtimex failed (errno {ctypes.get_errno()})")
    synced = state != TIME_ERROR and not tx.status & STA_UNSYNC
    return ClockSync(synced, "adjtimex", f"maxerror {tx.maxerror / 1e6:g} s")


@dataclass
class ClockStatus:
    """/status.json `clock` (every key documented in README)."""

    synced: bool | None = None
    sane: bool = True
    ok: bool = True
    source: str = "not checked yet"
    message: str = ""
    hold_uploads: bool = False
    reader_skew_s: dict[str, float] = field(default_factory=dict)


class ClockGuard:
    def __init__(
        self,
        *,
        hold_uploads_until_synced: bool = False,
        max_skew_s: float = 2.0,
        probe: Callable[[], ClockSync] | None = None,
        now: Callable[[], float] = time.time,
        released: datetime = RELEASED,
    ) -> None:
        self.hold_until_synced = hold_uploads_until_synced
        self.max_skew_s = max_skew_s
        # looked up at each check, not bound here: a test (or a sitecustomize) may swap kernel_clock
        self._probe = probe
        self._now = now
        self._released = released
        self.status = ClockStatus()
        self._checked = False
        self._offsets: dict[str, deque[tuple[float, float]]] = {}
        self._skewed: set[str] = set()

    def check(self) -> bool:
        """Look at the clock now; True when the verdict changed (then one log line says so)."""
        sync = (self._probe or kernel_clock)()
        now = self._now()
        sane = now >= self._released.timestamp()
        ok = sane and sync.synced is not False
        was = (self.status.synced, self.status.sane, self.status.ok)
        s = self.status
        s.synced, s.sane, s.ok, s.source = sync.synced, sane, ok, sync.source
        s.hold_uploads = self.hold_until_synced and not ok
        s.message = self._message(sync, now)
        changed = not self._checked or was != (s.synced, s.sane, s.ok)
        self._checked = True
        if changed:  # the first check too: the journal then says what the clock was at start
            (log.info if ok else log.warning)(
                "system clock " + ("ok" if ok else "not to be trusted"),
                synced=s.synced,
                sane=s.sane,
                source=s.source,
                detail=s.message,
            )
        return changed

    def _message(self, sync: ClockSync, now: float) -> str:
        parts: list[str] = []
        shown = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if now < self._released.timestamp():
            parts.append(f"system clock reads {shown}, before this release ({self._released:%Y-%m-%d}): it is wrong")
        if sync.synced is False:
            parts.append("system clock not synchronised (no NTP or GPS fix yet)")
        elif sync.synced is None:
            parts.append(f"cannot tell whether the system clock is synchronised ({sync.detail or sync.source})")
        if parts and self.hold_until_synced and not (sync.synced is not False and now >= self._released.timestamp()):
            parts.append("uploads held until it is ([clock] hold_uploads_until_synced); reads are still taken")
        elif parts and sync.synced is False:
            parts.append("passings still go out")
        for reader, skew in sorted(self.status.reader_skew_s.items()):
            if abs(skew) > self.max_skew_s:
                side = "ahead of" if skew > 0 else "behind"
                parts.append(f"reader {reader}'s clock is {abs(skew):.1f} s {side} the gateway's")
        return "; ".join(parts)

    @property
    def hold_reason(self) -> str | None:
        """Why uploads wait, or None: what the uploader shows as its reason while it holds."""
        return self.status.message if self.status.hold_uploads else None

    def observe(self, reader: str, reads: Sequence[Read], fresh: Sequence[bool], received: float) -> None:
        """Reads from `reader` just journaled at `received` (gateway time): track the reader's clock offset.

        A read can only arrive after it happened, so reader time minus arrival time is the reader's clock
        offset minus the delay; over SKEW_WINDOW_S the largest value (the freshest read) is the best estimate.
        A backlog (a reader re-sending what it held through a broken link) only lowers values, so it does not
        make a good clock look wrong as long as live reads come too. Re-sent reads (`fresh` False) are skipped.
        """
        window = self._offsets.setdefault(reader, deque())
        # one entry per batch (its freshest read), not per read: the max over the window is the same, and a
        # burst of 100,000 reads no longer makes every batch scan a window of 100,000 entries
        offsets = [read.timestamp.timestamp() for read, new in zip(reads, fresh, strict=True) if new]
        if offsets:
            window.append((received, max(offsets) - received))
        while window and window[0][0] < received - SKEW_WINDOW_S:
            window.popleft()
        if not window:
            return
        skew = round(max(offset for _, offset in window), 3)
        self.status.reader_skew_s[reader] = skew
        if abs(skew) > self.max_skew_s:
            if reader not in self._skewed:  # once per streak
                self._skewed.add(reader)
                log.warning(
                    "reader clock differs from the gateway's",
                    link=reader,
                    skew_s=skew,
                    max_skew_s=self.max_skew_s,
                    hint="check the reader's clock, or the gateway's (status.json clock)",
                )
        elif reader in self._skewed:
            self._skewed.discard(reader)
            log.info("reader clock agrees with the gateway's again", link=reader, skew_s=skew)
        self.status.message = self._message(ClockSync(self.status.synced, self.status.source), self._now())

    @property
    def skewed(self) -> list[str]:
        return sorted(self._skewed)


# -- the disk -------------------------------------------------------------------------------------------
@dataclass
class DiskStatus:
    """/status.json `disk` (every key documented in README)."""

    free_mb: float = 0.0
    min_free_mb: float = 200.0
    low: bool = False
    full: bool = False
    message: str = ""


def sqlite_room(db: str) -> str | None:
    """Whether the database can grow: None if it can, else why not. A write the daemon's own connection
    would make, on a connection of its own with almost no cache, so the pages reach the WAL file on disk at
    once; rolled back, so nothing is kept. A full filesystem and SQLite's own page limit both show as
    SQLITE_FULL here, exactly as they would on the next journal commit."""
    try:
        con = sqlite3.connect(db, timeout=10.0, isolation_level=None)
    except sqlite3.Error as exc:
        return f"cannot open {db}: {exc}"
    try:
        con.execute("PRAGMA cache_size = 2")
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("CREATE TABLE rufus_room_probe (x BLOB)")
            con.execute("INSERT INTO rufus_room_probe VALUES (zeroblob(262144))")  # 64 pages: a burst of reads
        finally:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
    except sqlite3.Error as exc:
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL or "full" in str(exc):
            return f"database or disk is full ({exc})"
        return None  # busy or anything else: not a verdict on space, the journal writer will say
    finally:
        con.close()
    return None


class DiskGuard:
    def __init__(
        self,
        db: str,
        *,
        min_free_mb: float = 200.0,
        usage: Callable[[str], Any] | None = None,
        room: Callable[[str], str | None] | None = None,
    ) -> None:
        self.db = db
        self._usage = usage
        self._room = room
        self.status = DiskStatus(min_free_mb=min_free_mb)
        self._checked = False

    def check(self) -> bool:
        """Free space of the database's filesystem against [outbox] min_free_mb; True when the verdict changed."""
        try:
            free = (self._usage or shutil.disk_usage)(str(Path(self.db).parent)).free
        except OSError as exc:
            log.warning("cannot read free disk space", path=str(Path(self.db).parent), error=str(exc))
            return False
        s = self.status
        was = (s.low, s.full)
        s.free_mb = round(free / 1e6, 1)
        s.low = s.free_mb < s.min_free_mb
        s.message = self._message()
        changed = (was != (s.low, s.full)) if self._checked else s.low
        self._checked = True
        if changed and not s.full:
            (log.warning if s.low else log.info)(
                "disk space low" if s.low else "disk space ok again", free_mb=s.free_mb, min_free_mb=s.min_free_mb
            )
        return changed

    def _message(self) -> str:
        s = self.status
        if s.full:
            return (
                f"DISK FULL: the database cannot grow ({s.free_mb:g} MB free); no new read can be taken. Every read "
                "already taken is kept. Free space on the Pi's storage: the gateway resumes by itself"
            )
        if s.low:
            return f"disk space low: {s.free_mb:g} MB free, below [outbox] min_free_mb = {s.min_free_mb:g}"
        return ""

    def room(self) -> str | None:
        """None when the database can grow, else why not."""
        return (self._room or sqlite_room)(self.db)

    def set_full(self, reason: str | None) -> None:
        s = self.status
        full = reason is not None
        if full == s.full:
            return
        s.full = full
        s.message = self._message()
        if full:
            log.error("disk full: waiting for space, reads are not taken until there is", reason=reason, db=self.db)
        else:
            log.info("disk has room again: taking reads", free_mb=s.free_mb, db=self.db)
