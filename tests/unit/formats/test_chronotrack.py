"""ChronoTrack CTP01: the gateway greets, starts the stream after the reader's settings, answers pings,
and resumes a location from a missing line number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway import __version__, formats
from gateway.formats.base import ParseContext, Skipped
from gateway.model import Read
from tests.unit.formats.helpers import GatewayEnd

CTX = ParseContext(tz=UTC, reader="ct-link")
T0 = datetime(2026, 5, 17, 9, 0, tzinfo=UTC)


def test_greeting_handshake_and_start() -> None:
    fmt = formats.get("chronotrack")
    gw, controller = GatewayEnd(fmt, CTX), fmt.reader_conversation(CTX)
    assert gw.conv.greeting() == f"rufus-gateway~{__version__}~CTP01\r\n".encode()
    assert controller.on_bytes(gw.conv.greeting()) == ([], b"")
    intro = controller.greeting()
    # the start comes only once the announced settings have all arrived
    assert gw.receive(intro[:-5]) == b""
    assert gw.receive(intro[-5:]) == b"start\r\n"
    assert gw.conv.reader_name == "ChronoTrackController"  # type: ignore[attr-defined]
    assert gw.conv.settings == {"stream-mode": "push", "time-format": "iso"}  # type: ignore[attr-defined]
    assert [r.kind for r in gw.results if isinstance(r, Skipped)] == ["greeting", "setting", "setting"]
    assert gw.receive(b"ping\r\n") == b"ack~ping\r\n"
    assert controller.on_bytes(gw.conv.keepalive()) == ([], b"ack~ping\r\n")


def test_gap_in_line_numbers_resumes_the_location() -> None:
    fmt = formats.get("chronotrack")
    gw, controller = GatewayEnd(fmt, CTX), fmt.reader_conversation(CTX)
    reads = [
        Read(chip=f"{500 + i}", bib=None, timestamp=T0 + timedelta(seconds=i), antenna=2, reader="117F37")
        for i in range(5)
    ]
    lines = [controller.encode(r) for r in reads]
    assert lines[0] == b"CT01_33~1~finish~500~2026-05-17T09:00:00.00~0~117F37~2\r\n"
    gw.receive(lines[0] + lines[1] + lines[4])  # 3 and 4 lost
    assert gw.conv.gaps == [(3, 2)]  # type: ignore[attr-defined]
    request = gw.conv.refetch(3, 2)
    assert request == b"start~finish~3\r\n"
    _acked, resent = controller.on_bytes(request)
    assert resent == lines[2] + lines[3] + lines[4]  # the stream resumes from 3; 5 comes again
    gw.receive(resent)
    assert sorted({(r.seq, r.chip) for r in gw.reads}) == [(n, f"{499 + n}") for n in range(1, 6)]


def test_refetch_needs_a_known_location() -> None:
    assert formats.get("chronotrack").conversation(CTX).refetch(1, 1) == b""
