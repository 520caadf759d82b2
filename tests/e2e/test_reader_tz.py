"""`[reader] tz` in the running daemon: a reader's local wall-clock times are converted with ITS zone, not with
the session's timezone label. A RACE RESULT decoder in Madrid (summer: UTC+2) and a csv reader sending times
without an offset, with [session] timezone = "UTC": the outbox and the cloud hold the true UTC instants."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway import formats
from gateway.emulator import Emulator
from gateway.formats.base import ParseContext
from gateway.model import Read
from tests.e2e.support import KEY, send, until
from tests.fixtures.daemon import Daemon, free_port, write_config

MADRID = ZoneInfo("Europe/Madrid")


async def test_reader_tz_converts_local_reader_times_in_the_daemon(tmp_path: Path, enveloped: Emulator) -> None:
    rr = formats.get("raceresult")
    decoder = rr.reader_conversation(ParseContext(tz=MADRID, reader="box"))
    tasks: set[asyncio.Task[None]] = set()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        decoder.connection_started()
        pushed = False
        while data := await r.read(4096):
            _acked, answer = decoder.on_bytes(data)
            w.write(answer)
            if decoder.ready and not pushed:  # after SETPUSHPASSINGS;1, as a real decoder
                pushed = True
                local = datetime(2026, 5, 3, 11, 15, 2, 123_000, tzinfo=MADRID)  # the decoder's wall clock
                w.write(decoder.encode(Read(chip="7001", bib=None, timestamp=local, reader="box")))

    server = await asyncio.start_server(lambda r, w: tasks.add(asyncio.create_task(serve(r, w))), "127.0.0.1", 0)
    rr_port = server.sockets[0].getsockname()[1]
    csv_port = free_port()
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url=enveloped.base_url,
        api_key=KEY,
        session={"timezone": "UTC"},
        readers=[
            {"name": "box", "url": f"tcp://127.0.0.1:{rr_port}", "format": "raceresult", "tz": "Europe/Madrid"},
            {"name": "mat", "url": f"tcp-listen://127.0.0.1:{csv_port}", "format": "csv", "tz": "Europe/Madrid"},
        ],
    )
    d = Daemon(cfg)
    await d.start()
    try:
        # the raw line carries the decoder's local time; the csv line has no offset: both are Madrid time
        await send(csv_port, ["42,,2026-05-03T11:20:00.500"])
        await until(lambda: d.query("select count(*) from passings")[0][0] == 2, what="two passings")
        rows = dict(d.query("select bib, timestamp from passings"))
        assert rows["7001"].startswith("2026-05-03T09:15:02.123")
        assert rows["42"].startswith("2026-05-03T09:20:00.500")
        [raw] = [r for (r,) in d.query("select raw from reads where link = 'box'")]
        assert ";2026-05-03;11:15:02.123;" in raw
        assert {tz for (tz,) in d.query("select timezone from passings")} == {"UTC"}

        def cloud_times() -> dict[str, str]:
            assert enveloped.store is not None
            out: dict[str, str] = {}
            for s in enveloped.store.all_sessions():
                for p in enveloped.store.passings_of(s["token_session"], 100):
                    out[str(p["bib"])] = str(p["timestamp"])
            return out

        await until(lambda: len(cloud_times()) == 2, what="both in the cloud")
        assert cloud_times() == {"7001": "2026-05-03T09:15:02.123Z", "42": "2026-05-03T09:20:00.500Z"}
    finally:
        await d.kill()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
