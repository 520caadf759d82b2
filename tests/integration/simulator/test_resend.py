"""An acknowledging protocol across gateway crashes: reads committed but not yet acked are re-sent by the
simulator after it reconnects, recognised by the journal, acked, and never journaled twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from gateway.formats.base import Format, Framer, ParseContext, ParseResult, ReaderConversation, Rejected
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.model import Read, format_ts, parse_ts
from gateway.simulator import Race, TruthWriter, drive, load
from tests.fixtures.links import MemorySink, free_port
from tests.integration.links.test_ingest import AckConversation, LineFramer


class SeqFormat(Format):
    """`seq,chip,timestamp` lines, acked with `ACK seq` (a small MYLAPS-like protocol for the test)."""

    name: ClassVar[str] = "seqtest"

    silence = None

    def framer(self) -> Framer:
        return LineFramer()

    def parse(self, record: bytes, ctx: ParseContext) -> ParseResult:
        try:
            seq, chip, ts = record.decode().split(",")
            return Read(chip=chip, bib=None, timestamp=parse_ts(ts), seq=int(seq), reader="dec1")
        except ValueError as exc:
            return Rejected(str(exc), record.decode(errors="replace"))

    def format(self, read: Read, ctx: ParseContext) -> bytes:
        return f"{read.seq},{read.chip},{format_ts(read.timestamp)}\n".encode()

    def conversation(self, ctx: ParseContext) -> AckConversation:
        return AckConversation(self, ctx)  # type: ignore[arg-type]

    def reader_conversation(self, ctx: ParseContext) -> ReaderConversation:
        return SeqReader(self, ctx)


class SeqReader(ReaderConversation):
    def __init__(self, fmt: SeqFormat, ctx: ParseContext) -> None:
        self.fmt, self.ctx = fmt, ctx
        self.sent: dict[int, Read] = {}
        self.buf = b""

    def greeting(self) -> bytes:
        return b""

    def encode(self, read: Read) -> bytes:
        assert read.seq is not None
        self.sent[read.seq] = read
        return self.fmt.format(read, self.ctx)

    def on_bytes(self, data: bytes) -> tuple[list[Read], bytes]:
        self.buf += data
        acked = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.startswith(b"ACK "):
                acked.append(self.sent[int(line[4:])])
        return acked, b""

    @property
    def needs_ack(self) -> bool:
        return True


class CrashingSink(MemorySink):
    """Commits, then the gateway 'dies' before it can send the ack (once, after `after` reads)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.crashed = asyncio.Event()

    async def journal(self, link: str, reads: Sequence[Read]) -> Sequence[bool]:
        result = await super().journal(link, reads)
        if len(self.reads) >= self.after and not self.crashed.is_set():
            self.crashed.set()
            await asyncio.Event().wait()  # hangs here until the process is killed: the ack is never sent
        return result


async def test_unacked_reads_are_resent_after_a_gateway_crash_and_journaled_once(tmp_path: Path) -> None:
    fmt = SeqFormat()
    reads = Race.generate(20, 5, datetime(2026, 11, 22, 9, tzinfo=UTC))
    port = free_port()
    sink = CrashingSink(after=len(reads) // 2)
    ctx = ParseContext(reader="gw")

    def start_gateway() -> asyncio.Task[None]:
        link = open_link(f"tcp-listen://127.0.0.1:{port}", name="dec1")
        return asyncio.create_task(run_reader(link, fmt, ctx, sink, ReaderCounters()))

    gateway = start_gateway()
    truth_path = tmp_path / "truth.jsonl"
    truth = TruthWriter.open(truth_path)
    sim = asyncio.create_task(
        drive(
            fmt,
            f"tcp://127.0.0.1:{port}",
            reads,
            speed=0,
            truth=truth,
            backoff_base=0.05,
            backoff_cap=0.1,
            ack_timeout=10,
        )
    )
    try:
        await asyncio.wait_for(sink.crashed.wait(), 10)
        gateway.cancel()  # the kill: committed reads were never acknowledged
        await asyncio.gather(gateway, return_exceptions=True)
        await asyncio.sleep(0.2)  # down for a moment; the simulator keeps trying
        gateway = start_gateway()
        stats = await asyncio.wait_for(sim, 15)
    finally:
        sim.cancel()
        gateway.cancel()
        await asyncio.gather(sim, gateway, return_exceptions=True)
        truth.close()
    told = load(truth_path)
    assert stats.complete and stats.acked == len(reads) and stats.unacked == 0
    assert stats.resent >= 1 and told.resends == stats.resent
    assert stats.connections >= 2
    assert all(told.is_acked(r) for r in reads)
    # every read journaled exactly once, re-sends recognised
    assert sorted(r.seq or 0 for r in sink.reads) == list(range(1, len(reads) + 1))
