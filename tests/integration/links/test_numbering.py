"""The ingest follows each reader's numbering: gaps are re-fetched, re-fetched answers fill them, and a reader
that numbers from 1 again (a new RACE RESULT file, an Ultra log cleared) is followed down, so the gaps after
it are still noticed. Over a real TCP link, with the acknowledging test protocol of test_ingest."""

from __future__ import annotations

import asyncio

from gateway.formats.base import ParseContext
from gateway.ingest import ReaderCounters, run_reader
from tests.fixtures.links import MemorySink, TcpServerPeer, eventually
from tests.integration.links.test_ingest import AckFormat


async def _start(sink: MemorySink, seeded: dict[str, int]) -> tuple[TcpServerPeer, asyncio.Task[None], ReaderCounters]:
    peer = TcpServerPeer()
    await peer.start()
    counters = ReaderCounters()
    counters.last_seq.update(seeded)  # as the service does, from the journal's highest number
    task = asyncio.create_task(run_reader(peer.make_link(), AckFormat(), ParseContext(), sink, counters))
    await peer.connected()
    assert await peer.recv() == b"HELLO\n"
    return peer, task, counters


async def _until_line(peer: TcpServerPeer, line: bytes) -> bytes:
    got = b""
    while line not in got:
        got += await peer.recv()
    return got


async def test_numbering_restart_is_followed_and_later_gaps_refetched() -> None:
    sink = MemorySink()
    peer, task, counters = await _start(sink, {"r1": 500})
    try:
        # the reader's file was replaced: it numbers from 1 again; 3 is lost on the wire
        await peer.send(b"1,A,1\n2,B,2\n4,D,4\n")
        got = await _until_line(peer, b"AGAIN 3 1\n")
        assert b"AGAIN" not in got.replace(b"AGAIN 3 1\n", b"")  # nothing asked for below 1 or up to 500
        assert counters.restarts == 1
        assert counters.last_seq == {"r1": 4}
        await peer.send(b"3,C,3\n5,E,5\n")  # the re-fetched read, then a live one: no restart, no gap
        await eventually(lambda: len(sink.reads) == 5, what="the re-fetched read")
        await eventually(lambda: counters.acks_sent == 5, what="the acks")
        assert (counters.restarts, counters.gaps, counters.refetches) == (1, 1, 1)
        assert counters.last_seq == {"r1": 5}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peer.close()


async def test_a_restart_seen_mid_numbering_asks_for_what_came_before() -> None:
    sink = MemorySink()
    peer, task, counters = await _start(sink, {"r1": 500})
    try:
        # the first read after the restart is number 3: 1 and 2 went out while nobody listened
        await peer.send(b"3,C,3\n")
        await _until_line(peer, b"AGAIN 1 2\n")
        await peer.send(b"1,A,1\n2,B,2\n4,D,4\n")  # the answers, below the new last: not another restart
        await eventually(lambda: len(sink.reads) == 4, what="the reads")
        await eventually(lambda: counters.acks_sent == 4, what="the acks")
        assert counters.restarts == 1 and counters.last_seq == {"r1": 4}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peer.close()


async def test_refetched_answers_below_last_are_not_a_restart() -> None:
    sink = MemorySink()
    peer, task, counters = await _start(sink, {})
    try:
        await peer.send(b"1,A,1\n20,T,20\n")
        await _until_line(peer, b"AGAIN 2 18\n")
        # the answers come in, then a re-send of something already held, then live reads again
        await peer.send(b"".join(f"{n},X{n},{n}\n".encode() for n in range(2, 20)) + b"1,A,1\n21,U,21\n")
        await eventually(lambda: len(sink.reads) == 21, what="every read")
        await eventually(lambda: counters.acks_sent == 22, what="the acks")
        assert counters.restarts == 0
        assert counters.refetches == 1 and counters.gaps == 18
        assert counters.last_seq == {"r1": 21}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peer.close()


async def test_a_read_slightly_out_of_order_is_not_a_restart() -> None:
    sink = MemorySink()
    peer, task, counters = await _start(sink, {"r1": 10})
    try:
        await peer.send(b"12,L,12\n")
        await _until_line(peer, b"AGAIN 11 1\n")
        await peer.send(b"13,M,13\n11,K,11\n")
        await eventually(lambda: counters.acks_sent == 3, what="the acks")
        assert counters.restarts == 0 and counters.last_seq == {"r1": 13}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peer.close()
