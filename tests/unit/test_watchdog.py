"""The watchdog's meaning: progress (journal writer alive and committing), never cloud reachability."""

from __future__ import annotations

import time
from types import SimpleNamespace

from gateway import config
from gateway.service import JOURNAL_STALL_S, Gateway


def gateway_with(writer: object) -> Gateway:
    gw = Gateway(config.load(None, environ={}))
    gw.writer = writer  # type: ignore[assignment]
    return gw


def test_progress_is_the_journal_writer_alive_and_committing() -> None:
    now = time.time()
    assert gateway_with(None).progress_problem(now) == "journal writer not alive"
    dead = SimpleNamespace(alive=False, queued=0, last_commit_at=now)
    assert gateway_with(dead).progress_problem(now) == "journal writer not alive"
    idle = SimpleNamespace(alive=True, queued=0, last_commit_at=now - 3600)  # nothing to do is not a stall
    assert gateway_with(idle).progress_problem(now) is None
    busy = SimpleNamespace(alive=True, queued=5, last_commit_at=now - 1)
    assert gateway_with(busy).progress_problem(now) is None
    stuck = SimpleNamespace(alive=True, queued=5, last_commit_at=now - JOURNAL_STALL_S - 1)
    problem = gateway_with(stuck).progress_problem(now)
    assert problem is not None and problem.startswith("5 reads waiting and no journal commit")
