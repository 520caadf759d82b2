"""RACE RESULT: the gateway asks for push mode, notices a gap in passing numbers and refetches it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway import formats
from gateway.formats.base import ParseContext, Skipped
from gateway.model import Read
from tests.unit.formats.helpers import GatewayEnd

CTX = ParseContext(tz=UTC, reader="rr-link")
T0 = datetime(2026, 5, 17, 9, 0, tzinfo=UTC)


def _reads(n: int) -> list[Read]:
    return [
        Read(chip=f"{1000 + i}", bib=None, timestamp=T0 + timedelta(seconds=i), antenna=1, rssi=40.0, reader="D-1")
        for i in range(n)
    ]


def test_greeting_sets_protocol_and_push_mode_and_decoder_answers_are_skipped() -> None:
    fmt = formats.get("raceresult")
    gw, decoder = GatewayEnd(fmt, CTX), fmt.reader_conversation(CTX)
    greeting = gw.conv.greeting()
    assert greeting == b"SETPROTOCOL;3.2\r\nSETPUSHPASSINGS;1;0\r\nPASSINGS\r\n"
    _acked, answer = decoder.on_bytes(greeting)
    assert answer == b"SETPROTOCOL;3.2\r\nSETPUSHPASSINGS;1;0\r\nPASSINGS;0;1\r\n"
    assert gw.receive(answer) == b""
    assert [r.kind for r in gw.results if isinstance(r, Skipped)] == ["response"] * 3


def test_gap_in_passing_numbers_is_refetched_and_filled() -> None:
    fmt = formats.get("raceresult")
    gw, decoder = GatewayEnd(fmt, CTX), fmt.reader_conversation(CTX)
    lines = [decoder.encode(r) for r in _reads(6)]
    assert lines[0].startswith(b"#P;1;1000;2026-05-17;09:00:00.000;")
    assert gw.receive(lines[0] + lines[1]) == b""
    # passings 3 and 4 are lost on the wire; passing 5 reveals the gap
    assert gw.receive(lines[4]) == b""
    assert gw.conv.gaps == [(3, 2)]  # type: ignore[attr-defined]
    request = gw.conv.refetch(3, 2)  # what the ingest sends once the reads that came are journaled
    assert request == b"3:2\r\n"
    _acked, resent = decoder.on_bytes(request)
    assert resent.startswith(b"3;1002;") and resent.endswith(b"\r\n\r\n")
    assert gw.receive(resent + lines[5]) == b""
    got = sorted((r.seq, r.chip) for r in gw.reads)
    assert got == [(n, f"{999 + n}") for n in range(1, 7)]
    assert gw.conv.gaps == [(3, 2)]  # type: ignore[attr-defined]  # refetched passings are not a new gap


def test_refetch_request_shape_and_keepalive() -> None:
    conv = formats.get("raceresult").conversation(CTX)
    assert conv.refetch(120, 32) == b"120:32\r\n"
    assert conv.keepalive() == b"GETSTATUS\r\n"
    assert conv.silence_timeout is not None
