"""Hypothesis strategies: reads inside each format's representable domain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from gateway.model import Read

READER = "finish"

# ms-precision UTC instants in years a reader might report
instants = st.integers(
    min_value=int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000),
    max_value=int(datetime(2099, 12, 31, tzinfo=UTC).timestamp() * 1000),
).map(lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms))

idents = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="-_.", max_codepoint=0x7F),
    min_size=1,
    max_size=24,
)


@st.composite
def csv_reads(draw: st.DrawFn) -> Read:
    bib = draw(st.none() | idents)
    chip = draw(idents) if bib is None else draw(st.none() | idents)
    return Read(
        chip=chip,
        bib=bib,
        timestamp=draw(instants),
        antenna=draw(st.none() | st.integers(0, 9999)),
        rssi=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        reader=READER,
        seq=None,
    )


alnum = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=16)


@st.composite
def raceresult_reads(draw: st.DrawFn) -> Read:
    return Read(
        chip=draw(alnum),
        bib=None,
        timestamp=draw(instants),
        antenna=draw(st.none() | st.integers(1, 8)),
        rssi=draw(st.none() | st.integers(0, 255).map(float)),
        reader=draw(idents),
        seq=draw(st.integers(0, 10**9)),
    )


@st.composite
def ultra_reads(draw: st.DrawFn) -> Read:
    return Read(
        chip=draw(alnum),
        bib=None,
        timestamp=draw(instants),
        antenna=draw(st.none() | st.integers(1, 8)),
        rssi=draw(st.none() | st.integers(-127, 0).map(float)),
        reader=str(draw(st.integers(1, 999))),
        seq=draw(st.none() | st.integers(0, 10**9)),
    )


hexdigits = "0123456789abcdefABCDEF"


@st.composite
def ipico_reads(draw: st.DrawFn) -> Read:
    ts = draw(instants)
    return Read(
        chip=draw(st.text(alphabet=hexdigits, min_size=12, max_size=12)),
        bib=None,
        timestamp=ts.replace(microsecond=ts.microsecond - ts.microsecond % 10_000),  # hundredths on the wire
        antenna=None,
        rssi=None,  # I and Q are decode counters, not signal strength
        reader=draw(st.text(alphabet=hexdigits, min_size=2, max_size=2)),
        seq=None,
        counters=(draw(st.integers(0, 255)), draw(st.integers(0, 255))),
    )


@st.composite
def chronotrack_reads(draw: st.DrawFn) -> Read:
    ts = draw(instants)
    chip = draw(alnum.filter(lambda c: c not in ("guntime", "newlocation")))
    return Read(
        chip=chip,
        bib=None,
        timestamp=ts.replace(microsecond=ts.microsecond - ts.microsecond % 10_000),  # hundredths on the wire
        antenna=draw(st.none() | st.integers(1, 8)),
        rssi=None,
        reader=draw(st.text(alphabet="0123456789ABCDEF", min_size=6, max_size=6)),
        seq=draw(st.integers(1, 10**9)),
    )


@st.composite
def mylaps_reads(draw: st.DrawFn) -> Read:
    bib = draw(st.none() | alnum)
    chip = draw(alnum) if bib is None else draw(st.none() | alnum)
    return Read(
        chip=chip,
        bib=bib,
        timestamp=draw(instants),
        antenna=draw(st.none() | st.integers(1, 8)),
        rssi=draw(st.none() | st.floats(-120, 0, allow_nan=False)),
        reader=draw(alnum),
        seq=draw(st.integers(1, 10**9)),
    )


STRATEGIES: dict[str, st.SearchStrategy[Read]] = {
    "csv": csv_reads(),
    "raceresult": raceresult_reads(),
    "ultra": ultra_reads(),
    "ipico": ipico_reads(),
    "chronotrack": chronotrack_reads(),
    "mylaps": mylaps_reads(),
}

# one ordinary read per format, for tests that need a valid line rather than a search
SAMPLES: dict[str, Read] = {
    "csv": Read(
        chip="E2000017",
        bib="17",
        timestamp=datetime(2026, 5, 17, 9, 15, 2, 123000, tzinfo=UTC),
        antenna=1,
        rssi=-61.5,
        reader=READER,
    ),
    "raceresult": Read(
        chip="1234",
        bib=None,
        timestamp=datetime(2026, 5, 17, 9, 15, 2, 123000, tzinfo=UTC),
        antenna=2,
        rssi=79.0,
        reader="D-5012",
        seq=17,
    ),
    "ultra": Read(
        chip="058003",
        bib=None,
        timestamp=datetime(2026, 5, 17, 9, 15, 2, 482000, tzinfo=UTC),
        antenna=1,
        rssi=-63.0,
        reader="1",
        seq=29,
    ),
    "ipico": Read(
        chip="058001e50001",
        bib=None,
        timestamp=datetime(2026, 5, 17, 9, 15, 2, 120000, tzinfo=UTC),
        reader="00",
        counters=(0, 1),
    ),
    "chronotrack": Read(
        chip="1234",
        bib=None,
        timestamp=datetime(2026, 5, 17, 9, 15, 2, 310000, tzinfo=UTC),
        antenna=1,
        reader="117F37",
        seq=1,
    ),
    "mylaps": Read(
        chip="0000041",
        bib="41",
        timestamp=datetime(2026, 5, 17, 9, 15, 2, 904000, tzinfo=UTC),
        antenna=1,
        reader="Finish",
        seq=1016,
    ),
}
