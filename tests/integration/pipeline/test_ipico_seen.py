"""An IPICO in first/last-seen mode reports every presence twice: `[reader] ipico_seen` keeps one of them for
the duplicate window; the others stay in the journal, counted, never passings. Its I/Q counters are not
signal strength, so the 'strongest' rule does not pick by them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway import formats
from gateway.formats.base import ParseContext, Read
from gateway.pipeline import Pipeline, ReaderRules, Stamp
from gateway.store import Store

CTX = ParseContext(tz=UTC, now=datetime(2026, 3, 7, 14, tzinfo=UTC))
FMT = formats.get("ipico")


def _line(tag: str, hhmmss: str, hundredths: int, flags: int | None = None, q: int = 1) -> bytes:
    body = f"aa00{tag}00{q:02x}260307{hhmmss}{hundredths:02x}"
    if flags is None:
        return (body + f"{sum(body[2:].encode()) % 256:02x}").encode()
    body += f"0100{flags:02x}"
    return (body + f"{sum(body[2:].encode()) % 256:02x}").encode()


def _reads(*lines: bytes) -> list[Read]:
    out = []
    for line in lines:
        r = FMT.parse(line, CTX)
        assert isinstance(r, Read), r
        out.append(r)
    return out


# runner 1 steps on the mat at 13:48:50.10 and off at 13:48:52.40; runner 2 is read once (both flags)
PRESENCE = (
    _line("058000123b32", "134850", 10, 0x80),
    _line("058000121838", "134851", 20, 0xC0),
    _line("058000123b32", "134852", 40, 0x40),
)


async def _run(box: Store, seen: str) -> tuple[Pipeline, list[tuple[str | None, str]]]:
    pl = Pipeline(box, {"finish": ReaderRules(dedup_window_s=0.0, seen=seen)}, Stamp())  # type: ignore[arg-type]
    await box.journal("finish", _reads(*PRESENCE))
    await pl.step(datetime.now(UTC) + timedelta(hours=1))
    rows = await box.rows((await box.current_session()).token_session)  # type: ignore[union-attr]
    return pl, [(r.passing.chip, r.passing.timestamp.strftime("%H:%M:%S.%f")[:-4]) for r in rows]


@pytest.mark.parametrize(
    ("seen", "want", "dropped"),
    [
        ("first", [("058000123b32", "13:48:50.10"), ("058000121838", "13:48:51.20")], 1),
        ("last", [("058000121838", "13:48:51.20"), ("058000123b32", "13:48:52.40")], 1),
        (
            "both",
            [("058000123b32", "13:48:50.10"), ("058000121838", "13:48:51.20"), ("058000123b32", "13:48:52.40")],
            0,
        ),
    ],
)
async def test_ipico_seen_keeps_one_of_first_and_last_seen(
    session_outbox: Store, seen: str, want: list[tuple[str, str]], dropped: int
) -> None:
    pl, got = await _run(session_outbox, seen)
    assert got == want
    assert pl.reads_dropped_seen == dropped
    # nothing left the journal: all three reads are there with their flag
    assert [r.seen for r in await session_outbox.reads_after(0, 10)] == ["first", "both", "last"]


async def test_ordinary_reads_are_kept_whatever_ipico_seen_says(session_outbox: Store) -> None:
    pl = Pipeline(session_outbox, {"finish": ReaderRules(dedup_window_s=0.0, seen="last")}, Stamp())
    await session_outbox.journal(
        "finish", _reads(_line("058000123b32", "134850", 10), _line("058000121838", "134851", 0))
    )
    assert await pl.step(datetime.now(UTC) + timedelta(hours=1)) == 2
    assert pl.reads_dropped_seen == 0


async def test_strongest_does_not_pick_by_the_i_q_counters(session_outbox: Store) -> None:
    """Three reads of one crossing, the last with Q = ff: with RSSI meaning counters, 'strongest' would have
    taken it; the passing is the crossing's first read."""
    pl = Pipeline(session_outbox, {"finish": ReaderRules(dedup_window_s=3.0, dedup_mode="strongest")}, Stamp())
    reads = _reads(
        _line("058000123b32", "134850", 10, q=1),
        _line("058000123b32", "134850", 60, q=2),
        _line("058000123b32", "134851", 30, q=0xFF),
    )
    assert all(r.rssi is None for r in reads)
    await session_outbox.journal("finish", reads)
    assert await pl.step(datetime.now(UTC) + timedelta(hours=1)) == 1
    rows = await session_outbox.rows((await session_outbox.current_session()).token_session)  # type: ignore[union-attr]
    assert [r.passing.timestamp.strftime("%H:%M:%S.%f")[:-4] for r in rows] == ["13:48:50.10"]
