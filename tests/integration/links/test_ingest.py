"""serve_connection over a real TCP link with a small acknowledging protocol: acks only after the commit,
re-sends recognised and acknowledged again, gaps re-fetched, heartbeats skipped, silence drops the link."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from gateway.errors import StorageError
from gateway.formats.base import (
    Conversation,
    Format,
    Framer,
    ParseContext,
    ParseResult,
    Record,
    Rejected,
    Skipped,
)
from gateway.ingest import ReaderCounters, run_reader
from gateway.model import Read
from tests.fixtures.links import MemorySink, TcpServerPeer, eventually

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


class LineFramer(Framer):
    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0

    def feed(self, data: bytes) -> list[Record]:
        self.buf += data
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            out.append(Record(line, self.pos))
            self.pos += len(line) + 1
        return out

    def flush(self) -> list[Record]:
        tail, self.buf = self.buf, b""
        return [Record(tail, self.pos, truncated=True)] if tail else []


class AckConversation(Conversation):
    def __init__(self, fmt: AckFormat, ctx: ParseContext) -> None:
        self.fmt = fmt
        self.ctx = ctx
        self.silence_timeout = fmt.silence

    def greeting(self) -> bytes:
        return b"HELLO\n"

    def on_record(self, record: Record) -> tuple[list[ParseResult], bytes]:
        if record.data == b"PING?":
            return [Skipped("heartbeat", "PING?")], b"PONG\n"
        return [self.fmt.parse(record.data, self.ctx)], b""

    def ack(self, read: Read) -> bytes:
        return f"ACK {read.seq}\n".encode()

    def refetch(self, first_seq: int, count: int) -> bytes:
        return f"AGAIN {first_seq} {count}\n".encode()

    def keepalive(self) -> bytes:
        return b"KEEPALIVE\n"


class AckFormat(Format):
    """`seq,chip,offset_ms` lines; acknowledges each read by its sequence number."""

    name: ClassVar[str] = "acktest"

    def __init__(self, silence: float | None = None) -> None:
        self.silence = silence

    def framer(self) -> Framer:
        return LineFramer()

    def parse(self, record: bytes, ctx: ParseContext) -> ParseResult:
        try:
            seq, chip, ms = record.decode().split(",")
            return Read(chip=chip, bib=None, timestamp=T0 + timedelta(milliseconds=int(ms)), seq=int(seq), reader="r1")
        except ValueError as exc:
            return Rejected(f"bad line: {exc}", record.decode(errors="replace"))

    def format(self, read: Read, ctx: ParseContext) -> bytes:
        return f"{read.seq},{read.chip},{int((read.timestamp - T0).total_seconds() * 1000)}\n".encode()

    def conversation(self, ctx: ParseContext) -> Conversation:
        return AckConversation(self, ctx)


async def _start(fmt: Format, sink: MemorySink) -> tuple[TcpServerPeer, asyncio.Task[None], ReaderCounters]:
    peer = TcpServerPeer()
    await peer.start()
    counters = ReaderCounters()
    link = peer.make_link()
    task = asyncio.create_task(run_reader(link, fmt, ParseContext(), sink, counters))
    await peer.connected()
    assert await peer.recv() == b"HELLO\n"
    return peer, task, counters


async def _stop(peer: TcpServerPeer, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await peer.close()


async def test_ack_is_sent_only_after_the_journal_commits() -> None:
    sink = MemorySink()
    sink.gate = asyncio.Event()  # the disk is slow: the commit has not happened yet
    peer, task, counters = await _start(AckFormat(), sink)
    try:
        await peer.send(b"1,CHIPA,100\n2,CHIPB,200\n")
        with pytest.raises(TimeoutError):
            await peer.recv(timeout=0.3)  # no ack while the reads are not durable
        assert sink.reads == []
        sink.gate.set()
        acks = b""
        while acks.count(b"\n") < 2:
            acks += await peer.recv()
        assert acks == b"ACK 1\nACK 2\n"
        assert [r.chip for r in sink.reads] == ["CHIPA", "CHIPB"]
        assert sink.commits == 1  # one chunk's reads go to the journal in one call
        assert counters.acks_sent == 2
    finally:
        await _stop(peer, task)


async def test_resent_reads_are_not_journaled_twice_but_acked_again() -> None:
    sink = MemorySink()
    peer, task, counters = await _start(AckFormat(), sink)
    try:
        await peer.send(b"1,CHIPA,100\n")
        assert await peer.recv() == b"ACK 1\n"
        await peer.send(b"1,CHIPA,100\n")  # the reader did not hear the ack and sends it again
        assert await peer.recv() == b"ACK 1\n"
        assert len(sink.reads) == 1
        assert (counters.reads, counters.resent, counters.acks_sent) == (1, 1, 2)
    finally:
        await _stop(peer, task)


def _gap_warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "reads missing from the reader"]


async def test_gap_in_sequence_numbers_is_counted_logged_and_refetched(link_logs: list[dict[str, Any]]) -> None:
    sink = MemorySink()
    peer, task, counters = await _start(AckFormat(), sink)
    try:
        await peer.send(b"1,A,1\n5,E,5\n")
        got = b""
        while b"AGAIN" not in got or got.count(b"\n") < 3:
            got += await peer.recv()
        assert b"AGAIN 2 3\n" in got
        assert counters.gaps == 3
        assert counters.refetches == 1
        # the crew sees which reader lost which reads, once
        assert _gap_warnings(link_logs) == [
            {
                "event": "reads missing from the reader",
                "log_level": "warning",
                "link": "test",
                "reader": "r1",
                "first": 2,
                "count": 3,
            }
        ]
        await peer.send(b"2,B,2\n3,C,3\n4,D,4\n")  # the re-fetched reads fill the hole: no new gap
        await eventually(lambda: len(sink.reads) == 5, what="the re-fetched reads")
        assert counters.gaps == 3
        await peer.send(b"6,F,6\n")
        await eventually(lambda: len(sink.reads) == 6, what="a read after the hole")
        assert len(_gap_warnings(link_logs)) == 1  # answers to the re-fetch and the next read are no new gap
    finally:
        await _stop(peer, task)


async def test_heartbeats_are_skipped_answered_and_bad_lines_rejected() -> None:
    sink = MemorySink()
    peer, task, counters = await _start(AckFormat(), sink)
    try:
        await peer.send(b"PING?\nnot a read\n")
        assert await peer.recv() == b"PONG\n"
        await eventually(lambda: counters.rejected == 1, what="the rejection")
        assert counters.skipped == 1
        assert counters.skipped_kinds == {"heartbeat": 1}
        assert sink.rejects[0][1] == 6  # byte offset of the bad line in the stream
        assert sink.rejects[0][3] == "not a read"
    finally:
        await _stop(peer, task)


async def test_silence_watchdog_drops_a_quiet_reader_and_the_link_reconnects() -> None:
    sink = MemorySink()
    peer, task, counters = await _start(AckFormat(silence=0.3), sink)
    try:
        # the reader says nothing (a hung decoder): the gateway drops the connection...
        heard = b""
        while chunk := await peer.recv(timeout=3):  # ends at EOF: the gateway hung up
            heard += chunk
        assert set(heard.splitlines()) <= {b"KEEPALIVE"}  # it kept asking, then gave up
        assert counters.silence_drops == 1
        await peer.hangup()
        # ...and connects again, greeting afresh
        await peer.connected()
        assert await peer.recv() == b"HELLO\n"
        await peer.send(b"1,A,1\n")
        assert await peer.recv() == b"ACK 1\n"
    finally:
        await _stop(peer, task)


async def test_keepalive_is_sent_while_the_reader_is_quiet() -> None:
    sink = MemorySink()
    peer, task, _counters = await _start(AckFormat(silence=0.6), sink)
    try:
        assert await peer.recv(timeout=1) == b"KEEPALIVE\n"  # every silence_timeout/3
    finally:
        await _stop(peer, task)


async def test_link_state_follows_the_peer() -> None:
    sink = MemorySink()
    peer = TcpServerPeer()
    await peer.start()
    link = peer.make_link()
    counters = ReaderCounters()
    task = asyncio.create_task(run_reader(link, AckFormat(), ParseContext(), sink, counters))
    try:
        assert not link.state.connected
        await peer.connected()
        await eventually(lambda: link.state.connected, what="connected")
        since = link.state.since
        assert link.state.last_byte_at is None
        await peer.send(b"1,A,1\n")
        await eventually(lambda: link.state.last_byte_at is not None, what="a byte")
        await peer.hangup()
        await peer.connected()  # it comes straight back
        await eventually(lambda: link.state.accepted == 2, what="the reconnect")
        assert link.state.reconnects == 1
        assert link.state.last_error == "closed by peer"
        assert link.state.since > since
        await eventually(lambda: counters.connections == 2, what="a second conversation")
        await peer.close()  # the reader is switched off: the link stays down and says why
        await eventually(lambda: "Refused" in (link.state.last_error or ""), what="connection refused")
        assert not link.state.connected
    finally:
        await _stop(peer, task)


class HeldSink(MemorySink):
    """Each journal() call waits for its own release: commits that finish in any order the test chooses."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[str | None], asyncio.Event]] = []

    async def journal(self, link: str, reads: Sequence[Read]) -> Sequence[bool]:
        release = asyncio.Event()
        self.calls.append(([r.chip for r in reads], release))
        await release.wait()
        return await super().journal(link, reads)


