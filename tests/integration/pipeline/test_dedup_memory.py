"""The dedup state of a closed window lives in the database; memory lets it go (pipeline.CACHED_KEYS) and a
later read of that chip finds it there, so a crowd of chips costs no memory once it has passed, and what the
pipeline decides does not depend on what memory held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway import pipeline as pipeline_mod
from gateway.pipeline import Pipeline, ReaderRules, Stamp
from gateway.store import Store
from tests.fixtures.outbox import read_at

# a lap race: a chip read again within 10 minutes of its passing is the same runner on the mat, not a lap
RULES = {"mat": ReaderRules(dedup_window_s=0.0, finished_window_s=600.0)}


def _future() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


async def _chips(box: Store) -> list[str | None]:
    return [r.passing.chip for r in await box.rows("tok-A")]


async def test_a_chip_memory_let_go_is_still_suppressed_from_the_table(
    session_outbox: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_mod, "CACHED_KEYS", 5)
    box = session_outbox
    pl = Pipeline(box, RULES, Stamp())
    await box.journal("mat", [read_at(i, f"C{i}") for i in range(50)])
    assert await pl.step(_future()) == 50
    assert len(pl._state) <= 5  # 50 chips seen, 5 held
    # C0 walks back over the mat 2 minutes later: within its finished window, so no second passing, though
    # memory let its state go long ago; C60 is new and makes one
    await box.journal("mat", [read_at(120.0, "C0"), read_at(121.0, "C60")])
    assert await pl.step(_future()) == 1
    assert (await _chips(box))[-1] == "C60" and len(await _chips(box)) == 51
    assert pl.reads_suppressed == 1


async def test_a_restart_holds_only_the_open_windows(session_outbox: Store) -> None:
    box = session_outbox
    rules = {"mat": ReaderRules(dedup_window_s=3.0, finished_window_s=600.0)}
    pl = Pipeline(box, rules, Stamp())
    await box.journal("mat", [read_at(i, f"C{i}") for i in range(30)])
    assert await pl.step(_future()) == 30  # all closed on the clock
    await box.journal("mat", [read_at(100.0, "OPEN1"), read_at(100.5, "OPEN2")])
    assert await pl.step(datetime.now(UTC)) == 0  # two windows open, their deadline not reached

    again = Pipeline(box, rules, Stamp())  # the daemon restarted: it loads the open windows, not 32 chips
    await box.journal("mat", [read_at(200.0, "C3")])  # within C3's finished window: suppressed from the table
    assert await again.step(datetime.now(UTC)) == 0
    assert sorted(k for k, s in again._state.items() if s.window is not None) == [
        ("mat", "chip:OPEN1"),
        ("mat", "chip:OPEN2"),
    ]
    assert len(again._state) == 3  # the two open windows and C3, looked up for its read
    assert await again.step(_future()) == 2  # the open windows close as they would have without the restart
    assert await _chips(box) == [*(f"C{i}" for i in range(30)), "OPEN1", "OPEN2"]
