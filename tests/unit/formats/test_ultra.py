"""Ultra: heartbeats keep the link alive, a gap in log ids is rewound by record number and filled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway import formats
from gateway.formats.base import ParseContext, Skipped
from gateway.model import Read
from tests.unit.formats.helpers import GatewayEnd

CTX = ParseContext(tz=UTC, reader="ultra-link")
T0 = datetime(2026, 5, 17, 9, 0, tzinfo=UTC)


def test_rewind_by_log_id_fills_a_gap() -> None:
    fmt = formats.get("ultra")
    gw, ultra = GatewayEnd(fmt, CTX), fmt.reader_conversation(CTX)
    assert gw.receive(ultra.greeting() + ultra.heartbeat()) == b""
    assert [r.kind for r in gw.results if isinstance(r, Skipped)] == ["greeting", "heartbeat"]
    reads = [
        Read(chip=f"05800{i}", bib=None, timestamp=T0 + timedelta(seconds=i), antenna=1, rssi=-60.0, reader="3")
        for i in range(5)
    ]
    lines = [ultra.encode(r) for r in reads]
    assert lines[0] == b"0,058000,1463475600,0,1,-60,0,1,3,0,0,1\n"
    gw.receive(lines[0] + lines[3])  # log ids 2 and 3 lost
    assert gw.conv.gaps == [(2, 2)]  # type: ignore[attr-defined]
    request = gw.conv.refetch(2, 2)
    assert request == b"6002\r3\r"
    _acked, resent = ultra.on_bytes(request[:3])  # commands may arrive in pieces
    assert resent == b""
    _acked, resent = ultra.on_bytes(request[3:])
    assert resent == b"0,058001,1463475601,0,1,-60,1,1,3,0,0,2\n0,058002,1463475602,0,1,-60,1,1,3,0,0,3\n"
    gw.receive(resent + lines[4])
    assert sorted((r.seq, r.chip) for r in gw.reads) == [(n, f"05800{n - 1}") for n in range(1, 6)]
    assert gw.conv.gaps == [(2, 2)]  # type: ignore[attr-defined]  # rewound reads do not open a new gap
    assert gw.conv.rewound == 2  # type: ignore[attr-defined]
    assert {r.reader for r in gw.reads} == {"3"}


def test_silence_timeout_covers_missed_heartbeats() -> None:
    conv = formats.get("ultra").conversation(CTX)
    assert conv.silence_timeout is not None and conv.silence_timeout >= 20  # V= comes every 10 s
    assert conv.keepalive() == b""
