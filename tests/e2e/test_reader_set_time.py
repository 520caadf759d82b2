"""`[reader] set_time = true` reaches the running daemon's reader link: the decoder gets SETTIME on connect."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway import formats
from gateway.emulator import Emulator
from gateway.formats.base import ParseContext
from tests.e2e.support import KEY, until
from tests.fixtures.daemon import Daemon, write_config


@pytest.mark.parametrize("set_time", [True, False])
async def test_daemon_sets_the_decoder_clock_only_when_told(
    tmp_path: Path, enveloped: Emulator, set_time: bool
) -> None:
    decoder = formats.get("raceresult").reader_conversation(ParseContext(tz=ZoneInfo("Europe/Madrid")))
    heard = bytearray()
    tasks: set[asyncio.Task[None]] = set()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(4096):
            heard.extend(data)
            w.write(decoder.on_bytes(data)[1])

    server = await asyncio.start_server(lambda r, w: tasks.add(asyncio.create_task(serve(r, w))), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader = {"name": "box", "url": f"tcp://127.0.0.1:{port}", "format": "raceresult", "tz": "Europe/Madrid"}
    if set_time:
        reader["set_time"] = True
    d = Daemon(write_config(tmp_path / "gw.toml", base_url=enveloped.base_url, api_key=KEY, readers=[reader]))
    await d.start()
    try:
        await until(lambda: b"PASSINGS\r\n" in heard, what="the daemon's greeting")
        await asyncio.sleep(0.3)
        clock_set = decoder.clock_set  # type: ignore[attr-defined]
        if set_time:
            assert b"SETTIME;" in heard and len(clock_set) == 1
            assert abs(clock_set[0] - datetime.now(UTC)) < timedelta(seconds=5)
        else:
            assert b"SETTIME" not in heard and clock_set == []
    finally:
        await d.kill()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.close()
        await server.wait_closed()
