"""The clock and disk guards on their own, driven through their injectable probes (no root, no real clock)."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway import guards, log
from gateway.guards import ClockGuard, ClockSync, DiskGuard
from gateway.model import Read

ROOT = Path(__file__).resolve().parents[2]
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def logged() -> io.StringIO:
    buf = io.StringIO()
    log.configure("debug", stream=buf, json=True)
    return buf


def events(buf: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, buf.getvalue().splitlines()) if e["event"] == name]


def test_the_kernel_is_asked_without_privilege() -> None:
    sync = guards.kernel_clock()
    assert sync.source == "adjtimex" and isinstance(sync.synced, bool), sync


def test_an_unsynchronised_clock_is_said_once_per_change(logged: io.StringIO) -> None:
    state = {"synced": False}
    g = ClockGuard(hold_uploads_until_synced=True, probe=lambda: ClockSync(state["synced"], "test"))
    assert g.check() is True
    for _ in range(5):
        assert g.check() is False  # a minute later, and the next: no new line
    s = g.status
    assert (s.synced, s.sane, s.ok, s.hold_uploads) == (False, True, False, True)
    assert g.hold_reason is not None and "not synchronised" in g.hold_reason
    assert len(events(logged, "system clock not to be trusted")) == 1
    state["synced"] = True
    assert g.check() is True and g.status.ok and g.hold_reason is None and g.status.message == ""
    assert len(events(logged, "system clock ok")) == 1


def test_a_clock_before_the_release_is_not_sane_even_when_synchronised() -> None:
    released = datetime(2026, 12, 1, tzinfo=UTC)
    g = ClockGuard(
        probe=lambda: ClockSync(True, "test"),
        now=lambda: datetime(1970, 1, 1, 0, 1, tzinfo=UTC).timestamp(),
        released=released,
    )
    g.check()
    assert (g.status.synced, g.status.sane, g.status.ok) == (True, False, False)
    assert "1970-01-01 00:01:00 UTC, before this release (2026-12-01)" in g.status.message
    assert g.status.hold_uploads is False  # not asked to hold: said, not held


def test_unknown_sync_is_not_held_on() -> None:
    g = ClockGuard(hold_uploads_until_synced=True, probe=lambda: ClockSync(None, "unavailable", "no adjtimex"))
    g.check()
    assert g.status.ok is True and g.hold_reason is None and "cannot tell" in g.status.message


def test_the_release_date_is_not_in_the_future_of_the_code() -> None:
    """A RELEASED later than the newest commit would call a correct clock wrong."""
    done = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%cI"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    newest = datetime.fromisoformat(done.stdout.strip())
    assert guards.RELEASED <= newest + timedelta(days=1)


def read(ts: datetime, chip: str = "C1") -> Read:
    return Read(chip=chip, bib=None, timestamp=ts)


def test_reader_skew_from_the_freshest_read_warned_once_per_streak(logged: io.StringIO) -> None:
    now = 1_800_000_000.0
    at = datetime.fromtimestamp(now, UTC)
    g = ClockGuard(max_skew_s=2.0, probe=lambda: ClockSync(True, "test"), now=lambda: now)
    g.check()
    # a backlog five minutes old and one live read 0.1 s old: the clock is fine
    g.observe("finish", [read(at - timedelta(minutes=5)), read(at - timedelta(seconds=0.1))], [True, True], now)
    assert g.status.reader_skew_s["finish"] == pytest.approx(-0.1) and g.skewed == []
    # 10 s later the reader's clock runs 5 s ahead, for several batches: one warning
    for i in range(3):
        g.observe("finish", [read(at + timedelta(seconds=15 + i))], [True], now + 10 + i)
    assert g.status.reader_skew_s["finish"] == pytest.approx(5.0) and g.skewed == ["finish"]
    assert "reader finish's clock is 5.0 s ahead of the gateway's" in g.status.message
    [warning] = events(logged, "reader clock differs from the gateway's")
    assert warning["link"] == "finish" and warning["skew_s"] == pytest.approx(5.0)
    # a re-sent read says nothing about the clock
    g.observe("finish", [read(at + timedelta(hours=1))], [False], now + 13)
    assert g.status.reader_skew_s["finish"] == pytest.approx(5.0)
    # the window passes, the reader is right again
    g.observe("finish", [read(at + timedelta(seconds=100))], [True], now + 100)
    assert g.skewed == [] and "reader finish" not in g.status.message
    assert len(events(logged, "reader clock agrees with the gateway's again")) == 1


def test_low_disk_is_said_once_and_cleared(logged: io.StringIO, tmp_path: Path) -> None:
    free = {"bytes": 150e6}
    g = DiskGuard(str(tmp_path / "gw.db"), min_free_mb=200, usage=lambda _p: Usage(0, 0, free["bytes"]))
    assert g.check() is True and g.check() is False
    assert (g.status.free_mb, g.status.low, g.status.full) == (150.0, True, False)
    assert "150 MB free, below [outbox] min_free_mb = 200" in g.status.message
    assert len(events(logged, "disk space low")) == 1
    free["bytes"] = 5e9
    assert g.check() is True and not g.status.low and g.status.message == ""
    assert len(events(logged, "disk space ok again")) == 1


def test_the_room_probe_keeps_nothing_and_sees_a_full_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "gw.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE t (x BLOB)")
    con.execute("INSERT INTO t VALUES (zeroblob(4096))")
    con.commit()
    assert guards.sqlite_room(str(db)) is None
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master")]
    assert tables == ["t"]  # the probe was rolled back
    con.close()
    real = sqlite3.connect

    def small(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        c = real(*args, **kwargs)
        c.execute("PRAGMA max_page_count = 8")  # what a full SD card looks like to SQLite
        return c

    monkeypatch.setattr(sqlite3, "connect", small)
    reason = guards.sqlite_room(str(db))
    assert reason is not None and "full" in reason
    g = DiskGuard(str(db), usage=lambda _p: Usage(0, 0, 1e9))
    g.check()
    g.set_full(reason)
    assert g.status.full and g.status.message.startswith("DISK FULL: the database cannot grow")


def test_gateway_status_line_carries_the_warnings() -> None:
    from gateway import config
    from gateway.service import Gateway

    gw = Gateway(
        config.load(None, environ={}),
        clock=ClockGuard(probe=lambda: ClockSync(False, "test")),
        disk=DiskGuard("x.db", usage=lambda _p: Usage(0, 0, 1e6)),
    )
    gw._check_guards()
    line = gw._status_line()
    assert line.startswith("phase=starting uploader=?; disk space low: 1 MB free")
    assert "system clock not synchronised" in line
