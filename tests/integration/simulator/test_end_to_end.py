"""The simulator drives each available format through a real link into the ingest and an in-memory sink:
what the gateway journaled must be exactly what the simulator's truth file says it sent (and acked)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.model import Read, format_ts
from gateway.simulator import Race, TruthWriter, drive, load
from gateway.simulator.race import chip_style_for
from tests.fixtures.links import MemorySink, PtyPair, eventually, free_port

TZ = ZoneInfo("Europe/Berlin")
GUN = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def directions(name: str) -> list[str]:
    role = formats.get(name).gateway_role
    return {"listen": ["gateway-listens"], "connect": ["gateway-connects"]}.get(
        role, ["gateway-listens", "gateway-connects"]
    )


CASES = [(name, d) for name in formats.names() for d in directions(name)]


def keys(reads: list[Read]) -> Counter[tuple[str | None, str]]:
    return Counter((r.chip, format_ts(r.timestamp)) for r in reads)


@pytest.mark.parametrize(("name", "direction"), CASES)
async def test_simulator_to_ingest_matches_truth(name: str, direction: str, tmp_path: Path) -> None:
    fmt = formats.get(name)
    reads = Race.generate(25, 11, GUN, chip_style=chip_style_for(name))
    now = reads[-1].timestamp + timedelta(seconds=5)  # both sides agree on "today" for time-of-day protocols
    port = free_port()
    if direction == "gateway-listens":
        gateway_url, sim_url = f"tcp-listen://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}"
    else:
        gateway_url, sim_url = f"tcp://127.0.0.1:{port}", f"tcp-listen://127.0.0.1:{port}"
    sink = MemorySink()
    counters = ReaderCounters()
    link = open_link(gateway_url, name="finish", backoff_base=0.05, backoff_cap=0.2)
    gateway = asyncio.create_task(run_reader(link, fmt, ParseContext(tz=TZ, now=now, reader="finish"), sink, counters))
    truth_path = tmp_path / "truth.jsonl"
    truth = TruthWriter.open(truth_path)
    try:
        stats = await asyncio.wait_for(
            drive(
                fmt,
                sim_url,
                reads,
                speed=0,
                truth=truth,
                ctx=ParseContext(tz=TZ, now=now, reader="sim"),
                seed=4,
                corrupt_rate=0.08,
                backoff_base=0.05,
                backoff_cap=0.2,
                ack_timeout=10,
            ),
            20,
        )
        truth.close()
        told = load(truth_path)
        await eventually(
            lambda: len(sink.reads) >= len(told.reads),
            what=f"{name}: every read at the gateway (have {len(sink.reads)}, rejects {sink.rejects[:2]})",
        )
        await eventually(lambda: counters.rejected >= told.corrupt, what=f"{name}: the corrupt lines")
    finally:
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
    assert stats.complete
    assert len(told.reads) == len(reads) == stats.sent
    assert keys(sink.reads) == keys(told.reads) == keys(reads)
    assert counters.rejected == told.corrupt == stats.corrupt
    if stats.corrupt == 0:
        assert fmt.reader_conversation(ParseContext()).needs_ack  # only acked protocols go without noise
    if fmt.reader_conversation(ParseContext()).needs_ack:
        assert all(told.is_acked(r) for r in told.reads)
        assert stats.acked == len(reads)
    assert told.summary is not None and told.summary["complete"] is True


async def test_simulator_over_a_serial_pty(pty_pair: PtyPair, tmp_path: Path) -> None:
    fmt = formats.get("csv")
    reads = Race.generate(15, 2, GUN)
    sink = MemorySink()
    counters = ReaderCounters()
    link = open_link(f"serial://{pty_pair.gateway_end}?baudrate=115200", name="serial", backoff_base=0.05)
    gateway = asyncio.create_task(run_reader(link, fmt, ParseContext(), sink, counters))
    try:
        await eventually(lambda: link.state.connected, what="the gateway to open its end of the cable")
        stats = await asyncio.wait_for(drive(fmt, str(pty_pair.peer_end), reads, speed=0, corrupt_rate=0.1), 10)
        await eventually(lambda: len(sink.reads) == len(reads), what="reads over the serial line")
    finally:
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
    assert keys(sink.reads) == keys(reads)
    assert [(r.bib, r.antenna, r.rssi) for r in sink.reads] == [(r.bib, r.antenna, r.rssi) for r in reads]
    assert counters.rejected == stats.corrupt > 0


async def test_simulator_paces_reads_by_race_time() -> None:
    """--speed scales the race clock: 3 s of race at speed 10 takes about 0.3 s, not zero, not 3 s."""
    fmt = formats.get("csv")
    t0 = GUN
    reads = [Read(chip=f"C{i}", bib=str(i), timestamp=t0 + timedelta(seconds=i), seq=i + 1) for i in range(4)]
    port = free_port()
    sink = MemorySink()
    arrivals: list[float] = []

    class TimingSink(MemorySink):
        async def journal(self, link: str, batch: object) -> list[bool]:  # type: ignore[override]
            arrivals.append(asyncio.get_running_loop().time())
            return list(await super().journal(link, batch))  # type: ignore[arg-type]

    sink = TimingSink()
    link = open_link(f"tcp-listen://127.0.0.1:{port}", name="p")
    gateway = asyncio.create_task(run_reader(link, fmt, ParseContext(), sink, ReaderCounters()))
    try:
        await eventually(lambda: link.listening.is_set(), what="the gateway listening")
        await asyncio.wait_for(drive(fmt, f"tcp://127.0.0.1:{port}", reads, speed=10, backoff_base=0.05), 10)
        await eventually(lambda: len(sink.reads) == 4, what="four paced reads")
    finally:
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
    spread = arrivals[-1] - arrivals[0]
    assert 0.2 < spread < 2.0  # generous bounds: this checks pacing exists, not how fast the host is


def refetching_formats() -> list[str]:
    return [n for n in formats.names() if formats.get(n).conversation(ParseContext()).refetch(1, 1)]


@pytest.mark.parametrize("name", refetching_formats())
async def test_reads_lost_on_the_wire_are_fetched_again(name: str, tmp_path: Path) -> None:
    """The reader logs every read; some never reach the gateway. The gap in sequence numbers is noticed
    and the gateway asks for them (RaceResult <from>:<count>, Ultra rewind...), the simulator answers."""
    fmt = formats.get(name)
    reads = Race.generate(25, 8, GUN, chip_style=chip_style_for(name))
    now = reads[-1].timestamp + timedelta(seconds=5)
    port = free_port()
    role = fmt.gateway_role
    gateway_url, sim_url = (
        (f"tcp://127.0.0.1:{port}", f"tcp-listen://127.0.0.1:{port}")
        if role == "connect"
        else (f"tcp-listen://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}")
    )
    sink = MemorySink()
    counters = ReaderCounters()
    link = open_link(gateway_url, name="finish", backoff_base=0.05, backoff_cap=0.2)
    gateway = asyncio.create_task(run_reader(link, fmt, ParseContext(tz=TZ, now=now, reader="finish"), sink, counters))
    truth_path = tmp_path / "truth.jsonl"
    truth = TruthWriter.open(truth_path)
    try:
        stats = await asyncio.wait_for(
            drive(
                fmt,
                sim_url,
                reads,
                speed=0,
                truth=truth,
                ctx=ParseContext(tz=TZ, now=now, reader="sim"),
                seed=2,
                drop_rate=0.1,
                backoff_base=0.05,
            ),
            20,
        )
        truth.close()
        await eventually(
            lambda: len(sink.reads) >= len(reads),
            what=f"{name}: lost reads fetched again ({len(sink.reads)}/{len(reads)}, {counters.as_dict()}, {stats})",
        )
    finally:
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
    told = load(truth_path)
    assert stats.dropped == len(told.dropped) > 0
    assert counters.gaps >= stats.dropped and counters.refetches >= 1
    assert keys(sink.reads) == keys(reads)  # each exactly once, the lost ones included
