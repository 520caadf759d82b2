"""Host faults against the real daemon: the disk fills up, the database is read-only or damaged at start,
SIGTERM arrives in the middle of a flood. Nothing committed is lost, every failure is one clear line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import control
from tests.chaos.harness import cloud, daemon, free_port, settled, until, verdict
from tests.chaos.harness.checker import load_truth, snapshot_db
from tests.chaos.harness.processes import GatewayProcess, ReaderProcess
from tests.fixtures.filemodes import obeys_file_modes

pytestmark = pytest.mark.chaos


@contextlib.contextmanager
def small_fs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root only: the closest thing to a full SD card)."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


# Without root there is no small filesystem to fill; SQLite can be told the same thing, though: with
# `PRAGMA max_page_count` a write that would grow the file past it fails with SQLITE_FULL, "database or disk
# is full", exactly what a full SD card gives. The pragma is per connection, so the daemon gets it from a
# sitecustomize on its PYTHONPATH that sets it on every connection it opens (the gateway's code untouched);
# "freeing space" is raising the limit, which every connection reads again before its next statement.
_SITECUSTOMIZE = """
import os
import sqlite3

_limit_file = os.environ.get("RUFUS_CHAOS_MAX_PAGES_FILE")
if _limit_file:
    _connect = sqlite3.connect

    class _Limited(sqlite3.Connection):
        # The limit is looked at again before each statement: freeing space (raising it) reaches connections
        # already open, as freed space on a real disk does.
        def _limit(self):
            with open(_limit_file) as f:
                pages = int(f.read())
            if pages != getattr(self, "_pages", None):
                self._pages = pages
                sqlite3.Connection.execute(self, f"PRAGMA max_page_count = {pages}")

        def execute(self, *args, **kwargs):
            self._limit()
            return super().execute(*args, **kwargs)

        def executemany(self, *args, **kwargs):
            self._limit()
            return super().executemany(*args, **kwargs)

        def cursor(self, *args, **kwargs):
            self._limit()
            return super().cursor(*args, **kwargs)

    def connect(*args, **kwargs):
        kwargs.setdefault("factory", _Limited)
        con = _connect(*args, **kwargs)
        con._limit()
        return con

    sqlite3.connect = connect

if os.environ.get("RUFUS_CHAOS_FULL_RETRY_S"):  # look for room more often than every 5 s
    import gateway.guards

    gateway.guards.FULL_RETRY_S = float(os.environ["RUFUS_CHAOS_FULL_RETRY_S"])
"""


@dataclass
class SmallDisk:
    """Where to put the database, what the daemon's environment needs, and how the crew frees space."""

    dir: Path
    env: dict[str, str]
    free: Callable[[], None]
    kind: str


