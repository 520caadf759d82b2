"""Journal -> passings: duplicate windows on reader time, strongest/first/finished, manual entries, restarts."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway import pipeline as pipeline_mod
from gateway.model import Read
from gateway.pipeline import ChipMap, Pipeline, ReaderRules, Stamp
from gateway.store import Store
from tests.fixtures.outbox import T0, read_at

STAMP = Stamp(timezone="Europe/Paris", latitude=48.85, longitude=2.35)


def _now() -> datetime:
    """The clock right after journaling: no window's arrival deadline has passed yet."""
    return datetime.now(UTC)


def _future() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


async def _passings(box: Store, token: str = "tok-A") -> list[tuple[int, str, str, str | None, int | None]]:
    return [
        (r.passing.num_passing, r.passing.bib, r.passing.timestamp.isoformat(), r.passing.chip, r.read_id)
        for r in await box.rows(token)
    ]


async def test_first_mode_one_passing_per_crossing_on_reader_time(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0)}, STAMP)
    # three reads of one crossing, arriving in separate commits, then the same chip 10 s later
    await box.journal("mat", [read_at(0.0, "C1")])
    assert await pl.step(_now()) == 0  # held: an earlier read of this crossing may still arrive
    assert pl.open_windows == 1
    await box.journal("mat", [read_at(1.2, "C1"), read_at(2.9, "C1")])
    assert await pl.step(_now()) == 0
    await box.journal("mat", [read_at(10.0, "C1"), read_at(10.5, "C2"), read_at(11.0, "C1")])
    assert await pl.step(_now()) == 1  # the 10 s read is beyond the first crossing's window: that one closes
    assert await pl.step(_future()) == 2  # the others close on the clock
    rows = await box.rows("tok-A")
    assert [(r.passing.num_passing, r.passing.chip, r.passing.timestamp - T0) for r in rows] == [
        (1, "C1", timedelta(0)),
        (2, "C1", timedelta(seconds=10)),
        (3, "C2", timedelta(seconds=10.5)),
    ]
    p = rows[0].passing
    assert (p.timezone, p.latitude, p.longitude) == ("Europe/Paris", 48.85, 2.35)
    assert pl.passings_created == 3 and pl.reads_processed == 6 and pl.reads_suppressed == 3


async def test_arrival_time_does_not_matter(session_outbox: Store) -> None:
    """Two crossings 10 s apart in reader time, delivered in one burst (a reader catching up after a cable
    cut), are two passings; a crossing's reads delivered far apart are one."""
    box = session_outbox
    pl = Pipeline(box, {}, STAMP)
    await box.journal("mat", [read_at(0, "C1"), read_at(10, "C1"), read_at(0.5, "C1")])
    await pl.step(_now())
    assert [p[2] for p in await _passings(box)] == [T0.isoformat(), (T0 + timedelta(seconds=10)).isoformat()]


@pytest.mark.parametrize("order", [(5.0, 5.1, 5.3), (5.3, 5.0, 5.1), (5.1, 5.3, 5.0)])
async def test_first_mode_passing_is_the_earliest_read_whatever_the_arrival_order(
    session_outbox: Store, order: tuple[float, float, float]
) -> None:
    """A re-fetch brings a lost read after later ones: the crossing's passing is still its earliest read."""
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0)}, STAMP)
    for t in order:  # one commit each, as a link delivers them
        await box.journal("mat", [read_at(t, "C1")])
        assert await pl.step(_now()) == 0
    assert await pl.step(_future()) == 1
    [row] = await box.rows("tok-A")
    assert row.passing.timestamp == T0 + timedelta(seconds=5.0)
    # a late read of that crossing makes no second passing
    await box.journal("mat", [read_at(4.9, "C1")])
    assert await pl.step(_future()) == 0


async def test_first_mode_passing_waits_one_window_on_the_clock(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0)}, STAMP)
    await box.journal("mat", [read_at(0.0, "C1")])
    assert await pl.step(datetime.now(UTC) + timedelta(seconds=2)) == 0
    assert await pl.step(datetime.now(UTC) + timedelta(seconds=4)) == 1  # window (3 s) + settle, no grace


