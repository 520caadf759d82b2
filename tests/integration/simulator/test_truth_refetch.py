"""The truth file records every read on the wire, the ones the gateway asked for again (re-fetch, rewind,
resume) included, marked as such; and `simulate` speaks csv (the simulated One4All) unless told otherwise."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.simulator import Race, TruthWriter, drive, load
from gateway.simulator.cli import simulate_cmd
from gateway.simulator.race import chip_style_for
from gateway.simulator.truth import read_key
from tests.fixtures.links import MemorySink, eventually, free_port

GUN = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", ["raceresult", "ultra", "chronotrack"])
async def test_reads_sent_again_on_request_are_in_the_truth_file(name: str, tmp_path: Path) -> None:
    fmt = formats.get(name)
    reads = Race.generate(40, 6, GUN, chip_style=chip_style_for(name))
    now = reads[-1].timestamp + timedelta(seconds=5)
    port = free_port()
    gw_url, sim_url = (
        (f"tcp://127.0.0.1:{port}", f"tcp-listen://127.0.0.1:{port}")
        if fmt.gateway_role == "connect"
        else (f"tcp-listen://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}")
    )
    sink, counters = MemorySink(), ReaderCounters()
    link = open_link(gw_url, name="finish", backoff_base=0.05, backoff_cap=0.2)
    gateway = asyncio.create_task(run_reader(link, fmt, ParseContext(now=now, reader="finish"), sink, counters))
    path = tmp_path / "truth.jsonl"
    truth = TruthWriter.open(path)
    try:
        stats = await asyncio.wait_for(
            drive(
                fmt,
                sim_url,
                reads,
                speed=0,
                truth=truth,
                ctx=ParseContext(now=now, reader="sim"),
                seed=2,
                drop_rate=0.1,
                backoff_base=0.05,
            ),
            20,
        )
        truth.close()
        await eventually(lambda: len(sink.reads) >= len(reads), what="the lost reads fetched again")
    finally:
        gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
    told = load(path)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    again = [x for x in lines if x["type"] == "read" and x.get("trigger") == "refetch"]
    assert stats.dropped > 0 and stats.refetched == len(again) == told.refetched >= stats.dropped
    assert all(x["resend"] for x in again)
    # every read the gateway journaled is one the truth file says went over the wire
    on_wire = {read_key(r) for r in told.reads}
    assert {read_key(r) for r in sink.reads} <= on_wire
    assert {read_key(r) for r in told.dropped} <= on_wire
    assert json.loads(path.read_text().splitlines()[-1])["refetched"] == stats.refetched


def test_simulate_speaks_csv_by_default(tmp_path: Path) -> None:
    cap = tmp_path / "race.cap"
    result = CliRunner().invoke(
        simulate_cmd,
        ["--to", f"file://{cap}", "--runners", "3", "--corrupt-rate", "0", "--start", "2026-11-22T09:00:00Z"],
    )
    assert result.exit_code == 0, result.output
    assert "format=csv" in cap.read_text().splitlines()[0]
    assert "as csv to" in result.output
