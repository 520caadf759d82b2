"""The csv parser's one-match path for ordinary lines must give exactly what its general path gives: the same
Read for every line it takes, and every other line left to the general path (rejections included)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.formats.csv import CsvFormat

FMT = formats.get("csv")
assert isinstance(FMT, CsvFormat)
CTX = ParseContext(reader="mat", now=datetime(2026, 5, 3, 9, tzinfo=UTC))


def mostly(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """A field that is usually one an ordinary line has, sometimes one only the general path can judge."""
    return st.sampled_from(good * 4 + bad)


ident = st.one_of(
    st.text(alphabet="0123456789AZaz_.:-", max_size=6),
    st.text(alphabet='0123456789Aa ,"\t\x00\u00e9', max_size=4),
)
stamp = st.builds(
    lambda y, mo, d, h, mi, s, frac, zone, sep: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{zone}",
    mostly(["2026", "1999", "9999"], ["0000", "12"]),
    mostly(["05", "12"], ["13", "00", "5"]),
    mostly(["03", "31"], ["00", "32"]),
    mostly(["09", "23"], ["24"]),
    mostly(["15", "00"], ["60"]),
    mostly(["02", "59"], ["61"]),
    mostly(["", ".5", ".123", ".1234567", ".999999999", ".0009"], [",25", "."]),
    mostly(["Z"], ["z", "", "+02:00", "-0500"]),
    mostly(["T"], [" "]),
)
number = mostly(["", "2", "0012", "-61.5", "-0", "3.25", "-1234.567891"], ["10000", "1e5", "nan", "-1234567.5", " 2"])


@settings(max_examples=1500, deadline=None)
@given(ident, ident, stamp, st.lists(number, max_size=3), st.sampled_from(["", " ", "\ufeff"]))
def test_the_fast_path_and_the_general_path_agree(bib: str, chip: str, ts: str, extra: list[str], pad: str) -> None:
    line = pad + ",".join([bib, chip, ts, *extra])
    assert FMT.parse_line(line, CTX) == FMT._parse_general(line, CTX), line


def test_the_simulators_lines_take_the_fast_path() -> None:
    # what a One4All-class csv timer (and the simulator) sends: one match, no general-path work
    line = "17,E2000017,2026-05-17T07:15:02.500Z,2,-61.5"
    assert FMT.parse_line(line, CTX) == FMT._parse_general(line, CTX)
    from gateway.formats import csv as csv_mod

    assert csv_mod._FAST.fullmatch(line) is not None
