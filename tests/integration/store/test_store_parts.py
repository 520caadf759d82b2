"""The store is several modules behind one `Store`: they share one connection, so one transaction spans them.

A pipeline step writes through three of them (passings.py stores the passings, sessions.py raises the
session's high-water mark, progress.py moves the cursor and the dedup state); if its last write fails,
none of the earlier ones may survive, or a restart would skip reads or hand out numbers twice.
"""

from __future__ import annotations

from typing import cast

import pytest

from gateway.errors import StorageError
from gateway.store import NewPassing, Store
from gateway.store.db import Database
from tests.fixtures.outbox import T0, count_rows


async def test_a_step_that_fails_at_its_last_write_leaves_nothing_behind(session_outbox: Store) -> None:
    box = session_outbox
    await box.commit_step([NewPassing(timestamp=T0, bib="1")], meta={"cursor": "1"}, dedup_set={("r", "C1"): "open"})

    with pytest.raises(StorageError, match="write failed"):
        await box.commit_step(
            [NewPassing(timestamp=T0, bib="2"), NewPassing(timestamp=T0, bib="3")],
            meta={"cursor": "3"},
            dedup_set={("r", "C2"): cast(str, None)},  # NOT NULL: the dedup write, after the others, fails
        )

    assert [r.passing.bib for r in await box.rows("tok-A")] == ["1"]
    assert await box.max_num_passing("tok-A") == 1  # sessions.allocated rolled back with the passings
    assert await box.get_meta("cursor") == "1"
    assert await box.dedup_state() == {("r", "C1"): "open"}
    assert count_rows(box.path, "SELECT COUNT(*) FROM passings") == 1  # and so says a fresh connection
    # the next step numbers on from where the last committed one stopped: no gap, nothing reused
    result = await box.commit_step([NewPassing(timestamp=T0, bib="2")], meta={"cursor": "2"})
    assert result == ("tok-A", [2])


def test_every_part_of_the_store_works_on_the_one_connection() -> None:
    """A part that opened, locked or wrapped transactions on its own would split one step into several."""
    parts = [c for c in Store.__mro__ if c not in (Store, Database, object)]
    assert {p.__module__ for p in parts} == {
        "gateway.store.journal",
        "gateway.store.progress",
        "gateway.store.admin",
        "gateway.store.passings",
        "gateway.store.sessions",
    }
    plumbing = {"__init__", "open", "close", "_prepare", "_txn", "_write", "_fetchall", "_fetchone", "_one", "_lock"}
    for part in parts:
        assert issubclass(part, Database)
        assert plumbing.isdisjoint(vars(part)), f"{part.__name__} brings its own {plumbing & set(vars(part))}"
