"""A duplicate window closes on the clock only once no read that arrived before its deadline can still show
up: none in a journal transaction still open, none committed since the pipeline last read the journal. That
is what keeps a replay of the journal deriving the same passings, now that the clock margin is 50 ms rather
than 500 ms of hoping the journal is quicker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway import failpoints
from gateway.pipeline import Pipeline, ReaderRules, Stamp
from gateway.store import Store
from tests.fixtures.outbox import read_at


async def test_the_journal_says_while_a_transaction_is_open_and_what_it_committed(
    session_outbox: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = session_outbox
    seen: list[tuple[str, Any, int]] = []
    real_hit = failpoints.hit

    def spy(name: str) -> None:
        seen.append((name, box.journal_open_since, box.journal_last_id))
        real_hit(name)

    monkeypatch.setattr(failpoints, "hit", spy)
    assert (box.journal_open_since, box.journal_last_id) == (None, 0)
    ids = await box.journal("mat", [read_at(0, "C1"), read_at(1, "C2")])
    [(inside, since, last_inside), (after, _, last_after)] = seen
    assert (inside, after) == ("mid_batch_commit", "after_journal_commit")
    assert since is not None and last_inside == 0  # open, nothing of it committed yet
    stored = (await box.reads_after(0, 10))[0].received_at
    assert since == stored  # the arrival time the transaction stamped on its reads
    assert box.journal_open_since is None and last_after == box.journal_last_id == max(i for i in ids if i)


async def test_a_window_waits_for_a_transaction_that_opened_before_its_deadline(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0)}, Stamp())
    await box.journal("mat", [read_at(0, "C1")])
    [read] = await box.reads_after(0, 1)
    late = datetime.now(UTC) + timedelta(hours=1)
    # a transaction that began 1 s into the window is still open: a read of it may belong to this window
    box.journal_open_since = read.received_at + timedelta(seconds=1)
    assert await pl.step(late) == 0
    assert pl.open_windows == 1
    box.journal_open_since = None  # it committed
    assert await pl.step(late) == 1
    assert pl.last_closed_by_clock == 1


async def test_a_window_waits_while_a_commit_is_newer_than_the_pipelines_last_look(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0)}, Stamp())
    await box.journal("mat", [read_at(0, "C1")])
    late = datetime.now(UTC) + timedelta(hours=1)
    box.journal_last_id += 5  # reads committed after the pipeline's query (the race, frozen)
    assert await pl.step(late) == 0 and pl.open_windows == 1
    box.journal_last_id -= 5
    assert await pl.step(late) == 1


async def test_the_pipeline_says_when_its_next_window_is_due(session_outbox: Store) -> None:
    box = session_outbox
    pl = Pipeline(box, {"mat": ReaderRules(dedup_window_s=3.0)}, Stamp())
    assert pl.next_deadline_s() is None
    await box.journal("mat", [read_at(0, "C1")])
    await pl.step()
    [read] = await box.reads_after(0, 1)
    due = pl.next_deadline_s()
    assert due is not None
    # the window's end on the arrival clock, plus the 50 ms margin: the daemon wakes the pipeline then
    assert due == pytest.approx(read.received_at.timestamp() + 3.0 + 0.05, abs=0.002)
