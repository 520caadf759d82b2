"""coverage_gaps without a daemon: a run's figures that exercised everything give no gap, and taking away any one
thing the run claims to have exercised gives exactly the gap that names it. So a coverage check that let a
run pass without hitting a failpoint, running a phase, firing its fault, the gateway meeting an offline
phase's refused connects, holding the outage in full and with reads Pending at its end, holding anything in
Pending or saving the status page would fail here, not in a two-minute crash loop."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness.supervisor import (
    FAILPOINTS,
    FAULT_KINDS,
    OFFLINE,
    PHASE_FAULT,
    PHASES,
    ChaosSettings,
    coverage_gaps,
)

pytestmark = pytest.mark.chaos


def settings(**kw: Any) -> ChaosSettings:
    return ChaosSettings(workdir=Path("/nonexistent"), kills=30, outage_s=20.0, **kw)


def covered() -> dict[str, Any]:
    """The figures of a run that did everything the CI profile plans (the keys coverage_gaps reads)."""
    return {
        "kills": 31,
        "kills_failpoint": {p: 2 for p in FAILPOINTS},
        "network_phases": {p: 1 for p in PHASES},
        "network_faults": {kind: 3 for kind in FAULT_KINDS},
        "offline_met": {p: 2 for p in OFFLINE},
        "outage_held_s": 20.0,
        "outage_pending": 12,
        "pending_max": 17,
        "status_snapshots": 40,
    }


def gaps_without(change: Any, **kw: Any) -> list[str]:
    figures = copy.deepcopy(covered())
    change(figures)
    return coverage_gaps(figures, settings(**kw))


def test_a_run_that_exercised_everything_has_no_gap() -> None:
    assert coverage_gaps(covered(), settings()) == []


def test_fewer_kills_than_planned() -> None:
    assert gaps_without(lambda f: f.update(kills=29)) == ["29 kills, 30 planned"]


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_a_failpoint_never_hit(failpoint: str) -> None:
    def drop(f: dict[str, Any]) -> None:
        f["kills_failpoint"][failpoint] = 0

    assert gaps_without(drop) == [f"failpoint {failpoint} never hit"]
    # absent is the same as zero: the figures only list what was hit
    assert gaps_without(lambda f: f["kills_failpoint"].pop(failpoint)) == [f"failpoint {failpoint} never hit"]


@pytest.mark.parametrize("phase", PHASES)
def test_a_phase_never_run(phase: str) -> None:
    gaps = gaps_without(lambda f: f["network_phases"].pop(phase))
    assert gaps == [f"network phase {phase} never ran"]


@pytest.mark.parametrize("phase", sorted(PHASE_FAULT))
def test_a_phase_whose_fault_never_fired(phase: str) -> None:
    def unfired(f: dict[str, Any]) -> None:
        f["network_faults"][PHASE_FAULT[phase]] = 0

    assert gaps_without(unfired) == [f"phase {phase}: the cloud never did {PHASE_FAULT[phase]}"]


@pytest.mark.parametrize("phase", OFFLINE)
def test_an_offline_phase_the_gateway_never_met(phase: str) -> None:
    """The emulator switching offline is not enough: a daemon must have been refused during the phase."""

    def unmet(f: dict[str, Any]) -> None:
        f["offline_met"][phase] = 0

    expected = [f"phase {phase}: the gateway never met a refused connection"]
    assert gaps_without(unmet) == expected
    assert gaps_without(lambda f: f["offline_met"].pop(phase)) == expected


def test_an_outage_that_held_nothing_back() -> None:
    gaps = gaps_without(lambda f: f.update(outage_pending=0))
    assert gaps == ["the outage ended with nothing Pending: it held no reads back"]


def test_an_outage_cut_short() -> None:
    assert gaps_without(lambda f: f.update(outage_held_s=19.9)) == ["the outage held 19.9s, not 20s"]


def test_nothing_ever_held_in_pending() -> None:
    gaps = gaps_without(lambda f: f.update(pending_max=0))
    assert gaps == ["no passing ever waited in Pending: the faults never held anything back"]


def test_the_status_page_never_saved() -> None:
    assert gaps_without(lambda f: f.update(status_snapshots=0)) == ["the status page was never saved, so never grepped"]


def test_every_gap_is_reported_at_once() -> None:
    def everything_missing(f: dict[str, Any]) -> None:
        f.update(kills=0, kills_failpoint={}, network_phases={}, network_faults={}, offline_met={},
                 outage_held_s=0.0, outage_pending=0, pending_max=0, status_snapshots=0)  # fmt: skip

    gaps = gaps_without(everything_missing)
    expected = 1 + len(FAILPOINTS) + len(PHASES) + len(PHASE_FAULT) + len(OFFLINE) + 4
    assert len(gaps) == expected and len(set(gaps)) == expected, gaps


def test_without_network_faults_only_the_kills_and_the_status_page_count() -> None:
    def quiet_cloud(f: dict[str, Any]) -> None:
        f.update(network_phases={}, network_faults={}, offline_met={}, outage_held_s=0.0, outage_pending=0,
                 pending_max=0)  # fmt: skip

    assert gaps_without(quiet_cloud, network_faults=False) == []
    gaps = gaps_without(lambda f: (quiet_cloud(f), f["kills_failpoint"].pop(FAILPOINTS[0])), network_faults=False)
    assert gaps == [f"failpoint {FAILPOINTS[0]} never hit"]


def test_only_the_phases_the_run_planned_are_required() -> None:
    def only_5xx(f: dict[str, Any]) -> None:
        f.update(network_phases={"5xx": 1}, network_faults={"error_503": 1}, offline_met={}, outage_held_s=0.0,
                 outage_pending=0)  # fmt: skip

    assert gaps_without(only_5xx, phases=("5xx",)) == []
    # the outage's length and backlog are checked only when an outage was planned
    assert gaps_without(only_5xx, phases=("5xx", "outage")) == [
        "network phase outage never ran", "phase outage: the gateway never met a refused connection",
        "the outage held 0.0s, not 20s", "the outage ended with nothing Pending: it held no reads back",
    ]  # fmt: skip
