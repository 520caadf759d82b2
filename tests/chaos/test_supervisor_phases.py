"""The supervisor's fault phases without a daemon: a traffic phase whose fault never met the gateway is run
again (up to phase_attempts, then left to the coverage check), and one whose fault fired runs once and frees
the kill loop it held back. No process is started: the emulator's request log is written by the test."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness.processes import GatewayProcess
from tests.chaos.harness.supervisor import ChaosSettings, Supervisor
from tests.fixtures.wait import until

pytestmark = [pytest.mark.chaos]


def supervisor(tmp: Path, **kw: Any) -> Supervisor:
    s = ChaosSettings(workdir=tmp, phases=("drop_after_commit",), phase_s=0.05, phase_max_s=0.3, backlog_s=0.3,
                      calm_s=(0.0, 0.0), **kw)  # fmt: skip
    sup = Supervisor(s)
    sup.gateway = GatewayProcess(tmp / "gw.toml", tmp / "nothing.db")  # never started: no backlog to find
    sup._kills_done.set()  # one cycle, then the phases stop
    return sup


async def test_a_phase_whose_fault_never_fires_is_run_again_then_left_to_coverage(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    await sup.emulator.start()
    try:
        await asyncio.wait_for(sup._faults(), 10)
    finally:
        await sup.emulator.stop()
    assert sup.tally.phases["drop_after_commit"] == 3 and sup.tally.phase_retries["drop_after_commit"] == 2
    # the faults are cleared and the kill loop is not held back any more
    assert not sup._starved.is_set() and sup._fired.is_set()
    assert sup.emulator.faults.offline is False and sup.emulator.faults.drop_after_commit == 0


async def test_a_phase_whose_fault_fired_runs_once_and_frees_the_kill_loop(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    seen = []

    async def cloud_drops_one() -> None:
        await sup._starved.wait()  # the phase is on and waits for its fault to meet a gateway
        seen.append("starved")
        sup.emulator.requests.append({"fault": "drop_after_commit"})
        sup.emulator.counts["requests"] += 1
        await asyncio.wait_for(sup._fired.wait(), 2)
        seen.append("fired")

    await sup.emulator.start()
    try:
        cloud = asyncio.create_task(cloud_drops_one())
        await asyncio.wait_for(sup._faults(), 10)
        await cloud
    finally:
        await sup.emulator.stop()
    assert seen == ["starved", "fired"]
    assert sup.tally.phases["drop_after_commit"] == 1 and not sup.tally.phase_retries


class _Dice:
    """The supervisor's dice, loaded for speed: every random kill is a start-up kill 0.05 s in."""

    def random(self) -> float:
        return 0.0

    def uniform(self, a: float, b: float) -> float:
        return a

    def randint(self, a: int, b: int) -> int:
        return a


# a "daemon" that dies by SIGKILL at once when given a failpoint (as if it reached it), else just runs
_FAILPOINT_DAEMON = (
    "import os, signal, time\n"
    "if os.environ.get('RUFUS_FAILPOINT'):\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
    "time.sleep(30)\n"
)


async def test_a_failpoint_try_made_a_random_kill_in_an_outage_is_not_used_up(tmp_path: Path) -> None:
    """No 2xx can come while the cloud is offline, so an extra try of after_cloud_2xx_before_mark_sent is
    turned into a random kill then; that must not count as one of its tries, or a run whose extra tries all
    fall in an outage ends with the failpoint never hit (seen in benchmarks/chaos.py --quick)."""
    import sys

    from tests.chaos.harness.supervisor import FAILPOINTS

    s = ChaosSettings(workdir=tmp_path, kills=0, startup_kill_rate=1.0, network_faults=False)
    sup = Supervisor(s)
    sup.rng = _Dice()  # type: ignore[assignment]
    gw = GatewayProcess(tmp_path / "gw.toml", tmp_path / "gw.db", argv=[sys.executable, "-c", _FAILPOINT_DAEMON])
    sup.gateway = gw

    async def outage_then_calm() -> None:
        sup._phase = "outage"
        # the kill loop counts its kills in a plain attribute: more turned random than it has tries
        await until(lambda: sup.tally.random > s.extra_failpoint_tries, 10, "random kills past the tries")
        sup._phase = "calm"

    faults = asyncio.create_task(outage_then_calm())
    try:
        await asyncio.wait_for(sup._kill_loop(gw, faults), 10)
    finally:
        await gw.kill()
        await faults
    assert {p: sup.tally.failpoint[p] for p in FAILPOINTS} == {p: 1 for p in FAILPOINTS}
    assert sup.tally.random >= s.extra_failpoint_tries + 1


def _gateway_db(path: Path, rows: list[tuple[int, str, int, str]]) -> None:
    """A database with just what _poison looks at: passings (id, token_session, num_passing, bib), Pending."""
    import sqlite3

    con = sqlite3.connect(path)
    with con:
        con.execute("CREATE TABLE passings (id INTEGER PRIMARY KEY, token_session TEXT, num_passing INT, "
                    "bib TEXT, state TEXT)")  # fmt: skip
        con.executemany("INSERT INTO passings VALUES (?, ?, ?, ?, 'Pending')", rows)
    con.close()


async def test_poison_picks_a_queued_passing_the_cloud_does_not_hold(tmp_path: Path) -> None:
    sup = Supervisor(ChaosSettings(workdir=tmp_path))
    await sup.emulator.start()
    try:
        store = sup.emulator.store
        assert store is not None
        device = store.bind("One4All", "SN-1", None, None, None)
        token = store.create_session(device, "race")
        # num 2 (bib B): its batch was stored, the 2xx lost to a kill: still Pending here, but in the cloud
        store.insert(token, device, [{"num_passing": 2, "timestamp": "2026-05-03T09:00:02.000Z", "bib": "B"}])
        _gateway_db(tmp_path / "gw.db", [(1, token, 1, "A"), (2, token, 2, "B")])
        sup.gateway = GatewayProcess(tmp_path / "gw.toml", tmp_path / "gw.db")
        await asyncio.wait_for(sup._poison(), 5)
    finally:
        await sup.emulator.stop()
    assert sup.tally.poisoned_bib == "A"  # the newest Pending one (B) is held by the cloud: not poisoned
    assert sup.emulator.faults.reject_bib == "A" and sup.emulator.faults.offline is False


async def test_poison_with_nothing_queued_is_tried_again(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    sup.s.phases = ("poison",)
    sup._poison_wait_s = 0.3
    await sup.emulator.start()
    try:
        await asyncio.wait_for(sup._faults(), 60)
    finally:
        await sup.emulator.stop()
    assert sup.tally.poisoned_bib is None
    assert sup.tally.phases["poison"] == 3 and sup.tally.phase_retries["poison"] == 2
