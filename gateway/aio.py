"""Small asyncio helpers the long-running loops share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` at most `timeout` seconds; True if it was set.

    Not `asyncio.wait_for(event.wait(), timeout)`: on Python 3.11 wait_for swallows a cancel that lands in the
    same loop turn as the event being set (it returns the result instead), so a loop that waits this way and is
    cancelled at shutdown just as work arrives never stops, and the TaskGroup waits for it until systemd's
    SIGKILL. asyncio.timeout delivers the cancel whatever else happened."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def uncancellable(aw: Awaitable[T]) -> T:
    """Finish a local bookkeeping step even if cancelled meanwhile (then re-raise the cancel): a 2xx must not
    be half-recorded because shutdown arrived during the database write."""
    task = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result
