"""The offline phases' evidence comes from the gateway's side, without a daemon.

fixtures/quick_run is a real `benchmarks/chaos.py --quick` run (paths shortened to /run): its 22 daemon logs
(daemon-NNN.log, kept as .jsonl: *.log is ignored by git) and its phases.jsonl with each phase's wall-clock
window. Nine times a daemon logged a cloud call refused at connect; four of those fall in the backlog before
a traffic fault (the cloud held offline until a passing waits), which is no offline phase; one each in
`offline` and `flap` and three in the 4 s `outage` are what the run's figures said (offline_met). Then the
supervisor's own phases: an offline phase no daemon met is held to phase_max_s and run again, up to
phase_attempts; one a daemon met runs once; the outage's figure is the Pending count as it ends, read while
the cloud is still offline."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness.evidence import Window, met_per_phase, refused_at
from tests.chaos.harness.processes import GatewayProcess
from tests.chaos.harness.supervisor import OFFLINE, ChaosSettings, Supervisor, coverage_gaps
from tests.chaos.test_coverage import covered
from tests.fixtures.wait import until

pytestmark = [pytest.mark.chaos]

FIXTURE = Path(__file__).parent / "fixtures" / "quick_run"
LOGS = sorted(FIXTURE.glob("daemon-*.jsonl"))


def windows() -> list[Window]:
    phases = [json.loads(line) for line in (FIXTURE / "phases.jsonl").read_text().splitlines()]
    return [(p["phase"], p["window"][0], p["window"][1]) for p in phases]


def all_refusals() -> list[float]:
    return [t for path in LOGS for t in refused_at(path.read_text().splitlines())]


def a_refused_upload(at: datetime) -> str:
    """A real refused-upload line of the fixture, stamped `at` as the daemon's structlog would."""
    line = next(line for path in LOGS for line in path.read_text().splitlines() if "Connect call failed" in line)
    entry = json.loads(line)
    entry["timestamp"] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(entry)


def test_only_cloud_calls_refused_at_connect_count() -> None:
    at = datetime(2026, 12, 3, 13, 45, 39, 992957, tzinfo=UTC)
    refused = json.loads(a_refused_upload(at))

    def line(**changes: Any) -> str:
        return json.dumps({k: v for k, v in (refused | changes).items() if v is not ...})

    session = "device sessions: connection failed: ClientConnectorError: Cannot connect to host 127.0.0.1:1"
    counted = [line(), line(event="cloud device sessions failed", error=session)]
    not_counted = [
        line(error="insert passings: HTTP 503: Injected fault: HTTP 503"),  # an answer: the connect worked
        line(error="insert passings: connection failed: ServerDisconnectedError: Server disconnected"),  # a drop
        line(error="insert passings: timed out (TimeoutError)"),  # a hang
        line(event="link finish failed"),  # not the cloud
        line(error=...),  # a cloud event with no error
        line(timestamp="yesterday"),
        "rufus-gateway: database error: cannot create lock file /run/gw.db.lock: Connection refused",
        line()[:-40],  # the last line of a daemon SIGKILLed mid-write
        json.dumps(["Connect call failed"]),
    ]
    assert refused_at(counted + not_counted) == [at.timestamp()] * 2


def test_the_fixture_runs_offline_phases_each_met_the_gateway_and_backlogs_do_not_count() -> None:
    times, spans = all_refusals(), windows()
    assert len(times) == 9
    assert met_per_phase(spans, times, OFFLINE) == {"offline": 1, "flap": 1, "outage": 3}
    # the other four: a traffic phase's backlog (offline until a passing waits), not an offline phase
    traffic = met_per_phase(spans, times, ("5xx", "slow", "drop_after_commit", "401", "429", "hang"))
    assert {k: n for k, n in traffic.items() if n} == {"5xx": 1, "slow": 1, "drop_after_commit": 1, "401": 1}
    # had the phases come a minute later, no daemon would have met them: every one is 0, none left out
    later = [(name, a + 60, b + 60) for name, a, b in spans]
    assert met_per_phase(later, times, OFFLINE) == {"offline": 0, "flap": 0, "outage": 0}


def fixture_supervisor(tmp: Path, logs: list[Path] = LOGS) -> Supervisor:
    sup = Supervisor(ChaosSettings(workdir=tmp))
    gw = GatewayProcess(tmp / "gateway.toml", tmp / "gateway.db")
    for path in logs:
        shutil.copy(path, tmp / path.with_suffix(".log").name)  # where the supervisor finds a daemon's log
    gw.starts = len(LOGS)
    sup.gateway = gw
    sup.tally.phase_windows = windows()
    return sup


