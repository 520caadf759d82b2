"""Every format's reader side (what the simulator speaks) against its gateway side, in memory.

The reads look like the simulator's: 12-digit chips, bibs, dBm RSSI, several antennas, a 10 ms grid.
Whatever a format cannot carry (bib, rssi) may be lost; chip, time and order must come through, every
read exactly once, nothing rejected, and where the protocol acknowledges, every read acknowledged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway import formats
from gateway.formats.base import ParseContext, Rejected
from gateway.model import Read
from tests.unit.formats.helpers import GatewayEnd

T0 = datetime(2026, 5, 17, 21, 58, tzinfo=UTC)  # the race runs across local midnight in Berlin (CEST)


def _race(n: int) -> list[Read]:
    return [
        Read(
            chip=f"{58000000000 + i:012d}",
            bib=str(i),
            timestamp=T0 + timedelta(milliseconds=4170 * i),
            antenna=1 + i % 4,
            rssi=float(-40 - i % 30),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("name", formats.names())
def test_reader_and_gateway_sides_agree(name: str) -> None:
    fmt = formats.get(name)
    now = T0 + timedelta(minutes=1)
    ctx = ParseContext(tz=ZoneInfo("Europe/Berlin"), now=now, reader="finish")
    gw, reader = GatewayEnd(fmt, ctx), fmt.reader_conversation(ctx)
    race = _race(60)
    acked: list[Read] = []
    replies = gw.receive(reader.greeting())
    for read in race:
        acked += reader.on_bytes(replies)[0]
        replies = gw.receive(reader.encode(read))
        if heartbeat := reader.heartbeat():
            replies += gw.receive(heartbeat)
        for got in gw.reads[len(acked) :]:
            replies += gw.conv.ack(got)  # as the ingest does once the journal has committed
    acked += reader.on_bytes(replies)[0]
    assert [r for r in gw.results if isinstance(r, Rejected)] == []
    assert [(r.chip, r.timestamp) for r in gw.reads] == [(r.chip, r.timestamp) for r in race]
    seqs = [r.seq for r in gw.reads]
    if seqs[0] is not None:
        assert seqs == list(range(seqs[0], seqs[0] + len(race)))  # numbered by the reader, no gaps
    assert getattr(gw.conv, "gaps", []) == []
    if reader.needs_ack:
        assert acked == race
    # a stronger read stays stronger whatever scale the protocol uses
    strengths = [r.rssi for r in gw.reads]
    if strengths[0] is not None:
        assert strengths[0] > strengths[5]  # -40 dBm vs -45 dBm


def test_format_metadata() -> None:
    expected = {
        "csv": (None, "either"),
        "raceresult": (3601, "connect"),
        "ultra": (23, "connect"),
        "ipico": (10000, "connect"),
        "chronotrack": (61611, "listen"),
        "mylaps": (3097, "listen"),
    }
    for name, (port, role) in expected.items():
        fmt = formats.get(name)
        assert (fmt.name, fmt.default_port, fmt.gateway_role) == (name, port, role)
        assert fmt.description