async def test_dedup_is_per_reader(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {}, STAMP)
    await box.journal(
        "mat", [read_at(0, "C1", reader="R1"), read_at(0.2, "C1", reader="R2"), read_at(0.4, "C1", reader="R1")]
    )
    assert await pl.step(_future()) == 2


async def test_strongest_emits_max_rssi_when_a_later_read_closes_the_window(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0, dedup_mode="strongest")}, STAMP)
    await box.journal(
        "mat",
        [
            read_at(0.0, "C1", rssi=-70),
            read_at(0.8, "C1", rssi=-52),
            read_at(1.5, "C1", rssi=-52),
            read_at(2.4, "C1", rssi=-65),
        ],
    )
    assert await pl.step(_now()) == 0  # the window is still open: a stronger read may come
    assert pl.open_windows == 1
    await box.journal("mat", [read_at(9.0, "C1", rssi=-80)])
    assert await pl.step(_now()) == 1
    rows = await box.rows("tok-A")
    assert rows[0].passing.timestamp == T0 + timedelta(seconds=0.8)  # the first of the two strongest
    assert rows[0].read_id == 2


async def test_strongest_window_closes_on_the_clock_when_the_chip_is_not_read_again(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0, dedup_mode="strongest", close_grace_s=1.0)}, STAMP)
    await box.journal("mat", [read_at(0.0, "C1", rssi=-60), read_at(0.5, "C1", rssi=-40)])
    assert await pl.step(datetime.now(UTC)) == 0
    assert await pl.step(datetime.now(UTC) + timedelta(seconds=6)) == 1
    assert (await box.rows("tok-A"))[0].read_id == 2
    # a late read of that crossing (reader time inside the window) does not make a second passing
    await box.journal("mat", [read_at(1.0, "C1", rssi=-30)])
    assert await pl.step(_future()) == 0


async def test_strongest_deadline_uses_stored_arrival_times(session_outbox: Store) -> None:
    """A window is also closed by any read that ARRIVED after its deadline, before that read is processed,
    so the order of passings follows the journal whatever the step boundaries were."""
    box = session_outbox
    rules = ReaderRules(dedup_window_s=0.05, dedup_mode="strongest", close_grace_s=0.05)
    pl = Pipeline(box, {"mat": rules, "gate": ReaderRules(dedup_window_s=0.0)}, STAMP)
    await box.journal("mat", [read_at(0.0, "A", rssi=-50)])
    await asyncio.sleep(0.2)  # B arrives after A's window deadline (by the arrival clock)
    await box.journal("gate", [read_at(0.01, "B")])
    # B's arrival closes A's window before B is processed: A is numbered first. (Had only the clock closed
    # it, after the journal was caught up, B would have come first.)
    assert await pl.step(_now()) == 2
    assert [p[1] for p in await _passings(box)] == ["A", "B"]


async def test_finished_window_suppresses_later_crossings(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0, finished_window_s=60.0)}, STAMP)
    await box.journal(
        "mat", [read_at(0, "C1"), read_at(20, "C1"), read_at(59, "C1"), read_at(61, "C1"), read_at(30, "C2")]
    )
    assert await pl.step(_future()) == 3
    assert [(p[3], p[2]) for p in await _passings(box)] == [
        ("C1", T0.isoformat()),
        ("C1", (T0 + timedelta(seconds=61)).isoformat()),  # journal order
        ("C2", (T0 + timedelta(seconds=30)).isoformat()),
    ]


async def test_zero_window_keeps_every_read(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=0.0)}, STAMP)
    await box.journal("mat", [read_at(0, "C1"), read_at(0.1, "C1"), read_at(0.1, "C1")])
    assert await pl.step(_now()) == 3


async def test_manual_reads_bypass_dedup(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {}, STAMP)
    manual = Read(chip=None, bib="42", timestamp=T0, reader="manual")
    await box.journal("manual", [manual], origin="manual")
    await box.journal("manual", [manual], origin="manual")  # the operator entered it twice: two passings
    assert await pl.step(_now()) == 2
    rows = await box.rows("tok-A")
    assert [(r.passing.bib, r.origin, r.passing.chip) for r in rows] == [("42", "manual", None)] * 2
    assert await box.void("tok-A", 2)


