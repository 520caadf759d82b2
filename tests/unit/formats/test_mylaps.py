"""MYLAPS: AckPassing only after the passings are journaled, re-sends keep their message number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway import formats
from gateway.formats.base import ParseContext, Rejected, Skipped
from gateway.model import Read
from tests.unit.formats.helpers import GatewayEnd

CTX = ParseContext(tz=UTC, reader="Finish")
T0 = datetime(2026, 5, 17, 9, 0, tzinfo=UTC)


def _read(i: int) -> Read:
    return Read(chip=f"KV{i:05d}", bib=None, timestamp=T0 + timedelta(seconds=i), antenna=1, reader="Finish")


def test_hello_and_ping_are_answered_at_once() -> None:
    fmt = formats.get("mylaps")
    gw, tns = GatewayEnd(fmt, CTX), fmt.reader_conversation(CTX)
    assert gw.conv.greeting() == b""  # the sender speaks first
    assert gw.receive(tns.greeting()) == b"rufus-gateway@AckPong@Version2.1@$"
    assert gw.conv.keepalive() == b"rufus-gateway@Ping@$"
    assert tns.on_bytes(gw.conv.keepalive()) == ([], b"Finish@AckPing@$")
    assert gw.receive(b"Finish@AckPing@$") == b""
    assert [r.kind for r in gw.results if isinstance(r, Skipped)] == ["pong", "AckPing"]


def test_ack_only_after_commit_and_resend_keeps_the_number() -> None:
    fmt = formats.get("mylaps")
    gw, tns = GatewayEnd(fmt, CTX), fmt.reader_conversation(CTX)
    assert tns.needs_ack
    first, second = tns.encode(_read(1)), tns.encode(_read(2))
    assert first == b"Finish@Passing@t=09:00:01.000|c=KV00001|ct=UH|d=260517|l=0|dv=1|re=1|an=1@1@$"
    assert gw.receive(first + second) == b""  # nothing is acknowledged on arrival
    assert [(r.seq, r.chip) for r in gw.reads] == [(1, "KV00001"), (2, "KV00002")]
    # the journal committed read 1 only; the connection drops; the sender re-sends what is unacked
    ack1 = gw.conv.ack(gw.reads[0])
    assert ack1 == b"rufus-gateway@AckPassing@1@$"
    acked, answer = tns.on_bytes(ack1[:9])  # acks may arrive in pieces
    assert (acked, answer) == ([], b"")
    acked, _answer = tns.on_bytes(ack1[9:])
    assert acked == [_read(1)]
    resent = tns.encode(_read(2))
    assert resent == second  # same passing, same message number
    assert tns.encode(_read(3)).endswith(b"@3@$")
    gw2 = GatewayEnd(fmt, CTX)
    gw2.receive(resent)
    assert gw2.reads[0].seq == 2
    assert gw2.conv.ack(gw2.reads[0]) == b"rufus-gateway@AckPassing@2@$"
    assert tns.on_bytes(b"rufus-gateway@AckPassing@2@$")[0] == [_read(2)]
    assert gw2.conv.ack(gw2.reads[0]) == b""  # a read is acknowledged once


def test_a_message_of_several_passings_is_acked_when_all_are_journaled() -> None:
    fmt = formats.get("mylaps")
    gw = GatewayEnd(fmt, CTX)
    message = b"10KM@Passing@t=13:11:30.904|c=0000041|d=260517|b=41@t=13:12:21.830|c=0000039|d=260517|b=39@1017@$"
    gw.receive(message)
    a, b = gw.reads
    assert (a.seq, b.seq) == (None, None)
    assert gw.conv.ack(a) == b""
    assert gw.conv.ack(b) == b"rufus-gateway@AckPassing@1017@$"


def test_a_message_with_nothing_to_journal_is_acked_at_once() -> None:
    fmt = formats.get("mylaps")
    gw = GatewayEnd(fmt, CTX)
    assert gw.receive(b"Finish@Passing@t=99:00:00.000|c=X@44@$") == b"rufus-gateway@AckPassing@44@$"
    assert isinstance(gw.results[0], Rejected)
    assert gw.receive(b"Finish@Marker@mt=Gunshot|t=11:03:40.347|n=Gun@5@$") == b"rufus-gateway@AckMarker@5@$"


def test_parse_alone_refuses_to_pick_one_of_several_passings() -> None:
    fmt = formats.get("mylaps")
    result = fmt.parse(b"L@Passing@t=10:00:00.000|c=A@t=10:00:01.000|c=B@9@", CTX)
    assert isinstance(result, Rejected) and "2 passings" in result.reason
