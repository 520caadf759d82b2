"""The bounded (CI) profile of the crash loop: the real daemon SIGKILLed 30+ times, at random instants and at
every failpoint, while the cloud misbehaves in every way the harness knows (each at least once, a 20 s outage
and flapping among them, so reads pile up while the daemon is still being killed) and the timer reboots once;
then the set checker. The long profile is benchmarks/chaos.py (a 180 s outage, 300 kills). The figures go to
figures.json beside the run and into the JSON line a tests/chaos run ends with (tests/chaos/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.chaos.harness.processes import GatewayProcess
from tests.chaos.harness.supervisor import FAILPOINTS, FAULT_KINDS, PHASES, ChaosSettings, Supervisor, run_chaos

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

FORMAT = "mylaps"  # the acknowledging protocol: the claim is "every acknowledged read is in the cloud once"
CI_OUTAGE_S = 20.0  # README "Reliability" quotes this figure; the long profile's outage is 180 s


@pytest.mark.timeout(400)
async def test_crash_loop_with_network_faults(tmp_path: Path) -> None:
    settings = ChaosSettings(
        workdir=tmp_path / "run", kills=30, runners=120, fmt=FORMAT, seed=5, network_faults=True,
        phases=PHASES, outage_s=CI_OUTAGE_S, flap_s=5.0, reader_reboots=1,
    )  # fmt: skip
    report = await run_chaos(settings)
    assert (settings.workdir / "figures.json").read_text().strip() == report.json_line()
    f = report.figures
    assert report.ok, report.problems()
    assert f["kills"] >= 30 and f["coverage_gaps"] == 0
    assert all(f["kills_failpoint"].get(p, 0) >= 1 for p in FAILPOINTS), report.problems()
    assert f["reads_journaled"] > 0 and f["passings_cloud"] > 0 and f["sigterm_exit"] == 0
    assert f["reader_reboots"] == 1 and f["reader_complete"]
    assert f["network_phases"].get("rollover") == 1 and f["sessions"] == 2
    assert f["poisoned_bib"] is not None and f["rejected"] >= 1, "the poison bib was set aside as Rejected"
    assert f["reads_acked"] == f["reads_sent"] == f["reads_journaled"]
    # every kind of misbehaviour actually reached the gateway, and the outage held it back in full
    assert all(f["network_faults"][kind] >= 1 for kind in FAULT_KINDS), f["network_faults"]
    assert f["outage_held_s"] >= CI_OUTAGE_S and f["pending_max"] > 0
    # the WAL stayed bounded the whole run (sampled, and measured after every kill), not only at the end
    assert f["wal_bytes_max"] <= f["wal_limit"] and f["wal_bytes_after_kill_max"] <= f["wal_limit"]
    # nothing was taken for someone else's: no unknown session, no session numbered above a floor, no damage
    assert f["cloud_foreign"] == 0 and f["floors_nonzero"] == 0 and f["sessions"] == 2
    run = settings.workdir
    assert not list(run.rglob("*.damaged-*")), "a SIGKILL must never leave a database that looks damaged"
    logs = [p for p in run.glob("daemon-*.log")]
    assert logs and not [p.name for p in logs if "database damaged" in p.read_text(errors="replace")]
    assert f["status_snapshots"] >= 5 and f["secret_leaks"] == 0


@pytest.mark.parametrize("before_ready", [True, False])
async def test_a_daemon_exiting_on_its_own_stops_the_run(tmp_path: Path, before_ready: bool) -> None:
    """Never counted as one of our kills: the kill loop raises with the daemon's log."""
    # seed 9: the startup kill would come 0.83 s after the start, long after this "daemon" is gone
    s = ChaosSettings(workdir=tmp_path, kills=1, network_faults=False, seed=9,
                      startup_kill_rate=1.0 if before_ready else 0.0)  # fmt: skip
    sup = Supervisor(s)
    script = "import sys; print('boom: a task crashed', flush=True); sys.exit(70)"
    gw = GatewayProcess(tmp_path / "gateway.toml", tmp_path / "gateway.db", argv=[sys.executable, "-c", script])
    sup.gateway = gw
    with pytest.raises(RuntimeError, match=r"exited 70 .*boom: a task crashed"):
        await sup._kill_loop(gw, None)
    assert sup.tally.kills == 0
