"""The bounded (CI) profile of the crash loop: the real daemon SIGKILLed 30+ times, at random instants and at
every failpoint, while the cloud misbehaves; then the set checker. The long profile is benchmarks/chaos.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.chaos.checker import Report
from gateway.chaos.supervisor import FAILPOINTS, ChaosSettings, run_chaos

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

FORMAT = "mylaps"  # the acknowledging protocol: the claim is "every acknowledged read is in the cloud once"


def _announce(report: Report, workdir: Path) -> None:
    # CI runs without -s: the line is also in figures.json beside the run, and in any assertion message.
    print("\nCHAOS FIGURES " + report.json_line(), file=sys.stderr)
    assert (workdir / "figures.json").read_text().strip() == report.json_line()


@pytest.mark.timeout(400)
async def test_crash_loop_with_network_faults(tmp_path: Path) -> None:
    settings = ChaosSettings(
        workdir=tmp_path / "run", kills=30, runners=120, fmt=FORMAT, seed=5, network_faults=True,
        phases=("5xx", "poison", "429", "slow", "drop_after_commit", "hang", "offline", "rollover", "flap"),
        flap_s=5.0,
    )  # fmt: skip
    report = await run_chaos(settings)
    _announce(report, settings.workdir)
    f = report.figures
    assert report.ok, report.problems()
    assert f["kills"] >= 30
    assert all(f["kills_failpoint"].get(p, 0) >= 1 for p in FAILPOINTS), report.problems()
    assert f["reads_journaled"] > 0 and f["passings_cloud"] > 0 and f["sigterm_exit"] == 0
    assert f["network_phases"].get("rollover") == 1 and f["sessions"] == 2
    assert f["poisoned_bib"] is not None and f["rejected"] >= 1, "the poison bib was set aside as Rejected"
    assert f["reads_acked"] == f["reads_sent"] == f["reads_journaled"]
    assert f["cloud_faults_fired"].get("error", 0) >= 1 and f["cloud_faults_fired"].get("offline", 0) >= 1


@pytest.mark.timeout(300)
async def test_long_outage_then_flapping_with_kills(tmp_path: Path) -> None:
    """Reads pile up while the cloud is away (and the daemon is still being killed); all of it lands once."""
    settings = ChaosSettings(
        workdir=tmp_path / "run", kills=8, runners=80, fmt=FORMAT, seed=11, network_faults=True,
        phases=("outage", "flap"), outage_s=20.0, flap_s=8.0, race_s=25.0, up_s=(1.0, 3.0),
    )  # fmt: skip
    report = await run_chaos(settings)
    _announce(report, settings.workdir)
    assert report.ok, report.problems()
    assert report.figures["network_phases"]["outage"] == 1 and report.figures["cloud_faults_fired"]["offline"] >= 2
