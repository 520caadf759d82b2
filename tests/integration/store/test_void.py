"""Voiding a manual passing must never hide one the cloud may already hold."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.store import NewPassing, Store, VoidRefused
from tests.fixtures.outbox import T0


def _manual(i: int) -> NewPassing:
    return NewPassing(timestamp=T0 + timedelta(seconds=i), bib=str(i), origin="manual")


async def test_a_passing_a_request_may_have_carried_cannot_be_voided(session_outbox: Store) -> None:
    box = session_outbox
    await box.add_passings("tok-A", [_manual(1), _manual(2)])
    assert await box.add_attempt("tok-A", [1]) == {1}  # the uploader is sending 1 (or retrying it)
    with pytest.raises(VoidRefused, match="may be there"):
        await box.void("tok-A", 1)
    assert [r.state for r in await box.rows("tok-A")] == ["Pending", "Pending"]
    assert await box.void("tok-A", 2)  # never sent: still voidable


async def test_a_row_voided_before_the_request_is_left_out_of_it(session_outbox: Store) -> None:
    box = session_outbox
    await box.add_passings("tok-A", [_manual(1), _manual(2), _manual(3)])
    batch = await box.pending("tok-A", 10)  # the uploader read the batch...
    assert await box.void("tok-A", 2)  # ...the crew voids one before the request goes...
    live = await box.add_attempt("tok-A", [r.passing.num_passing for r in batch])
    assert live == {1, 3}  # ...and the request carries only what is still Pending
    rows = {r.passing.num_passing: r for r in await box.rows("tok-A")}
    assert rows[2].attempts == 0 and rows[2].state == "Voided"