async def test_bib_without_chip_and_chip_map(session_outbox: Store, tmp_path: Path) -> None:
    box = session_outbox
    mapfile = tmp_path / "chips.csv"
    mapfile.write_text("chip,bib\n000123,7\nE2000017ABCD0456,8\n")
    cmap = ChipMap.load(mapfile, last_n=4)
    pl = Pipeline(box, {"mat": ReaderRules(chip_map=cmap)}, STAMP)
    await box.journal(
        "mat",
        [
            read_at(0, None, bib="501"),  # bib only: used as is
            read_at(1, "00000000FFFF0123"),  # EPC tail 0123 -> 123 -> bib 7
            read_at(2, "0456"),  # 0456 -> 456 -> bib 8
            read_at(3, "E20000170000009999"),  # unmapped: bib = normalised chip, flagged
            read_at(4, "0000777", bib="12"),  # unmapped but the reader gave a bib: use it
        ],
    )
    assert await pl.step(_future()) == 5
    assert [(p[1], p[3]) for p in await _passings(box)] == [  # windows closing together: journal order
        ("501", None),
        ("7", "00000000FFFF0123"),
        ("8", "0456"),
        ("9999", "E20000170000009999"),
        ("12", "0000777"),
    ]
    assert pl.unmapped_chips == {"9999"}  # the reader gave bib 12 for 0000777: not flagged


async def test_no_session_reads_wait_in_the_journal(outbox: Store) -> None:
    pl = Pipeline(outbox, {}, STAMP)
    await outbox.journal("mat", [read_at(0, "C1"), read_at(5, "C2")])
    assert await pl.step(_future()) == 0
    assert await outbox.rows() == []
    await outbox.set_current_session("tok-N", alias=None, deviceid=None, created_by_us=False, floor=7)
    assert await pl.step(_future()) == 2
    assert [p[0] for p in await _passings(outbox, "tok-N")] == [8, 9]
    # a new session: later reads are numbered there, from 1
    await outbox.set_current_session("tok-M", alias=None, deviceid=None, created_by_us=True)
    await outbox.journal("mat", [read_at(60, "C1")])
    assert await pl.step(_future()) == 1
    assert [p[0] for p in await _passings(outbox, "tok-M")] == [1]


def _race(seed: int, n: int = 300) -> list[tuple[str, Read]]:
    """Reads as two mats would send them: bursts per crossing, RSSI up and down, small reorderings."""
    rnd = random.Random(seed)
    out: list[tuple[str, Read]] = []
    t = 0.0
    while len(out) < n:
        t += rnd.uniform(0.0, 1.5)
        link = rnd.choice(["mat1", "mat2"])
        chip = f"{rnd.randrange(25):06d}"
        for _ in range(rnd.randrange(1, 6)):
            jitter = rnd.uniform(-0.3, 2.5)
            out.append(
                (
                    link,
                    read_at(
                        max(0.0, t + jitter),
                        chip,
                        rssi=float(rnd.randrange(-90, -30)),
                        reader=link,
                        antenna=rnd.randrange(1, 5),
                    ),
                )
            )
    return out[:n]


RULES = {
    # a long grace: in this test only reads (never the wall clock of a slow CI machine) close windows
    "mat1": ReaderRules(dedup_window_s=3.0, dedup_mode="strongest", close_grace_s=3600.0),
    "mat2": ReaderRules(
        dedup_window_s=2.0, finished_window_s=20.0, chip_map=ChipMap.empty(last_n=4), close_grace_s=3600.0
    ),
}


Passings = list[tuple[int, str, str, str | None, int | None]]


