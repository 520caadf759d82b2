"""record -> replay -> parse gives back the same reads, through the library and through the commands."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway import formats
from gateway.capture import read_capture
from gateway.formats.base import ParseContext
from gateway.formats.cli import run_parse
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.model import Read, format_ts
from gateway.recorder import load_entries, record, replay
from gateway.simulator import Race, drive
from gateway.simulator.race import chip_style_for
from tests.fixtures.links import MemorySink, TcpServerPeer, eventually, free_port
from tests.integration.simulator.test_resend import SeqFormat

CSV = formats.get("csv")
CTX = ParseContext(reader="rec")
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def sample(n: int) -> list[Read]:
    return [
        Read(
            chip=f"05800000{i:04d}",
            bib=str(100 + i),
            timestamp=T0 + timedelta(milliseconds=810 * i),
            antenna=2,
            rssi=-50.0 - i,
            seq=i + 1,
        )
        for i in range(n)
    ]


async def _reader_sends(peer: TcpServerPeer, data: list[bytes], gap: float) -> None:
    await peer.connected()
    for chunk in data:
        await peer.send(chunk)
        await asyncio.sleep(gap)


async def test_record_then_replay_to_a_gateway_gives_the_same_reads(tmp_path: Path) -> None:
    reads = sample(12)
    lines = [CSV.format(r, CTX) for r in reads]
    # split mid-line on purpose: the capture keeps the stream byte for byte whatever the chunking
    stream = b"".join(lines)
    chunks = [stream[i : i + 37] for i in range(0, len(stream), 37)]
    peer = TcpServerPeer()
    await peer.start()
    out = tmp_path / "race.cap"
    try:
        sender = asyncio.create_task(_reader_sends(peer, chunks, 0.02))
        stats = await record(peer.url, "csv", out, duration=len(chunks) * 0.02 + 0.8)
        await sender
    finally:
        await peer.close()
    assert stats.reads == 12 and stats.rejected == 0
    header, entries = read_capture(out)
    assert header.fields["format"] == "csv" and header.fields["source"] == peer.url
    captured = list(entries)
    assert b"".join(e.data for e in captured) == stream
    assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(captured))
    assert captured[-1].arrival > captured[0].arrival  # arrival times were recorded, not one instant

    # replay into a gateway that connects to the replayer (as it would to a real reader)
    port = free_port()
    sink = MemorySink()
    gw = asyncio.create_task(
        run_reader(open_link(f"tcp://127.0.0.1:{port}", name="r", backoff_base=0.05), CSV, CTX, sink, ReaderCounters())
    )
    try:
        sent = await asyncio.wait_for(replay(load_entries(out), f"tcp-listen://127.0.0.1:{port}", speed=5), 10)
        await eventually(lambda: len(sink.reads) == 12, what="the replayed reads")
    finally:
        gw.cancel()
        await asyncio.gather(gw, return_exceptions=True)
    assert sent == len(stream)
    assert [(r.bib, r.chip, r.timestamp, r.antenna, r.rssi) for r in sink.reads] == [
        (r.bib, r.chip, r.timestamp, r.antenna, r.rssi) for r in reads
    ]


async def test_record_greets_and_acks_only_what_is_in_the_capture(tmp_path: Path) -> None:
    fmt = SeqFormat()
    peer = TcpServerPeer()
    await peer.start()
    out = tmp_path / "acked.cap"
    task = asyncio.create_task(record(peer.url, fmt, out, duration=5))
    try:
        await peer.connected()
        assert await peer.recv() == b"HELLO\n"  # the recorder speaks the protocol so the reader starts
        await peer.send(b"1,CHIPA,2026-11-22T10:00:00.000Z\n")
        assert await peer.recv() == b"ACK 1\n"
        # by the time the reader hears the ack, the read is on disk
        _h, entries = read_capture(out)
        assert b"".join(e.data for e in entries) == b"1,CHIPA,2026-11-22T10:00:00.000Z\n"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await peer.close()


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_record_replay_parse_commands(tmp_path: Path) -> None:
    reads = sample(6)
    lines = [CSV.format(r, CTX) for r in reads]
    peer = TcpServerPeer()
    await peer.start()
    cap, raw = tmp_path / "cli.cap", tmp_path / "cli.raw"
    try:
        sender = asyncio.create_task(_reader_sends(peer, lines, 0.01))
        code, _out, err = await _cli(
            "record", "--from", peer.url, "--format", "csv", "--out", str(cap), "--duration", "1.5"
        )
        await sender
    finally:
        await peer.close()
    assert code == 0, err
    assert "6 reads, 0 rejected" in err
    code, _out, err = await _cli("replay", str(cap), "--to", f"file://{raw}", "--speed", "0")
    assert code == 0, err
    code, out, err = await _cli("parse", "--format", "csv", str(raw))
    assert code == 0, err
    parsed = [json.loads(line) for line in out.splitlines()]
    assert [(p["bib"], p["chip"], p["timestamp"]) for p in parsed] == [
        (r.bib, r.chip, format_ts(r.timestamp)) for r in reads
    ]


async def test_replay_command_errors_are_one_line(tmp_path: Path) -> None:
    code, _out, err = await _cli("replay", str(tmp_path / "missing.cap"), "--to", "tcp://127.0.0.1:1")
    assert code == 1
    assert err.strip().splitlines() == [f"Error: {tmp_path / 'missing.cap'}: no such file"]
    bad = tmp_path / "bad.cap"
    bad.write_text("# rufus-gateway capture v1 format=csv\nnot-a-time\tx\n")
    code, _out, err = await _cli("replay", str(bad), "--to", "tcp://127.0.0.1:1")
    assert code == 1 and "bad.cap:2: bad capture line" in err and "Traceback" not in err


def _roles(name: str) -> tuple[str, str]:
    """(the gateway's URL, the reader's URL) on a fresh port, the way round the protocol runs."""
    port = free_port()
    if formats.get(name).gateway_role == "listen":
        return f"tcp-listen://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}"
    return f"tcp://127.0.0.1:{port}", f"tcp-listen://127.0.0.1:{port}"


def _fields(r: Read) -> tuple[object, ...]:
    return (r.bib, r.chip, format_ts(r.timestamp), r.antenna, r.rssi, r.reader, r.seq)


@pytest.mark.parametrize("name", formats.names())
async def test_record_replay_parse_over_every_format(name: str, tmp_path: Path) -> None:
    """A simulated timer of each make (speaking its conversation: handshake, acks) is recorded; the capture,
    parsed offline, gives the race's reads; replayed to a gateway, it gives the very same reads again."""
    fmt = formats.get(name)
    # placed an hour ago: protocols without a date complete the time of day with the capture's own day
    gun = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    race = Race.generate(6, 5, gun, chip_style=chip_style_for(name))
    out = tmp_path / f"{name}.cap"

    # 1. record: the recorder is the gateway side of the conversation, the simulator the timer
    rec_url, sim_url = _roles(name)
    recording = asyncio.create_task(record(rec_url, fmt, out, tz=BERLIN))
    try:
        stats = await asyncio.wait_for(
            drive(
                fmt,
                sim_url,
                race,
                speed=0,
                ctx=ParseContext(tz=BERLIN, reader="timer"),
                backoff_base=0.05,
                backoff_cap=0.2,
                ack_timeout=5,
            ),
            15,
        )
    finally:  # the timer is done (every read acknowledged, or it hung up): the capture is complete
        recording.cancel()
        await asyncio.gather(recording, return_exceptions=True)
    assert stats.complete and stats.sent == len(race)

    # 2. parse the capture offline, as `rufus-gateway parse` does
    parsed_out, parsed_err = io.StringIO(), io.StringIO()
    with out.open("rb") as stream:
        code = run_parse(fmt, ParseContext(tz=BERLIN, reader="finish"), stream, parsed_out, parsed_err)
    assert code == 0, parsed_err.getvalue()
    parsed = [json.loads(line) for line in parsed_out.getvalue().splitlines()]
    assert Counter((p["chip"], p["timestamp"]) for p in parsed) == Counter(
        (r.chip, format_ts(r.timestamp)) for r in race
    )

    # 3. replay it to a gateway: the reader's bytes as they came, the gateway's own conversation
    gw_url, replay_url = _roles(name)
    sink, counters = MemorySink(), ReaderCounters()
    link = open_link(gw_url, name="finish", backoff_base=0.05, backoff_cap=0.2)
    gw = asyncio.create_task(run_reader(link, fmt, ParseContext(tz=BERLIN, reader="finish"), sink, counters))
    try:
        await asyncio.wait_for(replay(load_entries(out), replay_url, speed=0, backoff_cap=0.2), 10)
        await eventually(lambda: len(sink.reads) >= len(parsed), what=f"{name}: the replayed reads")
    finally:
        gw.cancel()
        await asyncio.gather(gw, return_exceptions=True)
    assert counters.rejected == 0, sink.rejects[:3]
    replayed = [_fields(r) for r in sink.reads]
    assert replayed == [
        (p["bib"], p["chip"], p["timestamp"], p["antenna"], p["rssi"], p["reader"], p["seq"]) for p in parsed
    ]