async def test_the_link_reads_on_while_a_batch_commits_and_acks_in_the_readers_order() -> None:
    sink = HeldSink()
    peer, task, counters = await _start(AckFormat(), sink)
    try:
        await peer.send(b"1,CHIPA,100\n")
        await eventually(lambda: len(sink.calls) == 1)
        await peer.send(b"2,CHIPB,200\n")  # the first batch has not committed: the link parses this one anyway
        await eventually(lambda: len(sink.calls) == 2)
        assert [chips for chips, _ in sink.calls] == [["CHIPA"], ["CHIPB"]]
        sink.calls[1][1].set()  # the second commits first: its ack still waits for the first batch's
        with pytest.raises(TimeoutError):
            await peer.recv(timeout=0.3)
        assert counters.reads == 0 and counters.acks_sent == 0  # nothing is counted before it is acknowledged
        sink.calls[0][1].set()
        acks = b""
        while acks.count(b"\n") < 2:
            acks += await peer.recv()
        assert acks == b"ACK 1\nACK 2\n"
        assert counters.reads == 2 and counters.acks_sent == 2
    finally:
        await _stop(peer, task)


class FailingSink(MemorySink):
    async def journal(self, link: str, reads: Sequence[Read]) -> Sequence[bool]:
        await asyncio.sleep(0.05)
        raise StorageError("database is full: read not taken")


async def test_a_journal_failure_stops_the_link_even_while_the_reader_waits_for_its_ack() -> None:
    """An acknowledging reader sends nothing until it has its ack: the failure must not wait for its next byte."""
    peer, task, counters = await _start(AckFormat(), FailingSink())
    try:
        await peer.send(b"1,CHIPA,100\n")
        with pytest.raises(StorageError, match="database is full"):
            await asyncio.wait_for(task, 5)
        assert counters.reads == 0 and counters.acks_sent == 0
        rest = b""
        with contextlib.suppress(TimeoutError):
            rest = await peer.recv(timeout=0.2)
        assert b"ACK" not in rest  # never acknowledged (the link closed)
    finally:
        await _stop(peer, task)
