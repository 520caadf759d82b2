"""`[reader] silence_s`: a csv reader (no heartbeat of its own) that goes quiet is dropped and reconnected;
one that sends the simulator's `# heartbeat` comments stays connected."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.formats.csv import CsvReader
from gateway.ingest import ReaderCounters, run_reader
from gateway.model import Read
from tests.fixtures.links import MemorySink, TcpServerPeer, eventually

CTX = ParseContext(reader="csv")


async def test_configured_silence_drops_a_quiet_csv_reader_and_reconnects() -> None:
    peer = TcpServerPeer()
    await peer.start()
    sink, counters = MemorySink(), ReaderCounters()
    link = peer.make_link()
    task = asyncio.create_task(run_reader(link, formats.get("csv"), CTX, sink, counters, silence_s=0.3))
    try:
        await peer.connected()
        await peer.send(b"17,,2026-05-17T09:00:00Z\n")
        await eventually(lambda: len(sink.reads) == 1, what="the read")
        # then nothing: the gateway hangs up (EOF on our side) and connects again
        while await peer.recv(timeout=3):
            pass
        assert counters.silence_drops == 1
        await peer.hangup()
        await peer.connected()
        await peer.send(b"18,,2026-05-17T09:00:01Z\n")
        await eventually(lambda: len(sink.reads) == 2, what="a read on the new connection")
        assert link.state.accepted == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peer.close()


async def test_without_the_setting_a_csv_reader_may_stay_quiet() -> None:
    assert formats.get("csv").conversation(CTX).silence_timeout is None
    peer = TcpServerPeer()
    await peer.start()
    sink, counters = MemorySink(), ReaderCounters()
    task = asyncio.create_task(run_reader(peer.make_link(), formats.get("csv"), CTX, sink, counters))
    try:
        await peer.connected()
        await asyncio.sleep(0.6)
        assert counters.silence_drops == 0 and counters.connections == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peer.close()


async def test_heartbeat_comments_keep_a_csv_reader_alive() -> None:
    reader = formats.get("csv").reader_conversation(CTX)
    assert isinstance(reader, CsvReader)
    beat = reader.heartbeat()
    assert beat == b"# heartbeat\n"
    peer = TcpServerPeer()
    await peer.start()
    sink, counters = MemorySink(), ReaderCounters()
    task = asyncio.create_task(run_reader(peer.make_link(), formats.get("csv"), CTX, sink, counters, silence_s=0.4))
    try:
        await peer.connected()
        for _ in range(8):  # 1.2 s of heartbeats only, three times the silence limit
            await peer.send(beat)
            await asyncio.sleep(0.15)
        await peer.send(reader.encode(Read(chip="C1", bib=None, timestamp=datetime(2026, 5, 17, tzinfo=UTC))))
        await eventually(lambda: len(sink.reads) == 1, what="the read")
        assert counters.silence_drops == 0 and counters.connections == 1
        assert counters.skipped_kinds == {"comment": 8} and counters.rejected == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peer.close()


async def test_a_socket_timing_out_is_a_broken_link_not_a_silent_reader() -> None:
    """TCP keepalive gives up on a dead peer with ETIMEDOUT, a TimeoutError like the silence watchdog's own:
    it must not be counted (or logged) as the reader going quiet."""
    import errno

    from gateway.ingest import serve_connection
    from gateway.links.base import Connection, LinkState

    class DeadPeer(Connection):
        async def _read(self) -> bytes:
            raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")

        def _write(self, data: bytes) -> None:
            pass

        async def close(self) -> None:
            pass

    counters = ReaderCounters()
    conn = DeadPeer("192.0.2.7:23", LinkState(since=0.0))
    try:
        await serve_connection(conn, formats.get("csv"), CTX, MemorySink(), link_name="mat", counters=counters,
                               silence_s=30.0)  # fmt: skip
    except TimeoutError as exc:
        assert exc.errno == errno.ETIMEDOUT  # the socket's error, handed to the link, which reconnects
    else:
        raise AssertionError("a dead socket must end the connection")
    assert counters.silence_drops == 0
