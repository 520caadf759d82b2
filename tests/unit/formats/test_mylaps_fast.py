"""The MYLAPS parser's quick paths (one-passing messages, HH:MM:SS.mmm times, the framer's whole-record path)
must give exactly what the general paths give: the same Reads, the same rejections word for word."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, time

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import formats
from gateway.formats import mylaps
from gateway.formats.base import ParseContext

CTX = ParseContext(reader="mat", now=datetime(2026, 5, 3, 9, tzinfo=UTC))


def mostly(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """Usually what a decoder sends, sometimes what only the general path can judge."""
    return st.sampled_from(good * 4 + bad)


clock = st.builds(
    lambda h, m, s, frac: f"{h}:{m}:{s}{frac}",
    mostly(["09", "23", "00"], ["24", "9", "\u06633", "1x"]),
    mostly(["14", "59"], ["60", "5"]),
    mostly(["02", "59"], ["61", "6"]),
    mostly([".370", ".000", ".999"], ["", ".5", ".12", ".1234", ",370", ". 12", ".\uff1345"]),
)
item = st.one_of(
    st.builds(lambda t: f"t={t}", clock),
    st.sampled_from(["c=058000000217", "c=", "ct=UH", "d=260503", "d=261332", "d=2605", "l=0", "dv=1", "re=1"]),
    st.sampled_from(["an=2", "an=00000100", "an=abc", "ans=3", "b=217", "b=", "amd=-59.0", "amd=nan", "amd=x"]),
    st.sampled_from(["x=a=b", "novalue", "", "=v"]),
)
location = mostly(["Finish", "mat", ""], ["Fin ish", "Zieleinlauf-\u00e9"])
number = mostly(["5", "1", "123456789012"], ["1234567890123", "x", "", "05"])


@settings(max_examples=1500, deadline=None)
@given(
    location,
    st.lists(item, min_size=1, max_size=8),
    number,
    st.sampled_from(["@", ""]),
    st.sampled_from(["", "\r\n"]),
)
def test_a_one_passing_message_parses_as_the_general_path_parses_it(
    where: str, items: list[str], num: str, last: str, end: str
) -> None:
    text = f"{where}@Passing@{'|'.join(items)}@{num}{last}"
    raw = text + end
    assert mylaps.parse_message(raw.encode(), CTX) == mylaps._parse_general(text, raw, CTX), raw


def outcome(fn: Callable[[str], time], text: str) -> object:
    try:
        return fn(text)
    except ValueError as exc:
        return ("ValueError", str(exc))


@settings(max_examples=1000, deadline=None)
@given(clock)
def test_the_quick_time_of_day_agrees_with_the_regex(text: str) -> None:
    assert outcome(mylaps._time_of_day, text) == outcome(mylaps._time_of_day_general, text), text


def test_the_decoders_messages_take_the_quick_paths() -> None:
    record = "Finish@Passing@t=09:14:14.370|c=058000000217|ct=UH|d=260503|an=2|b=217|amd=-59.0@5@"
    assert mylaps._ONE_PASSING.fullmatch(record) is not None
    msg = mylaps.parse_message(record.encode(), CTX)
    assert msg == mylaps._parse_general(record, record, CTX)
    assert [type(r).__name__ for r in msg.results] == ["Read"] and msg.number == 5


def test_the_framer_gives_the_same_records_for_any_chunking() -> None:
    fmt = formats.get("mylaps")
    passings = b"".join(
        f"Finish@Passing@t=09:14:{i % 60:02d}.370|c=C{i}|d=260503@{i}@$\r\n".encode() for i in range(1, 400)
    )
    stream = passings + b"x" * 5000 + b"$tail"  # an oversize record, then one the stream cuts off
    framer = fmt.framer()
    whole = framer.feed(stream) + framer.flush()
    assert len(whole) == 401 and whole[399].oversize and whole[400].truncated
    rng = random.Random(7)
    for _ in range(20):
        framer = fmt.framer()
        got, pos = [], 0
        while pos < len(stream):
            step = rng.choice([1, 2, 7, 64, 4096])
            got += framer.feed(stream[pos : pos + step])
            pos += step
        got += framer.flush()
        assert got == whole
