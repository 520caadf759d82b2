"""Properties every format must have: format/parse round trip, chunking-proof framing, never raising on bytes."""

from __future__ import annotations

import dataclasses
from datetime import UTC
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway import formats
from gateway.formats.base import MAX_RECORD, ParseContext, Rejected, Skipped, parse_record
from gateway.model import Read
from tests.unit.formats.strategies import READER, SAMPLES, STRATEGIES

CTX = ParseContext(tz=UTC, reader=READER)
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# streams of several reads cut at random points cost more per example; 100 still finds boundary bugs
STREAMS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_format_has_a_strategy() -> None:
    assert set(formats.names()) <= set(STRATEGIES)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_parse_of_format_is_identity(name: str) -> None:
    fmt = formats.get(name)

    @PROPS
    @given(STRATEGIES[name])
    def prop(read: Read) -> None:
        line = fmt.format(read, CTX)
        framer = fmt.framer()
        records = framer.feed(line)
        assert framer.flush() == []
        reads = [parse_record(fmt, r, CTX) for r in records]
        reads = [r for r in reads if not isinstance(r, Skipped)]
        assert len(reads) == 1, reads
        got = reads[0]
        assert isinstance(got, Read), got
        assert dataclasses.replace(got, raw="") == dataclasses.replace(read, raw="")

    prop()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_chunking_never_changes_records(name: str) -> None:
    fmt = formats.get(name)

    @STREAMS
    @given(st.lists(STRATEGIES[name], min_size=1, max_size=5), st.data())
    def prop(reads: list[Read], data: st.DataObject) -> None:
        stream = b"".join(fmt.format(r, CTX) for r in reads)
        whole = fmt.framer()
        expected = whole.feed(stream) + whole.flush()
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
        chunked = fmt.framer()
        got = []
        prev = 0
        for cut in [*cuts, len(stream)]:
            got += chunked.feed(stream[prev:cut])
            prev = cut
        got += chunked.flush()
        assert got == expected

    prop()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_arbitrary_bytes_never_raise(name: str) -> None:
    fmt = formats.get(name)

    @PROPS
    @given(st.lists(st.binary(max_size=80), max_size=8))
    def prop(chunks: list[bytes]) -> None:
        framer = fmt.framer()
        conv = fmt.conversation(CTX)
        records = []
        for chunk in chunks:
            records += framer.feed(chunk)
        records += framer.flush()
        for record in records:
            result = parse_record(fmt, record, CTX)
            if isinstance(result, Rejected):
                assert "\n" not in result.reason
            results, _answer = conv.on_record(record)
            assert all(isinstance(r, (Read, Rejected, Skipped)) for r in results)

    prop()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_parser_alone_never_raises_on_bytes(name: str) -> None:
    fmt = formats.get(name)

    @PROPS
    @given(st.binary(max_size=120) | st.text(max_size=120).map(lambda t: t.encode()))
    def prop(data: bytes) -> None:
        result = fmt.parse(data, CTX)
        assert isinstance(result, (Read, Rejected, Skipped))

    prop()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_megabyte_line_is_capped_then_resyncs(name: str) -> None:
    fmt = formats.get(name)
    framer = fmt.framer()
    good = fmt.format(SAMPLES[name], CTX)
    junk = b"x" * 65536
    records = []
    for _ in range(16):  # 1 MiB of line noise without a terminator, in chunks
        records += framer.feed(junk)
        assert _buffered(framer) <= MAX_RECORD + 1
    records += framer.feed(_terminator(name) + good)
    records += framer.flush()
    assert [r.oversize for r in records] == [True, False]
    assert len(records[0].data) == MAX_RECORD
    assert isinstance(parse_record(fmt, records[0], CTX), Rejected)
    assert isinstance(parse_record(fmt, records[1], CTX), Read)


def _buffered(framer: object) -> int:
    """Bytes a framer holds (its bytearray attributes): must stay bounded whatever the line length."""
    return sum(len(v) for v in vars(framer).values() if isinstance(v, bytearray | bytes))


def _terminator(name: str) -> bytes:
    return {"mylaps": b"$"}.get(name, b"\n")


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_mutated_valid_lines_never_raise(name: str) -> None:
    """Random bytes rarely get past the first check; damaged real lines reach the field parsers."""
    fmt = formats.get(name)
    line = fmt.format(SAMPLES[name], CTX)

    @PROPS
    @given(
        st.lists(
            st.tuples(
                st.integers(0, len(line)),
                st.sampled_from(["replace", "delete", "insert"]),
                st.binary(min_size=1, max_size=3),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def prop(edits: list[tuple[int, str, bytes]]) -> None:
        data = bytearray(line)
        for pos, op, junk in edits:
            pos = min(pos, len(data))
            if op == "replace":
                data[pos : pos + len(junk)] = junk
            elif op == "delete":
                del data[pos : pos + len(junk)]
            else:
                data[pos:pos] = junk
        framer = fmt.framer()
        conv = fmt.conversation(CTX)
        for record in framer.feed(bytes(data)) + framer.flush():
            assert isinstance(parse_record(fmt, record, CTX), (Read, Rejected, Skipped))
            results, _answer = conv.on_record(record)
            for result in results:
                assert isinstance(result, (Read, Rejected, Skipped))
                if isinstance(result, Rejected):
                    assert result.reason and "\n" not in result.reason
            for result in results:
                if isinstance(result, Read):
                    conv.ack(result)

    prop()


TRICKY = ["²", "٣", "\x00", "-", "~", "@", "|", ";", ",", "$", "=", ":", ".", "\ufeff", "é", " ", "9" * 30]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_position_with_tricky_characters_never_raises(name: str) -> None:
    """Each character of a valid line swapped for separators, superscript/foreign digits, NUL, huge numbers."""
    fmt = formats.get(name)
    line = fmt.format(SAMPLES[name], CTX).decode()
    body = line.rstrip("\r\n$")
    for i in range(len(body)):
        for tricky in TRICKY:
            for text in (body[:i] + tricky + body[i + 1 :], body[:i] + tricky + body[i:]):
                record = text.encode()
                result = fmt.parse(record, CTX)
                assert isinstance(result, (Read, Rejected, Skipped)), (text, result)
                conv = fmt.conversation(CTX)
                framer = fmt.framer()
                for rec in framer.feed(record + line[len(body) :].encode()) + framer.flush():
                    conv.on_record(rec)


BERLIN = ParseContext(tz=ZoneInfo("Europe/Berlin"), reader=READER)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_round_trip_through_a_dst_zone(name: str) -> None:
    """Formats that send reader-local wall time: any instant outside the autumn repeated hour comes back."""
    fmt = formats.get(name)

    @PROPS
    @given(STRATEGIES[name])
    def prop(read: Read) -> None:
        wall = read.timestamp.astimezone(BERLIN.tz)
        # the repeated hour (fold) cannot be told apart from wall time alone; that is the protocols' limit
        assume(wall.replace(fold=1 - wall.fold).astimezone(UTC) == read.timestamp.astimezone(UTC))
        framer = fmt.framer()
        records = framer.feed(fmt.format(read, BERLIN)) + framer.flush()
        results = [parse_record(fmt, r, BERLIN) for r in records]
        reads = [r for r in results if isinstance(r, Read)]
        assert len(reads) == 1, results
        assert dataclasses.replace(reads[0], raw="") == dataclasses.replace(read, raw="")

    prop()
