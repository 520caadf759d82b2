"""`replay` keeps a capture's spacing, scaled by --speed; --speed 0 sends as fast as it can. Lower bounds only:
a slow CI machine may deliver late, never early."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from gateway.capture import Entry
from gateway.recorder import replay

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


async def _arrivals(entries: list[Entry], speed: float) -> list[float]:
    """Replay to a loopback listener; the loop time each line arrived at."""
    loop = asyncio.get_running_loop()
    times: list[float] = []
    done = asyncio.Event()

    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while line := await r.readline():
            assert line.endswith(b"\n")
            times.append(loop.time())
            if len(times) == len(entries):
                done.set()
        w.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = loop.time()
        await asyncio.wait_for(replay(entries, f"tcp://127.0.0.1:{port}", speed=speed), 30)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()
    return [started, *times]


async def test_speed_10_keeps_a_tenth_of_the_original_spacing() -> None:
    entries = [Entry(T0 + timedelta(seconds=s), f"17,,line{s}\n".encode()) for s in (0, 1, 2)]
    _started, *times = await _arrivals(entries, speed=10)
    gaps = [b - a for a, b in pairwise(times)]
    assert len(gaps) == 2
    assert all(g >= 0.08 for g in gaps), gaps  # 1 s of capture at speed 10: 0.1 s, never much less


async def test_speed_0_is_as_fast_as_possible() -> None:
    entries = [Entry(T0 + timedelta(seconds=100 * s), f"17,,line{s}\n".encode()) for s in range(4)]
    started, *times = await _arrivals(entries, speed=0)
    assert times[-1] - started < 10.0  # 300 s of capture; no spacing kept