@contextlib.contextmanager
def small_disk(tmp_path: Path, kind: str, size_kb: int) -> Iterator[SmallDisk]:
    """A disk of about `size_kb` for the database: a real tmpfs, or SQLite's page limit (any user)."""
    if kind == "tmpfs":
        with small_fs(tmp_path / "sd", f"{size_kb}k") as sd:
            yield SmallDisk(sd, {}, lambda: remount(sd, "size=16m"), kind)
        return
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    limit = tmp_path / "max_pages"
    limit.write_text(str(size_kb // 4))  # 4 KiB pages
    sd = tmp_path / "sd"
    sd.mkdir()
    env = {"PYTHONPATH": str(site), "RUFUS_CHAOS_MAX_PAGES_FILE": str(limit), "RUFUS_CHAOS_FULL_RETRY_S": "0.3"}
    yield SmallDisk(sd, env, lambda: limit.write_text(str(1 << 30)), kind)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


def csv_line(i: int) -> bytes:
    return f"{i},CHIP{i:06d},2026-11-22T{10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000Z\n".encode()


def one_clear_line(output: str, prefix: str) -> str:
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


async def _status_json(port: int) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/status.json") as r:
        data: dict[str, Any] = await r.json()
        return data


def listening(port: int) -> bool:
    """Whether a reader could connect: someone listens on `port`."""
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("disk", ["tmpfs", "page_limit"])
async def test_disk_full_loses_nothing_committed_and_recovers(tmp_path: Path, disk: str) -> None:
    """The tmpfs (root) is the real thing; the page limit is the same failure for any user, so the test never
    skips: without root only the tmpfs case does."""
    port, status_port = free_port(), free_port()
    with small_disk(tmp_path, disk, 600) as sd:
        async with cloud(tmp_path, offline=True) as emu, daemon(
            tmp_path, emu, [{"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}],
            db=sd.dir / "gw.db", status={"listen": f"127.0.0.1:{status_port}"},
        ) as gw:  # fmt: skip
            gw.env.update(sd.env)
            await gw.start()
            await gw.wait_ready()
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            with contextlib.suppress(ConnectionError):
                for i in range(40_000):  # far more than 600 kB holds
                    w.write(csv_line(i))
                    if i % 500 == 0:
                        await w.drain()
                        await asyncio.sleep(0.02)
                        if not gw.running:
                            break
            w.close()
            rc = await gw.wait(20)
            output = gw.tail(100_000)
            # The daemon ends on a full disk with 75 (EX_TEMPFAIL), which the unit restarts every few seconds
            # (73, an unusable database, it does not: tests/chaos/test_unit_file.py); so once the crew frees
            # space the next start resumes. What matters here: exit 75, one clear line, no traceback, and not
            # a committed read lost.
            assert rc == 75, output[-2000:]
            line = one_clear_line(output, "rufus-gateway:")
            assert "full" in line, line
            before = snapshot_db(gw.db)
            assert before.integrity == ["ok"] and len(before.reads) > 100
            # systemd restarts it on 75, the disk still full: the daemon does not crash again (no loop), it
            # waits, alive, and says so on every surface; the readers are not started
            await gw.start()
            await until(lambda: '"disk full: waiting for space' in gw.tail(100_000), 30, "the full-disk wait", gw.tail)
            ping = await control.call(gw.socket, "GET", "/ping")
            assert ping["phase"] == "starting", ping
            status = await _status_json(status_port)
            assert status["disk"]["full"] is True and status["disk"]["message"].startswith("DISK FULL"), status
            assert any(a.startswith("DISK FULL") for a in status["alerts"]), status["alerts"]
            await asyncio.sleep(1.5)  # several looks for room: still alive, still waiting
            assert gw.running and not listening(port), gw.tail()
            sd.free()  # the crew frees space: the same process resumes by itself
            emu.set_offline(False)
            await gw.wait_ready()
            assert gw.starts == 2
            status = await _status_json(status_port)
            assert status["disk"]["full"] is False and status["alerts"] == [], status
            await until(lambda: settled(gw), 60, "the backlog uploaded", gw.tail)
            assert await gw.terminate() == 0, gw.tail()
            report = verdict(gw, emu, claim="journaled")
            assert report.ok, report.problems()
            assert report.figures["reads_journaled"] == len(before.reads) == report.figures["passings_cloud"]


# Root ignores file modes, so to root a chmod'ed database is no read-only database at all: as root, the daemon
# of the chmod case runs without the capabilities that override them (setpriv drops CAP_DAC_OVERRIDE and
# CAP_DAC_READ_SEARCH from its bounding set), and meets the modes like any user; without root it needs nothing.
@contextlib.contextmanager
def read_only_database(how: str, tmp_path: Path) -> Iterator[tuple[Path, Callable[[], list[str]], Callable[[], None]]]:
    """A directory for the database; a function that makes the database read-only and returns the argv prefix
    the daemon must start under to see it so; and one that makes it writable again.

    tmpfs (root): the filesystem remounted read-only, as an SD card that went read-only. chmod (any user): the
    database file and its directory made read-only. The lock file beside it stays writable, so the daemon gets
    past it and SQLite itself meets the read-only database ("attempt to write a readonly database"); on the
    read-only tmpfs the lock file is refused first, with the filesystem's own words."""
    if how == "tmpfs":
        with small_fs(tmp_path / "sd", "4m") as sd:

            def ro_tmpfs() -> list[str]:
                remount(sd, "ro")
                return []

            yield sd, ro_tmpfs, lambda: remount(sd, "rw")
        return
    sd = tmp_path / "sd"
    sd.mkdir()
    prefix = obeys_file_modes()

    def ro_modes() -> list[str]:
        for p in sd.iterdir():
            if not p.name.endswith(".lock"):
                p.chmod(0o444)
        sd.chmod(0o555)
        return prefix

    def rw_modes() -> None:
        sd.chmod(0o755)
        for p in sd.iterdir():
            p.chmod(0o644)

    try:
        yield sd, ro_modes, rw_modes
    finally:
        rw_modes()  # or the tmp_path cannot be cleaned up (without root)


@pytest.mark.parametrize("how", ["tmpfs", "chmod"])
async def test_read_only_database_is_one_clear_line_and_left_alone(tmp_path: Path, how: str) -> None:
    """The tmpfs remount needs root; the chmod case runs for any user (as root, under setpriv), so the test
    never skips as a whole."""
    port = free_port()
    # a short duplicate window: the three reads' passings are out (settled) in half a second, not three
    mat = {"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv", "dedup_window_s": 0.5}
    with read_only_database(how, tmp_path) as (sd, make_read_only, make_writable):
        async with cloud(tmp_path) as emu, daemon(tmp_path, emu, [mat], db=sd / "gw.db") as gw:
            await gw.start()
            await gw.wait_ready()
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"".join(csv_line(i) for i in range(3)))
            await w.drain()
            await until(lambda: settled(gw) and gw.query("SELECT COUNT(*) FROM reads")[0][0] == 3, 20, "3 reads")
            w.close()
            assert await gw.terminate() == 0, gw.tail()
            files = sorted(os.listdir(sd))
            data = gw.db.read_bytes()
            prefix = make_read_only()
            gw.argv = [*prefix, sys.executable, "-m", "gateway", "run", "--config", str(gw.config)]
            for _start in range(2):  # every start says the same and stops: exit 73 is no restart loop
                await gw.start()
                rc = await gw.wait(20)
                output = gw.tail(100_000)
                assert rc == 73, output[-2000:]
                line = one_clear_line(output, "rufus-gateway:")
                assert "database error" in line and "gw.db" in line, line
                if how == "tmpfs":
                    assert "read-only" in line.lower(), line
                else:  # SQLite's own words
                    assert re.search(r"read-?only", line.lower()), line
                assert sorted(os.listdir(sd)) == files, "a healthy read-only database must not be moved aside"
                assert gw.db.read_bytes() == data, "a read-only database must be left as it was"
            make_writable()
            gw.argv = None
            await gw.start()
            await gw.wait_ready()
            assert gw.query("SELECT COUNT(*) FROM reads")[0][0] == 3
            assert await gw.terminate() == 0, gw.tail()


async def _300_reads_then_a_clean_stop(gw: GatewayProcess, port: int) -> None:
    """A database with something in it, closed as a SIGTERM closes it."""
    await gw.start()
    await gw.wait_ready()
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"".join(csv_line(i) for i in range(300)))
    await w.drain()
    await until(lambda: settled(gw) and gw.query("SELECT COUNT(*) FROM reads")[0][0] == 300, 20, "300 reads")
    w.close()
    assert await gw.terminate() == 0, gw.tail()


@pytest.mark.parametrize("damage", ["header", "pages"])
async def test_corrupt_database_is_moved_aside_kept_and_the_daemon_runs(tmp_path: Path, damage: str) -> None:
    port = free_port()
    async with (
        cloud(tmp_path) as emu,
        daemon(tmp_path, emu, [{"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}]) as gw,
    ):
        await _300_reads_then_a_clean_stop(gw, port)
        data = bytearray(gw.db.read_bytes())
        if damage == "header":
            data[0:100] = b"\x42" * 100  # "file is not a database"
        else:
            data[4096 * 3 : 4096 * 5] = bytes(range(256)) * 32  # "database disk image is malformed"
        gw.db.write_bytes(bytes(data))
        await gw.start()
        await gw.wait_ready(20)  # no crash loop: it runs, on a fresh database
        kept = [p for p in gw.db.parent.iterdir() if p.is_file() and p.read_bytes() == bytes(data)]
        assert kept and kept[0] != gw.db, "the damaged file must be kept, byte for byte, beside the new one"
        output = gw.tail(100_000)
        assert "Traceback" not in output
        # one clear line: the only error of that start, naming the file it was moved to
        errors = [line for line in output.splitlines() if '"level": "error"' in line or "[error" in line]
        assert len(errors) == 1, output[-3000:]
        assert "database damaged" in errors[0] and kept[0].name in errors[0], errors[0]
        assert sum(kept[0].name in line for line in output.splitlines()) == 1, output[-2000:]
        assert await gw.terminate() == 0, gw.tail()
        await gw.start()
        await gw.wait_ready()
        again = [p for p in gw.db.parent.iterdir() if p.is_file() and p.read_bytes() == bytes(data)]
        assert len(again) == 1, "moved once only"
        assert await gw.terminate() == 0, gw.tail()


def _damage_in_place(db: Path) -> bytes:
    """A card that damaged pages in place: the file's inode, size and modification time as they were."""
    st = os.stat(db)
    with open(db, "r+b") as f:
        f.seek(4096 * 3)
        f.write(bytes(range(256)) * 32)
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))
    return db.read_bytes()


async def test_damage_after_a_clean_stop_is_found_running_and_the_restart_moves_it_aside(tmp_path: Path) -> None:
    """After a clean stop the start skips the O(database) check before READY (the file is as it was closed)
    and runs it beside the readers. Damage that kept the file's stamp is met running: the daemon stops with one
    clear line and exit 74 (systemd restarts on it), no traceback; the restart checks first and moves it aside."""
    port = free_port()
    async with (
        cloud(tmp_path) as emu,
        daemon(tmp_path, emu, [{"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}]) as gw,
    ):
        await _300_reads_then_a_clean_stop(gw, port)
        await gw.start()
        await gw.wait_ready()
        await until(lambda: "database integrity checked" in gw.tail(100_000), 20, "the check beside the readers")
        assert await gw.terminate() == 0, gw.tail()
        damaged = await asyncio.to_thread(_damage_in_place, gw.db)
        await gw.start()
        rc = await gw.wait(30)
        output = gw.tail(100_000)
        assert rc == 74, output[-3000:]
        assert "Traceback" not in output and "internal error" not in output, output[-3000:]
        line = one_clear_line(output, "rufus-gateway:")
        assert "database error" in line and ("damaged" in line or "integrity" in line), line
        await gw.start()
        await gw.wait_ready(20)  # the restart checks first, keeps the file beside and runs on a fresh one
        kept = [p for p in gw.db.parent.iterdir() if p.is_file() and p.read_bytes() == damaged]
        assert kept and kept[0] != gw.db, "the damaged file must be kept, byte for byte, beside the new one"
        assert "database damaged" in gw.tail(100_000)
        assert await gw.terminate() == 0, gw.tail()


@pytest.mark.timeout(200)
async def test_sigterm_under_full_load_exits_clean_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    async with (
        cloud(tmp_path) as emu,
        daemon(tmp_path, emu, [{"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "mylaps"}]) as gw,
    ):
        await gw.start()
        await gw.wait_ready()
        # MYLAPS acknowledges each read after its commit, so "nothing lost" is checkable: every acknowledged
        # read must be in the journal and in the cloud, whatever SIGTERM interrupted.
        reader = ReaderProcess(tmp_path, "mylaps", f"tcp://127.0.0.1:{port}", runners=2000, speed=0, seed=4)
        await reader.start()
        try:
            await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] > 500, 30, "the flood", reader.tail)
            rc = await gw.terminate(timeout=10)  # "within a few seconds", generously for a slow CI box
            assert rc == 0, gw.tail()
            assert "gateway stopped" in gw.tail()
            taken = snapshot_db(gw.db)
            assert taken.integrity == ["ok"] and taken.wal_bytes == 0, "SIGTERM checkpoints the WAL"
            await gw.start()
            await gw.wait_ready()
            assert await reader.wait(90) == 0, reader.tail()
            await until(lambda: settled(gw), 60, "the backlog uploaded", gw.tail)
            assert await gw.terminate() == 0, gw.tail()
        finally:
            await reader.kill()
        truth = load_truth(reader.truths)
        report = verdict(gw, emu, truth, claim="acknowledged")
        assert report.ok, report.problems()
        assert truth.complete and report.figures["reads_acked"] == report.figures["reads_sent"]
        assert {r.id for r in taken.reads} <= {r.id for r in snapshot_db(gw.db).reads}


async def test_sigterm_is_not_held_by_a_control_client_stuck_mid_request(tmp_path: Path) -> None:
    port = free_port()
    async with (
        cloud(tmp_path) as emu,
        daemon(tmp_path, emu, [{"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}]) as gw,
    ):
        await gw.start()
        await gw.wait_ready()
        _r, w = await asyncio.open_unix_connection(gw.socket)
        # a crew command killed (or a phone on a bad link) half-way through sending `mark`
        w.write(
            b"POST /mark HTTP/1.1\r\nHost: daemon\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"bib": '
        )
        await w.drain()
        await asyncio.sleep(0.3)
        try:
            assert await gw.terminate(timeout=10) == 0, gw.tail()
        finally:
            w.close()
