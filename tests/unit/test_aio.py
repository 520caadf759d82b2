"""wait_event: the loops' bounded wait that never swallows a shutdown cancel (asyncio.wait_for does, on 3.11,
when the cancel lands in the same loop turn as the event being set)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from gateway.aio import wait_event

ROOT = Path(__file__).resolve().parents[2]


async def test_wait_event_says_whether_the_event_came() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, ev.set)
    assert await wait_event(ev, 5) is True


async def _loop_on(wait: object, ev: asyncio.Event) -> None:
    while True:
        if wait is wait_event:
            await wait_event(ev, 10)
        else:
            await asyncio.wait_for(ev.wait(), 10)
        ev.clear()


async def _cancel_as_it_is_set(wait: object) -> bool:
    """True if the loop stopped when cancelled in the same turn as its event was set."""
    ev = asyncio.Event()
    task = asyncio.create_task(_loop_on(wait, ev))
    await asyncio.sleep(0)  # the loop is waiting
    ev.set()
    task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(task), 0.5)
    except asyncio.CancelledError:
        return True
    except TimeoutError:
        task.cancel()  # a second cancel gets through
        with pytest.raises(asyncio.CancelledError):
            await task
        return False
    return False


async def test_a_cancel_landing_as_the_event_is_set_stops_the_loop() -> None:
    assert all([await _cancel_as_it_is_set(wait_event) for _ in range(20)])


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for is built on asyncio.timeout from 3.12 on")
async def test_the_reason_wait_for_loses_that_cancel_on_3_11() -> None:
    assert not await _cancel_as_it_is_set("wait_for")


def test_no_loop_waits_for_an_event_through_wait_for() -> None:
    pattern = re.compile(r"wait_for\(\s*self\.(?!proc\b)\w+\.wait\(\)")  # an Event (a process wait is fine)
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in (ROOT / "gateway").rglob("*.py")
        if p.name != "aio.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"use gateway.aio.wait_event: {offenders}"