def test_the_supervisor_counts_its_daemons_logs_into_the_figures_and_coverage(tmp_path: Path) -> None:
    sup = fixture_supervisor(tmp_path)
    met = sup._offline_met()
    assert met == {"offline": 1, "flap": 1, "outage": 3}
    figures = covered() | {"offline_met": dict(met)}
    assert coverage_gaps(figures, sup.s) == []
    # the same run with the outage's refused uploads gone from the logs: coverage says the outage never met it
    _name, a, b = next(w for w in windows() if w[0] == "outage")
    for path in tmp_path.glob("daemon-*.log"):
        lines = path.read_text().splitlines()
        kept = [x for x in lines if not any(a <= t <= b for t in refused_at([x]))]
        path.write_text("".join(x + "\n" for x in kept))
    met = sup._offline_met()
    assert met == {"offline": 1, "flap": 1, "outage": 0}
    gaps = coverage_gaps(covered() | {"offline_met": dict(met)}, sup.s)
    assert gaps == ["phase outage: the gateway never met a refused connection"]


class _Dice:
    def uniform(self, a: float, b: float) -> float:
        return a  # a flap's switches every 0.5 s


def phase_supervisor(tmp: Path, phase: str) -> Supervisor:
    s = ChaosSettings(workdir=tmp, phases=(phase,), phase_s=0.05, flap_s=0.05, phase_max_s=0.25, calm_s=(0.0, 0.0))
    sup = Supervisor(s)
    sup.rng = _Dice()  # type: ignore[assignment]
    gw = GatewayProcess(tmp / "gw.toml", tmp / "nothing.db")  # never started: its log is written by the test
    gw.starts = 1
    gw.log_path(1).write_text("")
    sup.gateway = gw
    sup._kills_done.set()  # one cycle, then the phases stop
    return sup


async def test_an_offline_phase_no_daemon_met_is_held_then_run_again(tmp_path: Path) -> None:
    sup = phase_supervisor(tmp_path, "offline")
    seen_offline = []

    async def watch() -> None:
        while True:
            seen_offline.append(sup.emulator.faults.offline)
            await asyncio.sleep(0.05)

    await sup.emulator.start()
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(sup._faults(), 10)
    finally:
        watcher.cancel()
        await sup.emulator.stop()
    assert sup.tally.phases["offline"] == 3 and sup.tally.phase_retries["offline"] == 2
    runs = [json.loads(x) for x in (tmp_path / "phases.jsonl").read_text().splitlines()]
    assert [r["met"] for r in runs] == [0, 0, 0] and all(r["held_s"] >= 0.25 for r in runs)
    assert True in seen_offline and sup.emulator.faults.offline is False
    assert sup._offline_met() == {"offline": 0, "flap": 0, "outage": 0}


@pytest.mark.parametrize("phase", ["offline", "flap"])
async def test_an_offline_phase_a_daemon_met_runs_once(tmp_path: Path, phase: str) -> None:
    sup = phase_supervisor(tmp_path, phase)
    log = sup.gateway.log_path(1) if sup.gateway is not None else None
    assert log is not None

    async def daemon_refused() -> None:
        await until(lambda: sup.emulator.faults.offline, 5, "the phase to take the cloud offline")
        log.write_text(a_refused_upload(datetime.now(UTC)) + "\n")

    await sup.emulator.start()
    try:
        daemon = asyncio.create_task(daemon_refused())
        await asyncio.wait_for(sup._faults(), 10)
        await daemon
    finally:
        await sup.emulator.stop()
    assert sup.tally.phases[phase] == 1 and not sup.tally.phase_retries
    runs = [json.loads(x) for x in (tmp_path / "phases.jsonl").read_text().splitlines()]
    assert [r["met"] for r in runs] == [1] and runs[0]["held_s"] < 0.25 + 0.6
    assert sup._offline_met()[phase] == 1 and sup.emulator.faults.offline is False


async def test_the_outage_records_what_was_pending_as_it_ended(tmp_path: Path) -> None:
    s = ChaosSettings(workdir=tmp_path, phases=("outage",), outage_s=0.6, calm_s=(0.0, 0.0))
    sup = Supervisor(s)
    db = tmp_path / "gateway.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE passings (id INTEGER PRIMARY KEY, state TEXT)")
    con.executemany("INSERT INTO passings (state) VALUES (?)", [("Pending",), ("Pending",), ("Sent",)])
    con.commit()
    sup.gateway = GatewayProcess(tmp_path / "gw.toml", db)
    sup._kills_done.set()

    async def reads_pile_up() -> None:
        await until(lambda: sup.emulator.faults.offline, 5, "the phase to take the cloud offline")
        await asyncio.sleep(0.1)
        con.executemany("INSERT INTO passings (state) VALUES (?)", [("Pending",)] * 3 + [("Sent",)])
        con.commit()

    await sup.emulator.start()
    try:
        piling = asyncio.create_task(reads_pile_up())
        await asyncio.wait_for(sup._faults(), 10)
        await piling
    finally:
        await sup.emulator.stop()
        con.close()
    assert sup.tally.outage_pending == 5 and sup.tally.outage_held_s >= 0.6
    run = json.loads((tmp_path / "phases.jsonl").read_text())
    assert run["phase"] == "outage" and run["pending_at_fault"] == 2
