"""Failpoints for crash tests: `RUFUS_FAILPOINT=name[:n]` SIGKILLs the process the n-th time (default 1st)
execution reaches `hit(name)`. With the variable unset, `hit` is a dictionary lookup and nothing else.

Names in use: after_journal_commit, mid_batch_commit, after_cloud_2xx_before_mark_sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

_spec = os.environ.get("RUFUS_FAILPOINT", "")
_name, _, _nth = _spec.partition(":")
_remaining = int(_nth) if _nth.isdigit() and int(_nth) > 0 else 1

POINTS = ("after_journal_commit", "mid_batch_commit", "after_cloud_2xx_before_mark_sent")


def hit(name: str) -> None:
    global _remaining
    if not _name or name != _name:
        return
    _remaining -= 1
    if _remaining <= 0:
        # SIGKILL, not sys.exit: no finally blocks, no flush — exactly a power cut at this instant.
        os.kill(os.getpid(), signal.SIGKILL)


# `RUFUS_STALL=name:seconds` holds execution at `stall(name)` / `stall_sync(name)` for that long (the event
# loop keeps turning in the async form). It widens a window a test must hit with a signal, such as start-up
# before the database is open; unset, each call is one comparison.
_stall_name, _, _stall_s = os.environ.get("RUFUS_STALL", "").partition(":")
STALLS = ("before_event_loop", "before_outbox_open")


def _stall_for(name: str) -> float | None:
    if not _stall_name or name != _stall_name:
        return None
    try:
        seconds = float(_stall_s or 1)
    except ValueError:
        seconds = 1.0
    # stderr, not the log: before the event loop the log may not be configured; tests wait for this line
    print(f"rufus-gateway: stalled at {name} for {seconds:g} s (RUFUS_STALL)", file=sys.stderr, flush=True)
    return seconds


def stall_sync(name: str) -> None:
    seconds = _stall_for(name)
    if seconds is not None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:  # a signal handler may cut a sleep short
            time.sleep(left)


async def stall(name: str) -> None:
    seconds = _stall_for(name)
    if seconds is not None:
        await asyncio.sleep(seconds)
