"""Set-time: a hook every conversation has (b"" where the protocol has no command), the RACE RESULT and Ultra
command shapes, and the simulated readers taking the command end to end when `set_time` is on (only then)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.simulator import Race
from gateway.simulator.driver import Driver
from gateway.simulator.race import chip_style_for
from tests.fixtures.links import MemorySink, eventually, free_port

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 5, 17, 9, 15, 2, 600_000, tzinfo=UTC)


def test_raceresult_settime_is_the_decoders_local_date_and_time() -> None:
    conv = formats.get("raceresult").conversation(ParseContext(tz=BERLIN))
    assert conv.set_time(NOW) == b"SETTIME;2026-05-17;11:15:03\r\n"  # local (UTC+2), rounded to the second


def test_ultra_set_time_is_t_space_time_date() -> None:
    conv = formats.get("ultra").conversation(ParseContext(tz=BERLIN))
    assert conv.set_time(NOW) == b"t 11:15:03 17-05-2026\n"


@pytest.mark.parametrize("name", ["csv", "ipico", "chronotrack", "mylaps"])
def test_protocols_without_a_set_time_command_send_nothing(name: str) -> None:
    assert formats.get(name).conversation(ParseContext()).set_time(NOW) == b""


@pytest.mark.parametrize("name", ["raceresult", "ultra"])
def test_simulated_reader_records_the_command(name: str) -> None:
    fmt = formats.get(name)
    ctx = ParseContext(tz=BERLIN)
    reader = fmt.reader_conversation(ctx)
    reader.on_bytes(fmt.conversation(ctx).set_time(NOW))
    assert reader.clock_set == [datetime(2026, 5, 17, 9, 15, 3, tzinfo=UTC)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["raceresult", "ultra"])
@pytest.mark.parametrize("set_time", [True, False])
async def test_simulator_receives_set_time_end_to_end(name: str, set_time: bool) -> None:
    fmt = formats.get(name)
    port = free_port()
    gun = datetime.now(UTC).replace(microsecond=0)
    reads = Race.generate(3, 5, gun, chip_style=chip_style_for(name))
    driver = Driver(
        fmt,
        f"tcp-listen://127.0.0.1:{port}",
        reads,
        speed=0,
        ctx=ParseContext(tz=BERLIN, reader="sim"),
        backoff_base=0.05,
        backoff_cap=0.2,
    )
    sink, counters = MemorySink(), ReaderCounters()
    link = open_link(f"tcp://127.0.0.1:{port}", name="finish", backoff_base=0.05, backoff_cap=0.2)
    sim = asyncio.create_task(driver.run())
    gateway = asyncio.create_task(
        run_reader(link, fmt, ParseContext(tz=BERLIN, reader="finish"), sink, counters, set_time=set_time)
    )
    try:
        stats = await asyncio.wait_for(sim, 20)
        await eventually(lambda: len(sink.reads) == len(reads), what="the reads")
    finally:
        for t in (sim, gateway):
            t.cancel()
        await asyncio.gather(sim, gateway, return_exceptions=True)
    assert stats.complete
    clock_set = driver.rconv.clock_set  # type: ignore[attr-defined]
    if set_time:
        assert len(clock_set) == 1 and counters.clock_sets == 1
        assert abs(clock_set[0] - datetime.now(UTC)) < timedelta(seconds=5)
    else:
        assert clock_set == [] and counters.clock_sets == 0
