"""A re-send is the same number AND the same read; a reused number with other content is a new read."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from gateway.store import Store
from tests.fixtures.outbox import count_rows, read_at


async def test_reader_that_restarts_its_numbering_keeps_its_new_reads(outbox: Store, db_path: Path) -> None:
    first = [dataclasses.replace(read_at(i, f"C{i}"), reader="box1", seq=i) for i in range(1, 4)]
    assert all(x is not None for x in await outbox.journal("mat", first))
    # the same reads again (not acknowledged in time): recognised, not stored twice
    assert await outbox.journal("mat", first) == [None, None, None]
    # the decoder was wiped and numbers from 1 again, for other passings half an hour later
    later = [dataclasses.replace(r, chip=f"D{r.seq}", timestamp=r.timestamp + timedelta(minutes=30)) for r in first]
    ids = await outbox.journal("mat", later)
    assert all(x is not None for x in ids)
    assert count_rows(db_path) == 6
    # and those, re-sent in turn, are recognised too
    assert await outbox.journal("mat", later) == [None, None, None]
    assert count_rows(db_path) == 6
