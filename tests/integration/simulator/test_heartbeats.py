"""The simulated timers send their protocol's heartbeat while no runner crosses the line, and the gateway skips
it (never rejects it): a reader that is quiet but alive stays connected under a silence watchdog shorter than
the quiet stretch, as a real Ultra (`V=`), MYLAPS sender (`Pong`) or the One4All (`# heartbeat`) would."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.model import Read
from gateway.simulator import drive
from gateway.simulator.race import CHIP_STYLES, chip_style_for
from tests.fixtures.links import MemorySink, eventually, free_port

TZ = ZoneInfo("Europe/Berlin")
GUN = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
QUIET_S = 0.9  # race time without a read between the two packs (speed 1: as long on the wall clock)
SILENCE_S = 0.3  # the gateway's watchdog: a third of the quiet stretch
BEAT_S = 0.06  # the simulator's heartbeat interval, well inside the watchdog

# how the gateway files each protocol's heartbeat (a Skipped kind)
HEARTBEAT_KIND = {"csv": "comment", "ultra": "heartbeat", "mylaps": "pong"}
GREETING_IS_A_HEARTBEAT = {"mylaps": 1}  # a MYLAPS sender says Pong on connect too


def beating_formats() -> list[str]:
    return [n for n in formats.names() if formats.get(n).reader_conversation(ParseContext(tz=TZ)).heartbeat()]


def test_the_formats_whose_timers_send_heartbeats() -> None:
    assert beating_formats() == sorted(HEARTBEAT_KIND)


def _reads(name: str) -> list[Read]:
    chip = CHIP_STYLES[chip_style_for(name)]
    times = [0.0, 0.05, 0.05 + QUIET_S, 0.1 + QUIET_S]
    return [
        Read(chip=chip(100 + i), bib=None, timestamp=GUN + timedelta(seconds=t), antenna=1, seq=i + 1)
        for i, t in enumerate(times)
    ]


@pytest.mark.parametrize("name", sorted(HEARTBEAT_KIND))
async def test_heartbeats_keep_a_quiet_reader_connected(name: str) -> None:
    fmt = formats.get(name)
    reads = _reads(name)
    now = reads[-1].timestamp + timedelta(seconds=5)
    port = free_port()
    if fmt.gateway_role == "connect":
        gateway_url, sim_url = f"tcp://127.0.0.1:{port}", f"tcp-listen://127.0.0.1:{port}"
    else:
        gateway_url, sim_url = f"tcp-listen://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}"
    sink, counters = MemorySink(), ReaderCounters()
    link = open_link(gateway_url, name="finish", backoff_base=0.05, backoff_cap=0.2)
    gateway = asyncio.create_task(
        run_reader(link, fmt, ParseContext(tz=TZ, now=now, reader="finish"), sink, counters, silence_s=SILENCE_S)
    )
    kind = HEARTBEAT_KIND[name]
    greeted = GREETING_IS_A_HEARTBEAT.get(name, 0)
    try:
        stats = await asyncio.wait_for(
            drive(
                fmt,
                sim_url,
                reads,
                speed=1,
                ctx=ParseContext(tz=TZ, now=now, reader="sim"),
                heartbeat_s=BEAT_S,
                backoff_base=0.05,
                backoff_cap=0.2,
                ack_timeout=5,
            ),
            10,
        )
        await eventually(lambda: len(sink.reads) == len(reads), what=f"{name}: the reads")
        await eventually(
            lambda: counters.skipped_kinds.get(kind, 0) == stats.heartbeats + greeted,
            what=f"{name}: every heartbeat skipped (sent {stats.heartbeats}, skipped {counters.skipped_kinds})",
        )
    finally:
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
    # at least a few beats fell in the quiet stretch (a lower bound: a loaded host only sends fewer)
    assert stats.heartbeats >= 3, stats
    assert counters.rejected == 0 and sink.rejects == []
    # the watchdog (a third of the quiet stretch) never fired: one connection throughout
    assert counters.silence_drops == 0
    assert stats.connections == 1
    assert stats.complete
