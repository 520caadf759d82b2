"""The line-framed formats share one base (gateway/formats/_common.py LineFormat): one framer, one decode step,
one rejection for bytes that are not text. A format that drifts from it shows here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway import formats
from gateway.formats._common import LineFormat
from gateway.formats.base import ParseContext, Rejected

LINE_FORMATS = {"csv", "ultra", "chronotrack", "raceresult", "ipico"}
CTX = ParseContext(now=datetime(2024, 5, 1, 9, 0, tzinfo=UTC))


def test_every_line_framed_format_stands_on_the_base() -> None:
    line_framed = {name for name in formats.names() if isinstance(formats.get(name), LineFormat)}
    assert line_framed == LINE_FORMATS  # mylaps frames on `$`, so it has its own framer
    for name in LINE_FORMATS:
        records = formats.get(name).framer().feed(b"one\r\ntwo\nthree\r")
        assert [r.data for r in records] == [b"one", b"two", b"three"], name


@pytest.mark.parametrize("name", sorted(LINE_FORMATS - {"raceresult"}))
def test_bytes_that_are_not_text_are_rejected_naming_the_byte(name: str) -> None:
    result = formats.get(name).parse(b"ab\xffcd", CTX)
    assert isinstance(result, Rejected)
    assert result.reason == "not UTF-8 text at byte 2"
    assert result.raw == "ab\ufffdcd"  # kept for inspection


def test_raceresult_reads_its_latin1_box_names_instead() -> None:
    # the decoder speaks ISO-8859-1: a high byte is a letter, not a reason to lose the line
    result = formats.get("raceresult").parse(b"GETSTATUS;Z\xfcrich", CTX)
    assert not (isinstance(result, Rejected) and "UTF-8" in result.reason)
