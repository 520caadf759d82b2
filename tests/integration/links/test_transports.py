"""The same assertions over every real transport (TCP both ways, a socat pty pair) and every delivery:
whole, one byte at a time, random chunks, and a cable cut mid-line followed by a reconnect."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.links.tcp import TcpListenLink
from gateway.model import Read
from tests.fixtures.links import MemorySink, Peer, PtyPair, PtyPeer, chunk, eventually, free_port

CSV = formats.get("csv")
CTX = ParseContext(reader="test")
T0 = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)


def race_lines(n: int) -> tuple[list[bytes], list[tuple[str | None, str | None, datetime]]]:
    reads = [
        Read(chip=f"05800000{i:04d}", bib=str(i), timestamp=T0 + timedelta(milliseconds=1370 * i), antenna=1 + i % 4)
        for i in range(n)
    ]
    return [CSV.format(r, CTX) for r in reads], [(r.bib, r.chip, r.timestamp) for r in reads]


def got(sink: MemorySink) -> list[tuple[str | None, str | None, datetime]]:
    return [(r.bib, r.chip, r.timestamp) for r in sink.reads]


@pytest.mark.parametrize("mode", ["whole", "bytewise", "random", "cut-mid-line"])
async def test_reads_arrive_intact(peer: Peer, mode: str) -> None:
    lines, expected = race_lines(40)
    sink = MemorySink()
    counters = ReaderCounters()
    link = peer.make_link()
    task = asyncio.create_task(run_reader(link, CSV, CTX, sink, counters))
    try:
        await peer.connected()
        await eventually(lambda: link.state.connected, what="the link to connect")
        if mode == "cut-mid-line":
            head = b"".join(lines[:15]) + lines[15][:9]  # the cable goes in the middle of read 16
            for piece in chunk(head, "random"):
                await peer.send(piece)
            await eventually(lambda: len(sink.reads) == 15, what="the reads before the cut")
            await eventually(lambda: link.state.bytes_in == len(head), what="the half line to arrive")
            await peer.hangup()
            await peer.connected()
            await eventually(lambda: link.state.accepted == 2 and link.state.connected, what="the link to reconnect")
            rest = b"".join(lines[15:])  # the reader sends the interrupted read again, whole
        else:
            rest = b"".join(lines)
        for piece in chunk(rest, "random" if mode == "cut-mid-line" else mode):
            await peer.send(piece)
        await eventually(lambda: len(sink.reads) >= len(expected), what="every read")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert got(sink) == expected
    assert counters.reads == len(expected)
    if mode == "cut-mid-line":
        # the half line is kept as a rejection that says where it was cut, never silently dropped
        assert len(sink.rejects) == 1
        assert "cut off" in sink.rejects[0][2]
        assert sink.rejects[0][3] == lines[15][:9].decode()
        assert link.state.reconnects == 1
    else:
        assert sink.rejects == []
    assert link.state.last_byte_at is not None
    assert link.state.bytes_in >= sum(len(x) for x in lines)


async def test_serial_link_waits_for_an_unplugged_adapter(pty_pair: PtyPair) -> None:
    """A device path that is not there yet (adapter unplugged at boot) is retried until it appears."""
    pty_pair.stop()
    p = PtyPeer(pty_pair)
    link = p.make_link()
    sink = MemorySink()
    counters = ReaderCounters()
    task = asyncio.create_task(run_reader(link, CSV, CTX, sink, counters))
    try:
        await eventually(lambda: link.state.last_error is not None, what="a failed open")
        assert "ttyGATEWAY" in (link.state.last_error or "")
        assert not link.state.connected
        pty_pair.start()
        await p.connected()
        await eventually(lambda: link.state.connected, what="the link to open the device once it exists")
        lines, expected = race_lines(3)
        await p.send(b"".join(lines))
        await eventually(lambda: len(sink.reads) == 3, what="reads over the late device")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await p.close()
    assert got(sink) == expected


async def test_listener_takes_several_readers_at_once() -> None:
    link = open_link(f"tcp-listen://127.0.0.1:{free_port()}", name="finish")
    assert isinstance(link, TcpListenLink)
    sink = MemorySink()
    counters = ReaderCounters()
    task = asyncio.create_task(run_reader(link, CSV, CTX, sink, counters))
    writers = []
    try:
        await asyncio.wait_for(link.listening.wait(), 5)
        assert link.address is not None
        lines, expected = race_lines(30)
        for _ in range(3):
            writers.append((await asyncio.open_connection(*link.address))[1])
        await eventually(lambda: link.state.connections == 3, what="three readers connected")
        for r in range(0, len(lines), 3):  # interleaved mid-line: each connection frames on its own
            for half in (slice(0, 5), slice(5, None)):
                for k, w in enumerate(writers):
                    w.write(lines[r + k][half])
                    await w.drain()
                await asyncio.sleep(0.005)
        await eventually(lambda: len(sink.reads) == 30, what="reads from all three readers")
        for w in writers:
            w.close()
            await w.wait_closed()
        await eventually(lambda: link.state.connections == 0, what="the listener to see them go")
        assert not link.state.connected
        assert link.state.accepted == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(got(sink), key=lambda x: x[2]) == expected
