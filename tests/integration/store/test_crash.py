"""Power cuts and second daemons, with real processes: SIGKILL right after journal() returns loses nothing,
a kill inside the transaction loses only what was never acknowledged, and the lock works across processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.store import Store
from tests.fixtures.outbox import count_rows

ROOT = Path(__file__).resolve().parents[3]

# Journals batches of 10 reads (reader R, seq numbered) forever, printing the count acknowledged after each
# journal() returns: the parent trusts only what was printed.
CHILD = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from gateway.log import configure
from gateway.model import Read
from gateway.store import Store

configure(stream=sys.stderr)  # stdout carries only the acks

async def main(path):
    box = await Store.open(path)
    t0 = datetime(2024, 5, 1, 9, tzinfo=UTC)
    n = 0
    if len(sys.argv) > 2 and sys.argv[2] == "hold":
        print("ready", flush=True)
        sys.stdin.readline()
        await box.close()
        return
    while True:
        reads = [Read(chip=f"C{n + i}", bib=None, timestamp=t0 + timedelta(seconds=n + i), reader="R", seq=n + i)
                 for i in range(10)]
        await box.journal("mat", reads)
        n += 10
        print(f"acked {n}", flush=True)

asyncio.run(main(sys.argv[1]))
"""


@contextlib.contextmanager
def _spawn(db: Path, *args: str, failpoint: str | None = None) -> Iterator[subprocess.Popen[str]]:
    """The child, killed if the test fails half-way (a journaling loop never ends on its own)."""
    env = {k: v for k, v in os.environ.items() if k != "RUFUS_FAILPOINT"}
    if failpoint:
        env["RUFUS_FAILPOINT"] = failpoint
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _healthy(db: Path) -> None:
    assert count_rows(db, "SELECT COUNT(*) FROM pragma_quick_check WHERE quick_check != 'ok'") == 0


def test_sigkill_right_after_journal_returns_loses_nothing(db_path: Path) -> None:
    with _spawn(db_path) as proc:
        assert proc.stdout is not None
        acked = 0
        while acked < 60:
            line = proc.stdout.readline()
            assert line, "child ended early"
            acked = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)  # a power cut while it keeps journaling
        proc.wait(10)
    stored = count_rows(db_path)
    assert stored >= acked
    assert stored % 10 == 0  # a batch is one transaction: all of it or none of it
    _healthy(db_path)


def test_failpoint_after_journal_commit_keeps_that_batch(db_path: Path) -> None:
    with _spawn(db_path, failpoint="after_journal_commit:3") as proc:
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    assert out.split("\n")[:2] == ["acked 10", "acked 20"]  # killed before it could print the third
    assert count_rows(db_path) == 30  # committed, so kept, although the reader was never acked
    _healthy(db_path)


def test_failpoint_mid_batch_commit_rolls_that_batch_back(db_path: Path) -> None:
    with _spawn(db_path, failpoint="mid_batch_commit:3") as proc:
        proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    assert count_rows(db_path) == 20  # the unacknowledged batch is gone whole; the reader re-sends it
    _healthy(db_path)


async def test_lock_refuses_a_second_process_until_it_dies(db_path: Path) -> None:
    with _spawn(db_path, "hold") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StorageError, match=rf"in use by another rufus-gateway \(pid {proc.pid}\)"):
            await Store.open(db_path)
        proc.send_signal(signal.SIGKILL)  # no clean close: the kernel drops the flock with the process
        proc.wait(10)
    box = await Store.open(db_path)
    await box.close()
