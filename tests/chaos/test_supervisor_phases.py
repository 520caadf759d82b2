"""The supervisor's fault phases without a daemon: a traffic phase whose fault never met the gateway is run
again (up to phase_attempts, then left to the coverage check), and one whose fault fired runs once and frees
the kill loop it held back. No process is started: the emulator's request log is written by the test."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.chaos.processes import GatewayProcess
from gateway.chaos.supervisor import ChaosSettings, Supervisor

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
