"""RACE RESULT: the decoder's answer to `PASSINGS` says how many passings its file holds. Passings lost just
before a hang-up (none after them to reveal the gap) are fetched on the next connection; a file holding fewer
passings than we have (or with another file number) is a new file, fetched whole."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway import formats
from gateway.formats.base import ParseContext, ReaderHolds
from gateway.formats.raceresult import RaceResultReader
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.model import Read
from tests.fixtures.links import MemorySink, eventually

T0 = datetime(2026, 5, 17, 9, 0, tzinfo=UTC)
CTX = ParseContext(tz=UTC, reader="rr")


def _reads(n: int, base: int = 1000) -> list[Read]:
    return [Read(chip=f"{base + i}", bib=None, timestamp=T0 + timedelta(seconds=i), reader="D-1") for i in range(n)]


class FakeDecoder:
    """A decoder on loopback: answers the gateway through RaceResultReader; the test decides what it pushes."""

    def __init__(self, decoder: RaceResultReader) -> None:
        self.decoder = decoder
        self.heard = bytearray()
        self.sessions: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self.sessions.put(w)
            while data := await r.read(4096):
                self.heard += data
                _acked, answer = self.decoder.on_bytes(data)
                if answer:
                    w.write(answer)

        def spawn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            t = asyncio.create_task(on_client(r, w))
            self._tasks.add(t)

        self.server = await asyncio.start_server(spawn, "127.0.0.1", 0)
        return f"tcp://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self.sessions.empty():
            self.sessions.get_nowait().close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def test_passings_answer_is_parsed_as_what_the_decoder_holds() -> None:
    fmt = formats.get("raceresult")
    result = fmt.parse(b"PASSINGS;21;3", CTX)
    assert isinstance(result, ReaderHolds)
    assert (result.kind, result.count, result.generation) == ("response", 21, "3")
    assert not isinstance(fmt.parse(b"PASSINGS", CTX), ReaderHolds)  # an echo without figures: just an answer


async def test_passing_lost_just_before_a_hang_up_is_fetched_on_reconnect(link_logs: list[dict[str, Any]]) -> None:
    decoder = formats.get("raceresult").reader_conversation(CTX)
    assert isinstance(decoder, RaceResultReader)
    fake = FakeDecoder(decoder)
    url = await fake.start()
    sink, counters = MemorySink(), ReaderCounters()
    link = open_link(url, name="rr", backoff_base=0.05, backoff_cap=0.2)
    task = asyncio.create_task(run_reader(link, formats.get("raceresult"), CTX, sink, counters))
    try:
        w = await asyncio.wait_for(fake.sessions.get(), 5)
        lines = [decoder.encode(r) for r in _reads(5)]
        w.write(b"".join(lines[:4]))  # passing 5 is logged by the decoder but lost on the wire...
        await eventually(lambda: len(sink.reads) == 4, what="the first four passings")
        w.close()  # ...and then the cable is cut: no later passing will reveal the gap
        await asyncio.wait_for(fake.sessions.get(), 5)  # the gateway reconnects and asks PASSINGS
        await eventually(lambda: len(sink.reads) == 5, what="the lost passing")
        assert sorted(r.seq for r in sink.reads if r.seq is not None) == [1, 2, 3, 4, 5]
        assert decoder.refetches == [(5, 1)]
        assert counters.gaps == 1 and counters.last_seq == {"D-1": 5}
        # the gap the decoder's count revealed is logged like one between two reads
        assert [e for e in link_logs if e["event"] == "reads missing from the reader"] == [
            {
                "event": "reads missing from the reader",
                "log_level": "warning",
                "link": "rr",
                "reader": "D-1",
                "first": 5,
                "count": 1,
            }
        ]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fake.close()


async def test_a_new_file_with_fewer_passings_is_fetched_whole() -> None:
    decoder = formats.get("raceresult").reader_conversation(CTX)
    assert isinstance(decoder, RaceResultReader)
    for r in _reads(3, base=5000):  # the new file: three passings the gateway never saw
        decoder.encode(r)
    fake = FakeDecoder(decoder)
    url = await fake.start()
    sink, counters = MemorySink(), ReaderCounters()
    counters.last_seq["D-1"] = 500  # from the journal: the old file went up to 500
    link = open_link(url, name="rr", backoff_base=0.05, backoff_cap=0.2)
    task = asyncio.create_task(run_reader(link, formats.get("raceresult"), CTX, sink, counters))
    try:
        await eventually(lambda: len(sink.reads) == 3, what="the new file's passings")
        assert decoder.refetches == [(1, 3)]
        assert counters.restarts == 1 and counters.last_seq == {"D-1": 3}
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(0.2)
        assert decoder.refetches == [(1, 3)]  # asked once
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fake.close()
