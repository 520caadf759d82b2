"""The simulated timer waits for the gateway's side of the handshake, as the real one does: a RACE RESULT
decoder pushes nothing before SETPUSHPASSINGS;1, a ChronoTrack controller streams nothing before `start`.
A gateway that never asks gets no read, and the simulate ends with an error saying why."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gateway import formats
from gateway.errors import ReaderError
from gateway.formats.base import ParseContext
from gateway.simulator import Race
from gateway.simulator.driver import Driver
from gateway.simulator.race import chip_style_for
from tests.fixtures.links import free_port

GUN = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


async def _silent_gateway(name: str, gateway_says: bytes) -> tuple[bytes, BaseException | None, Driver]:
    """A gateway that greets with `gateway_says` (maybe nothing), then only listens; what did the timer send?"""
    fmt = formats.get(name)
    reads = Race.generate(5, 3, GUN, chip_style=chip_style_for(name))
    port = free_port()
    heard = bytearray()
    connected = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def talk(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)
        connected.set()
        w.write(gateway_says)
        while data := await r.read(4096):
            heard.extend(data)

    tasks: list[asyncio.Task[None]] = []
    server: asyncio.Server | None = None
    if fmt.gateway_role == "listen":  # the timer connects to the gateway
        server = await asyncio.start_server(talk, "127.0.0.1", port)
        sim_url = f"tcp://127.0.0.1:{port}"
    else:
        sim_url = f"tcp-listen://127.0.0.1:{port}"
    driver = Driver(
        fmt,
        sim_url,
        reads,
        speed=0,
        ctx=ParseContext(reader="sim"),
        heartbeat_s=0,
        handshake_timeout=0.8,
        backoff_base=0.05,
        backoff_cap=0.2,
    )
    run = asyncio.create_task(driver.run())
    error: BaseException | None = None
    try:
        if server is None:
            for _ in range(100):
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:
                    await asyncio.sleep(0.02)
            tasks.append(asyncio.create_task(talk(r, w)))
        try:
            await asyncio.wait_for(run, 10)
        except ReaderError as exc:
            error = exc
    finally:
        run.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(run, *tasks, return_exceptions=True)
        for w in writers:
            w.close()
        if server is not None:
            server.close()
            await server.wait_closed()
    return bytes(heard), error, driver


@pytest.mark.parametrize("name", ["raceresult", "chronotrack"])
async def test_with_an_empty_gateway_greeting_no_reads_are_sent(name: str) -> None:
    heard, error, driver = await _silent_gateway(name, b"")
    fmt = formats.get(name)
    reads = [r for r in fmt.framer().feed(heard) if fmt.parse(r.data, ParseContext()).__class__.__name__ == "Read"]
    assert reads == [], heard
    assert driver.stats.sent == 0
    assert isinstance(error, ReaderError) and "no handshake from the gateway within 0.8 s" in str(error)


async def test_push_mode_off_is_not_a_handshake() -> None:
    _heard, error, driver = await _silent_gateway("raceresult", b"SETPROTOCOL;3.2\r\nSETPUSHPASSINGS;0;0\r\n")
    assert driver.stats.sent == 0 and error is not None


async def test_the_handshake_releases_the_reads() -> None:
    heard, error, driver = await _silent_gateway("raceresult", b"SETPROTOCOL;3.2\r\nSETPUSHPASSINGS;1;0\r\n")
    assert error is None and driver.stats.sent == len(driver.reads) > 0
    assert heard.count(b"#P;") == len(driver.reads)
