"""A silence watchdog per protocol (issue 3): how long each gateway side waits without a byte before it drops
the link. Protocols where the gateway pings (RACE RESULT GETSTATUS, ChronoTrack ping, MYLAPS Ping) or the
reader beats (Ultra `V=`) have one; csv and Ipico have no heartbeat the gateway knows of, so they get one only
from `[reader] silence_s`. A new format must take its place in this table."""

from __future__ import annotations

from datetime import UTC

import pytest

from gateway import formats
from gateway.formats.base import ParseContext

CTX = ParseContext(tz=UTC, reader="finish")

SILENCE_S: dict[str, float | None] = {
    "chronotrack": 30.0,  # the gateway pings; a live controller answers ack~ping
    "csv": None,
    "ipico": None,
    "mylaps": 60.0,  # Ping every 20 s (a third of it); a live sender answers AckPing
    "raceresult": 30.0,  # GETSTATUS makes the decoder answer
    "ultra": 30.0,  # three missed `V=` heartbeats
}


def test_every_format_is_in_the_table() -> None:
    assert sorted(SILENCE_S) == formats.names()


@pytest.mark.parametrize("name", sorted(SILENCE_S))
def test_silence_timeout_per_protocol(name: str) -> None:
    conv = formats.get(name).conversation(CTX)
    assert conv.silence_timeout == SILENCE_S[name]
    keepalive = conv.keepalive()
    beats = formats.get(name).reader_conversation(CTX).heartbeat()
    if keepalive:
        # a protocol whose gateway asks "are you there" must also give up when nobody answers
        assert conv.silence_timeout is not None and conv.silence_timeout > 0
    if conv.silence_timeout is not None:
        # and one with a watchdog must have something that keeps a quiet live link talking, or it would drop it
        assert keepalive or beats, f"{name}: a silence timeout but neither a keepalive nor a reader heartbeat"


def test_the_protocols_with_a_keepalive() -> None:
    with_keepalive = sorted(n for n in formats.names() if formats.get(n).conversation(CTX).keepalive())
    assert with_keepalive == ["chronotrack", "mylaps", "raceresult"]
