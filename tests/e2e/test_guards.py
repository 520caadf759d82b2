"""The clock guard through the running daemon: with `[clock] hold_uploads_until_synced`, a daemon whose
clock is not synchronised takes and journals every read but sends the cloud nothing, and says why on
status.json, /metrics and in one log line; once the clock is synchronised the passings go out, exactly once.
A reader whose clock runs ahead of the gateway's is warned about, once.

The daemon is the real command. Its clock probe is swapped by a sitecustomize on its PYTHONPATH (the
gateway's code untouched), which reads "synced" or "unsynced" from a file the test rewrites, and checks
every 0.2 s instead of every minute."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from gateway.emulator import Emulator
from tests.e2e.support import cloud_nums, send, status_daemon, until
from tests.fixtures.daemon import Daemon, free_port

SITECUSTOMIZE = """
import os

_clock_file = os.environ.get("RUFUS_TEST_CLOCK_FILE")
if _clock_file:
    import gateway.guards as guards

    def _clock():
        with open(_clock_file) as f:
            return guards.ClockSync(f.read().strip() == "synced", "test clock file")

    guards.kernel_clock = _clock
    guards.CHECK_INTERVAL_S = 0.2
"""


def clock_daemon(
    tmp_path: Path, emu: Emulator, port: int, status_port: int, state: str, token: str | None = None
) -> tuple[Daemon, Path]:
    d = status_daemon(tmp_path, emu, port, status_port, token)
    d.config.write_text(d.config.read_text() + "[clock]\nhold_uploads_until_synced = true\nmax_skew_s = 2.0\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    clock = tmp_path / "clock"
    clock.write_text(state)
    d.env = {"PYTHONPATH": str(site), "RUFUS_TEST_CLOCK_FILE": str(clock)}
    return d, clock


def ahead_lines(n: int, ahead_s: float) -> list[str]:
    """Reads stamped by a reader whose clock runs `ahead_s` ahead of ours (distinct chips: one passing each)."""
    base = datetime.now(UTC) + timedelta(seconds=ahead_s)
    return [f"{500 + i},CHIP{500 + i},{(base + timedelta(milliseconds=10 * i)).isoformat()}" for i in range(n)]


async def status_of(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{port}/status.json") as r:
        assert r.status == 200
        data: dict[str, Any] = await r.json()
        return data


async def test_an_unsynchronised_clock_holds_uploads_then_they_go_out_exactly_once(
    tmp_path: Path, enveloped: Emulator
) -> None:
    port, status_port = free_port(), free_port()
    d, clock = clock_daemon(tmp_path, enveloped, port, status_port, "unsynced")
    await d.start()
    try:
        await send(port, ahead_lines(5, ahead_s=30.0))
        # taken and journaled, derived into passings, and held there
        await until(lambda: d.count("Pending") == 5, what="5 passings derived and pending")
        async with aiohttp.ClientSession() as http:
            status = await status_of(http, status_port)
            await until(lambda: d.events("uploads held") != [], what="the uploader to hold")
            status = await status_of(http, status_port)
            c = status["clock"]
            assert (c["synced"], c["sane"], c["ok"], c["hold_uploads"]) == (False, True, False, True), c
            assert "not synchronised" in c["message"] and "uploads held" in c["message"], c
            assert status["uploader"]["state"] == "held" and "not synchronised" in status["uploader"]["held_reason"]
            assert 27.0 < c["reader_skew_s"]["finish"] < 31.0, c
            assert "reader finish's clock is" in c["message"] and "ahead of" in c["message"]
            async with http.get(f"http://127.0.0.1:{status_port}/metrics") as r:
                metrics = await r.text()
            assert "rufus_gateway_clock_uploads_held 1.0" in metrics and "rufus_gateway_clock_ok 0.0" in metrics
            assert 'rufus_gateway_reader_clock_skew_seconds{reader="finish"}' in metrics
            await asyncio.sleep(1.0)  # five more clock checks: still one line, and still nothing sent
            posts = [r for r in enveloped.requests if r["method"] == "POST" and r["path"].startswith("/v0/passings")]
            assert posts == [] and sum(len(v) for v in cloud_nums(enveloped).values()) == 0
            assert d.query("select count(*) from reads")[0][0] == 5
            assert len(d.events("system clock not to be trusted")) == 1
            assert len(d.events("reader clock differs from the gateway's")) == 1

            clock.write_text("synced")
            await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 5, what="5 in the cloud")
            await until(lambda: d.count("Sent") == 5, what="5 Sent")
            status = await status_of(http, status_port)
            assert status["clock"]["ok"] is True and status["clock"]["hold_uploads"] is False
            assert status["uploader"]["held_reason"] is None
        [nums] = cloud_nums(enveloped).values()
        assert sorted(nums) == [1, 2, 3, 4, 5]  # each exactly once
        assert len(d.events("system clock ok")) == 1 and len(d.events("uploads resumed")) == 1
        assert await d.terminate() == 0
    finally:
        await d.kill()


async def test_without_the_hold_an_unsynchronised_clock_is_reported_and_uploads_go_on(
    tmp_path: Path, enveloped: Emulator
) -> None:
    port, status_port = free_port(), free_port()
    d, _clock = clock_daemon(tmp_path, enveloped, port, status_port, "unsynced")
    d.config.write_text(
        d.config.read_text().replace("hold_uploads_until_synced = true", "hold_uploads_until_synced = false")
    )
    await d.start()
    try:
        await send(port, ahead_lines(3, ahead_s=0.0))
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 3, what="3 in the cloud")
        async with aiohttp.ClientSession() as http:
            c = (await status_of(http, status_port))["clock"]
        assert (c["synced"], c["ok"], c["hold_uploads"]) == (False, False, False), c
        assert "not synchronised" in c["message"] and "passings still go out" in c["message"]
        assert abs(c["reader_skew_s"]["finish"]) < 2.0 and d.events("reader clock differs from the gateway's") == []
        assert await d.terminate() == 0
    finally:
        await d.kill()
