"""`rufus-gateway simulate` as a crew runs it: to a file, to a gateway, and killed half-way."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.links.tcp import TcpListenLink
from gateway.simulator import load
from gateway.simulator.truth import read_key
from tests.fixtures.links import MemorySink, eventually

CSV = formats.get("csv")


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "simulate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )


async def test_simulate_to_a_file_then_read_it_back(tmp_path: Path) -> None:
    cap, truth = tmp_path / "race.cap", tmp_path / "truth.jsonl"
    proc = await _spawn(
        "--format",
        "csv",
        "--to",
        f"file://{cap}",
        "--runners",
        "40",
        "--seed",
        "3",
        "--corrupt-rate",
        "0.05",
        "--truth",
        str(truth),
        "--start",
        "2026-11-22T09:00:00Z",
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    told = load(truth)
    assert told.summary is not None and told.summary["complete"]
    assert f"complete: sent {len(told.reads)}/{len(told.reads)} reads" in err.decode()
    sink = MemorySink()
    counters = ReaderCounters()
    await run_reader(open_link(f"file://{cap}"), CSV, ParseContext(), sink, counters)
    assert sorted(map(read_key, sink.reads)) == sorted(map(read_key, told.reads))
    assert counters.rejected == told.corrupt > 0
    assert {r.bib for r in sink.reads} <= {str(b) for b in range(1, 41)}


async def test_simulate_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    proc = await _spawn("--format", "csv", "--to", "udp://x:1", "--runners", "2")
    _out, err = await proc.communicate()
    assert proc.returncode == 2
    assert "unknown scheme udp://" in err.decode() and "Traceback" not in err.decode()
    proc = await _spawn("--format", "csv", "--to", "tcp://x:1", "--tz", "Mars/Olympus")
    _out, err = await proc.communicate()
    assert proc.returncode == 2 and "unknown IANA time zone 'Mars/Olympus'" in err.decode()


async def test_a_killed_simulator_leaves_a_usable_truth_file(tmp_path: Path) -> None:
    link = open_link("tcp-listen://127.0.0.1:0", name="finish")
    assert isinstance(link, TcpListenLink)
    sink = MemorySink()
    gateway = asyncio.create_task(run_reader(link, CSV, ParseContext(), sink, ReaderCounters()))
    truth = tmp_path / "truth.jsonl"
    proc = None
    try:
        await asyncio.wait_for(link.listening.wait(), 5)
        assert link.address is not None
        proc = await _spawn(
            "--format",
            "csv",
            "--to",
            f"tcp://127.0.0.1:{link.address[1]}",
            "--runners",
            "300",
            "--speed",
            "120",
            "--corrupt-rate",
            "0",
            "--truth",
            str(truth),
        )
        await eventually(lambda: len(sink.reads) >= 10, timeout=15, what="the first reads")
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        await proc.wait()
        told = load(truth)
        await eventually(lambda: len(sink.reads) >= len(told.reads), what="in-flight reads")
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
    assert told.summary is None  # it never got to say goodbye...
    assert 10 <= len(told.reads) < 1000  # ...but every read it sent is in the file
    # the truth is written just before each send: at most the one read in hand when killed is not at the gateway
    sent, got = set(map(read_key, told.reads)), list(map(read_key, sink.reads))
    assert len(got) == len(set(got)) and set(got) <= sent and len(sent) - len(got) <= 1
