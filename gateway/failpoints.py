"""Failpoints for crash tests: `RUFUS_FAILPOINT=name[:n]` SIGKILLs the process the n-th time (default 1st)
execution reaches `hit(name)`. With the variable unset, `hit` is a dictionary lookup and nothing else.

Names in use: after_journal_commit, mid_batch_commit, after_cloud_2xx_before_mark_sent.
"""

from __future__ import annotations

import os
import signal

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