async def _once_and_restarted(
    tmp_path: Path,
    chunks: list[list[tuple[str, Read]]],
    rules: dict[str, ReaderRules],
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
) -> tuple[Passings, Passings]:
    """The passings of `chunks` (link, read) as one process derives them (everything journaled, one final step)
    and as a fresh process (new Store, new Pipeline) after every chunk does, in transactions of `batch` reads."""

    async def journal(box: Store, chunk: list[tuple[str, Read]]) -> None:
        for link in ("mat1", "mat2"):
            part = [r for lk, r in chunk if lk == link]
            if part:
                await box.journal(link, part)

    # uninterrupted: everything journaled, one pipeline, one final step
    a = await Store.open(tmp_path / "a.db")
    try:
        await a.set_current_session("tok-A", alias=None, deviceid=None, created_by_us=True)
        for chunk in chunks:
            await journal(a, chunk)
        await Pipeline(a, rules, STAMP).step(_future())
        expected = await _passings(a)
    finally:
        await a.close()

    # interrupted: a fresh process after every chunk, small transactions
    monkeypatch.setattr(pipeline_mod, "BATCH", batch)
    path = tmp_path / "b.db"
    for i, chunk in enumerate(chunks):
        b = await Store.open(path)
        try:
            if i == 0:
                await b.set_current_session("tok-A", alias=None, deviceid=None, created_by_us=True)
            await journal(b, chunk)
            await Pipeline(b, rules, STAMP).step(_now())
        finally:
            await b.close()
    b = await Store.open(path)
    try:
        await Pipeline(b, rules, STAMP).step(_future())
        got = await _passings(b)
    finally:
        await b.close()
    return expected, got


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_restart_mid_stream_derives_identical_passings(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _race(seed)
    rnd = random.Random(seed * 7919)
    cuts = sorted(rnd.sample(range(1, len(reads)), 12))
    chunks = [reads[a:b] for a, b in zip([0, *cuts], [*cuts, len(reads)], strict=True)]
    expected, got = await _once_and_restarted(tmp_path, chunks, RULES, monkeypatch, batch=7)
    assert got == expected
    assert len(expected) > 20
    assert [p[0] for p in expected] == list(range(1, len(expected) + 1))


FIRST_RULES = {
    "mat1": ReaderRules(dedup_window_s=3.0, close_grace_s=3600.0),
    "mat2": ReaderRules(dedup_window_s=2.0, finished_window_s=20.0, close_grace_s=3600.0),
}


@pytest.mark.parametrize("seed", [4, 5])
async def test_first_mode_out_of_order_restart_derives_identical_passings(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`first` windows are held and stored like `strongest` ones: reads arriving out of reader order (each
    chunk delivered backwards, as a re-fetch answers after later reads) give the same passings whether one
    process derives them or a fresh process after every chunk."""
    reads = _race(seed)
    rnd = random.Random(seed * 31)
    cuts = sorted(rnd.sample(range(1, len(reads)), 15))
    chunks = [list(reversed(reads[a:b])) for a, b in zip([0, *cuts], [*cuts, len(reads)], strict=True)]
    expected, got = await _once_and_restarted(tmp_path, chunks, FIRST_RULES, monkeypatch, batch=5)
    assert got == expected
    assert len(expected) > 20
    assert [p[0] for p in expected] == list(range(1, len(expected) + 1))


async def test_clock_set_back_does_not_hold_passings(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0, dedup_mode="strongest")}, STAMP)
    await box.journal("mat", [read_at(0.0, "C1", rssi=-60), read_at(0.0, "C2", rssi=-60)])
    assert await pl.step(datetime.now(UTC)) == 0
    # the system clock is stepped back an hour (NTP on a Pi with no RTC): the windows close anyway
    assert await pl.step(datetime.now(UTC) - timedelta(hours=1)) == 2
    assert pl.open_windows == 0


async def test_a_commit_interrupted_after_it_landed_is_not_emitted_twice(
    session_outbox: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM cancels the pipeline task while its COMMIT runs: the database has the passing, the task saw
    CancelledError. The next step (the shutdown's last one) must not emit that window again."""
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0, dedup_mode="strongest")}, STAMP)
    await box.journal("mat", [read_at(0.0, "C1", rssi=-60)])
    assert await pl.step(_now()) == 0
    real = box.commit_step

    async def lands_then_cancelled(*args: object, **kw: object) -> object:
        await real(*args, **kw)  # type: ignore[arg-type]
        raise asyncio.CancelledError

    monkeypatch.setattr(box, "commit_step", lands_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        await pl.step(_future())
    monkeypatch.undo()
    assert await pl.step(_future()) == 0
    await box.journal("mat", [read_at(1.0, "C1", rssi=-20)])  # a late read of that crossing
    assert await pl.step(_future()) == 0
    assert len(await box.rows("tok-A")) == 1
