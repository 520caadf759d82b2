"""Shutdown cancels the reader tasks and waits for them (service.py): a cancel must never be lost. On Python 3.11
`asyncio.wait_for` swallows a cancel that arrives as its inner await completes, so a link cancelled while a
connect was being refused, or an ingest cancelled while a reader was sending, went on forever."""

from __future__ import annotations

import asyncio

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.links.base import Connection
from tests.fixtures.links import MemorySink, TcpServerPeer, eventually, free_port


async def _drain(conn: Connection) -> None:
    while await conn.read():
        pass


async def _stops(task: asyncio.Task[None]) -> bool:
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    return bool(done)


async def _force_off(task: asyncio.Task[None]) -> None:
    """After a failure: cancel until one lands, so the test ends instead of hanging on teardown."""
    for _ in range(500):
        if task.done():
            break
        task.cancel()
        await asyncio.sleep(0.01)
    await asyncio.gather(task, return_exceptions=True)


async def test_a_client_link_cancelled_while_connects_are_refused_stops() -> None:
    # no backoff at all: the link is nearly always inside a connect, which is where a cancel used to get lost
    url = f"tcp://127.0.0.1:{free_port()}"
    for i in range(40):
        link = open_link(url, name="r", backoff_base=0.0, backoff_cap=0.0)
        task = asyncio.create_task(link.run(_drain))
        await eventually(lambda: link.state.last_error is not None, what="a refused connect")  # noqa: B023
        await asyncio.sleep(0.001 * (i % 5))
        stopped = await _stops(task)
        await _force_off(task)
        assert stopped, f"attempt {i}: the cancel was lost, the link ran on"


async def test_an_ingest_cancelled_while_the_reader_sends_stops() -> None:
    csv = formats.get("csv")
    for i in range(10):
        peer = TcpServerPeer()
        await peer.start()
        sink = MemorySink()
        # with a silence watchdog, as every protocol with a heartbeat has (and any reader given `silence_s`)
        task = asyncio.create_task(
            run_reader(peer.make_link(), csv, ParseContext(reader="r"), sink, ReaderCounters(), silence_s=30)
        )
        flood: asyncio.Task[None] | None = None
        try:
            await peer.connected()

            async def send_forever() -> None:
                n = 0
                while True:
                    n += 1
                    await peer.send(f"{n},,2026-05-17T09:00:00Z\n".encode())  # noqa: B023
                    await asyncio.sleep(0)

            flood = asyncio.create_task(send_forever())
            await eventually(lambda: len(sink.reads) > 20, what="reads flowing")  # noqa: B023
            stopped = await _stops(task)
        finally:
            if flood is not None:
                flood.cancel()
                await asyncio.gather(flood, return_exceptions=True)
            await _force_off(task)
            await peer.close()
        assert stopped, f"connection {i}: the cancel was lost, the ingest ran on"
