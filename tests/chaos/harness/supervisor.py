"""The crash-loop supervisor: the real daemon against an emulated cloud and a simulated timer, killed again
and again, at random instants and at every failpoint, while the network misbehaves; then the checker.

    emulator (in this process, SQLite file) <-HTTP- rufus-gateway run (subprocess) <-TCP- rufus-gateway simulate
                 ^ faults switched here                ^ SIGKILLed here                  (truth file)

Every kill is followed by a restart at once, the way systemd's Restart=always would. A kill either lands at a
random instant (sometimes before the daemon is even ready: in the middle of opening and migrating the
database) or is made by the daemon itself at a failpoint (`RUFUS_FAILPOINT=name:n`). When the kills are done
the faults are cleared, the gateway runs until the timer has sent everything and every passing has left
`Pending`, is stopped with SIGTERM (it must exit 0), and the three witnesses are compared.

The kill loop goes on past its planned kills until every failpoint was hit (a few extra tries) and every
network phase has run once, so a run that did not exercise what it claims fails its `coverage` check rather
than passing quietly. A daemon that exits on its own at any point (not by our SIGKILL, not by its failpoint)
stops the run with its log. The status page is on: its /status.json and /metrics are saved into the workdir
every couple of seconds, whatever the cloud is doing, so the final grep for the API key covers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.aio import wait_event
from gateway.emulator.config import ApiKey, EmulatorConfig
from gateway.emulator.server import Emulator
from tests.chaos.harness.checker import Claim, Report, check, cloud_from_rows, load_truth, snapshot_db, wal_size
from tests.chaos.harness.evidence import Window, met_per_phase, refused_at
from tests.chaos.harness.processes import GatewayProcess, Killed, ReaderProcess, quiet_port, write_gateway_config

FAILPOINTS = ("after_journal_commit", "mid_batch_commit", "after_cloud_2xx_before_mark_sent")
PHASES = ("5xx", "poison", "429", "slow", "drop_after_commit", "hang", "401", "offline", "rollover", "flap", "outage")
ONCE = ("rollover", "poison", "outage")  # run once per run
# what each fault phase must have made the cloud do at least once (see _fault_counts)
PHASE_FAULT = {"5xx": "error_503", "429": "error_429", "401": "error_401", "slow": "slow", "hang": "hang",
               "drop_after_commit": "drop"}  # fmt: skip
# Phases in which the cloud refuses connections. The emulator's own switches to offline prove nothing: what
# each must show is the gateway meeting a refused connect during it, in the daemons' logs (chaos/evidence.py).
OFFLINE = ("offline", "flap", "outage")
HELD = ("offline", "flap")  # held on (bounded) until the gateway met the refusal, run again if it never did
NO_2XX = ("offline", "outage", "401", "drop_after_commit", "poison")  # phases in which no write gets a 2xx
# faults the cloud can only do to a request: they fire only if a live daemon sends something during the phase
TRAFFIC = ("5xx", "429", "401", "slow", "drop_after_commit", "hang")
# what the gateway met, each at least once; all but offline counted in the cloud's request log
FAULT_KINDS = ("error_503", "error_429", "error_401", "slow", "hang", "drop", "offline")
ACKING_FORMATS = ("mylaps",)
API_KEY = "ror-" + "c4a05" * 4  # a key of the real shape, so a leak of it is greppable


@dataclass
class ChaosSettings:
    workdir: Path
    kills: int = 30
    runners: int = 120
    fmt: str = "mylaps"
    seed: int = 1
    race_s: float | None = None  # wall time the timer takes for the race; None: kills * 2.5 s
    up_s: tuple[float, float] = (0.3, 2.5)  # how long a daemon lives before a random kill
    startup_kill_rate: float = 0.15  # share of random kills made before the daemon says it is ready
    network_faults: bool = True
    reader_reboots: int = 0  # simulator SIGKILLed and restarted (its unacked memory lost), spread over the kills
    phase_s: float = 3.0
    phase_max_s: float = 15.0  # a fault phase (and offline, flap) is held longer (up to this) until it met a gateway
    phase_attempts: int = 3  # a phase whose fault never met the gateway runs again after the calm, up to this
    backlog_s: float = 8.0  # before a traffic phase, the cloud is held offline (up to this) until a passing waits
    starved_up_s: float = 6.0  # while a phase's fault has not fired yet, a daemon lives up to this before its kill
    calm_s: tuple[float, float] = (1.0, 2.0)  # clear weather between two phases
    outage_s: float = 20.0  # one long outage
    flap_s: float = 8.0  # seconds of flapping (on/off every 0.5-1.5 s)
    phases: tuple[str, ...] = PHASES
    extra_failpoint_tries: int = 3  # per failpoint never hit in the planned kills
    status_every_s: float = 2.0  # /status.json and /metrics saved into workdir/status this often
    dialect: str = "enveloped"
    window_s: float = 3.0
    drain_timeout_s: float = 120.0
    failpoint_timeout_s: float = 8.0
    profile: str = "ci"
    log: Callable[[str], None] = field(default=lambda _m: None)


@dataclass
class _Tally:
    kills: int = 0
    random: int = 0
    startup: int = 0
    failpoint: Counter[str] = field(default_factory=Counter)
    failpoint_missed: int = 0
    not_ready: int = 0  # random kills of a daemon that was running but not ready within 30 s
    wal_max: int = 0
    wal_after_kill_max: int = 0
    pending_max: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    phase_requests: list[tuple[str, int, int]] = field(default_factory=list)  # (phase, first, end) request index
    phase_retries: Counter[str] = field(default_factory=Counter)  # runs again because the fault never fired
    failpoints_deferred: int = 0  # failpoint kills put off while a phase waited for its fault to fire
    outage_held_s: float = 0.0
    outage_pending: int = 0  # passings Pending as the long outage ended: what it held back
    phase_windows: list[Window] = field(default_factory=list)  # (phase, began, ended), time.time()
    poisoned_bib: str | None = None
    reader_reboots: int = 0
    status_snapshots: int = 0
    status_failures: int = 0


def race_plan(runners: int, seed: int, wall_s: float) -> tuple[float, datetime]:
    """The --speed at which the simulator's race (same generator) takes about `wall_s` seconds, and a gun time
    that puts the first finisher a few seconds from now. Every simulator incarnation gets the same gun, so a
    rebooted reader replays the very same reads (same numbers, same times): a true re-send."""
    from gateway.simulator.race import Race

    ref = datetime(2026, 1, 1, tzinfo=UTC)
    reads = Race.generate(runners, seed, ref, waves=1)
    now = datetime.now(UTC).replace(microsecond=0)
    if len(reads) < 2:
        return 1.0, now
    span = (reads[-1].timestamp - reads[0].timestamp).total_seconds()
    gun = now + timedelta(seconds=3) - (reads[0].timestamp - ref)
    return max(1.0, span / max(1.0, wall_s)), gun


class Supervisor:
    def __init__(self, s: ChaosSettings) -> None:
        self.s = s
        self.rng = random.Random(f"{s.seed}:supervisor")
        self.tally = _Tally()
        s.workdir.mkdir(parents=True, exist_ok=True)
        self.db = s.workdir / "gateway.db"
        self.emulator = Emulator(EmulatorConfig(
            api_keys=[ApiKey(API_KEY)], db=str(s.workdir / "cloud.db"), dialect=s.dialect,  # type: ignore[arg-type]
            seed=s.seed, admin_token="chaos-admin-" + "0" * 8,
        ))  # fmt: skip
        self.gateway: GatewayProcess | None = None
        self.reader: ReaderProcess | None = None
        self.status_url = ""
        self._kills_done = asyncio.Event()  # the faults run their phases to the end of a cycle, then stop
        # A traffic phase is on and its fault has not met the gateway yet: the kill loop lets daemons live.
        self._starved = asyncio.Event()
        self._fired = asyncio.Event()
        self._phase = "calm"
        self._phase_first = 0
        self._poison_wait_s = 8.0  # how long the poison phase looks for a queued passing (cloud offline)
        self._pending_at_fault: int | None = None
        self._phase_began = 0.0  # time.time() at the phase's start
        self._phase_first_log = 1  # the daemon log that was being written when the phase began
        self._t0 = time.monotonic()

    # -- the run ----------------------------------------------------------------------------------------
    async def run(self) -> Report:
        s = self.s
        t0 = self._t0 = time.monotonic()
        await self.emulator.start()
        try:
            port, status_port = quiet_port(), quiet_port()
            self.status_url = f"http://127.0.0.1:{status_port}"
            config = write_gateway_config(
                s.workdir / "gateway.toml", base_url=self.emulator.base_url, api_key="", db=self.db,
                readers=[{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": s.fmt,
                          "dedup_window_s": s.window_s}],
                session={"follow_active_session": True}, status={"listen": f"127.0.0.1:{status_port}"},
            )  # fmt: skip
            # The key comes from the environment, so every file the harness leaves can be grepped for it.
            self.gateway = gw = GatewayProcess(config, self.db, env={"RUFUS_API_KEY": API_KEY})
            speed, gun = race_plan(s.runners, s.seed, s.race_s or s.kills * 2.5)
            self.reader = ReaderProcess(
                s.workdir,
                s.fmt,
                f"tcp://127.0.0.1:{port}",
                s.runners,
                speed,
                s.seed,
                extra=["--start", gun.isoformat()],
            )
            await gw.start()
            await gw.wait_ready()
            await self.reader.start()
            s.log(f"race: {s.runners} runners at speed {speed:.1f}, {s.kills} kills, format {s.fmt}")
            watchers = [asyncio.create_task(self._sample(), name="chaos:sample"),
                        asyncio.create_task(self._snapshot_status(), name="chaos:status")]  # fmt: skip
            faults = asyncio.create_task(self._faults(), name="chaos:faults") if s.network_faults else None
            try:
                await self._kill_loop(gw, faults)
            finally:
                self._kills_done.set()
                if faults is not None:
                    if not faults.done():
                        faults.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await faults
                self._clear_faults()
            try:
                sigterm_rc = await self._drain(gw)
            finally:
                for task in watchers:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            report = self._verdict(sigterm_rc, time.monotonic() - t0)
            (s.workdir / "figures.json").write_text(report.json_line() + "\n")
            return report
        finally:
            if self.reader is not None:
                await self.reader.kill()
            if self.gateway is not None:
                await self.gateway.kill()
            await self.emulator.stop()

    async def _kill_loop(self, gw: GatewayProcess, faults: asyncio.Task[None] | None) -> None:
        """The planned kills; then on, while a failpoint was never hit (a few tries each) or the network phases
        have not all run, so the run covers what its figures claim."""
        s = self.s
        plan = ["random", FAILPOINTS[0], "random", FAILPOINTS[1], "random", FAILPOINTS[2]]
        # reader reboots spread over the first half, so the last incarnation still has time to finish the race
        reboots = {round((k + 1) * s.kills / (2 * (s.reader_reboots + 1))) for k in range(s.reader_reboots)}
        extra: Counter[str] = Counter()
        deferred: list[str] = []  # planned failpoint kills put off while a phase starved: made later, not dropped
        if gw.running:  # the first incarnation, started ready for the timer to connect to
            self._killed(gw, await gw.kill())
        i = 0
        while True:
            if i < s.kills:
                kind = plan[i % len(plan)]
            elif deferred and not self._starved.is_set():
                kind = deferred.pop(0)
            else:
                missing = [p for p in FAILPOINTS if not self.tally.failpoint[p] and extra[p] < s.extra_failpoint_tries
                           and p not in deferred]  # fmt: skip
                if missing:
                    kind = missing[0]  # counted as a try below, once it is made (not turned into a random kill)
                elif faults is not None and not faults.done():
                    self._kills_done.set()  # the faults finish their cycle; kills go on meanwhile
                    kind = "random"
                else:
                    break
            if i in reboots and self.reader is not None:
                await self.reader.kill()
                await self.reader.start()
                self.tally.reader_reboots += 1
            if kind == FAILPOINTS[2] and self._phase in NO_2XX:
                kind = "random"  # no 2xx to die after while the cloud answers none: a wait of nothing saved
            if kind in FAILPOINTS[:2] and self._starved.is_set():
                # These die at the first journal batches after the timer reconnects, before the daemon can send
                # anything: a phase still waiting for its fault to meet the gateway gets a daemon that lives.
                deferred.append(kind)
                self.tally.failpoints_deferred += 1
                kind = "random"
            if kind == "random":
                await gw.start()
                startup_kill = self.rng.random() < s.startup_kill_rate
                if startup_kill and not self._starved.is_set():
                    await asyncio.sleep(self.rng.uniform(0.05, 0.9))  # opening, migrating, binding
                    self.tally.startup += 1
                else:
                    try:
                        await gw.wait_ready()
                    except RuntimeError:
                        if not gw.running:
                            raise  # it exited on its own before it was ready
                        self.tally.not_ready += 1  # slow (a loaded machine): killed all the same
                    await asyncio.sleep(self.rng.uniform(*s.up_s))
                    if self._starved.is_set():
                        # The phase's fault has not met a gateway yet: this one lives until it has (bounded),
                        # then dies at a random instant with the fault still on.
                        await wait_event(self._fired, s.starved_up_s)
                        await asyncio.sleep(self.rng.uniform(0.0, s.up_s[1]))
                self._killed(gw, await gw.kill())
                self.tally.random += 1
            else:
                if i >= s.kills:
                    extra[kind] += 1
                # the cloud's 2xx come a few per second at best: its failpoint on one of the first two
                await gw.start(failpoint=f"{kind}:{self.rng.randint(1, 2 if kind == FAILPOINTS[2] else 4)}")
                rc = await gw.wait(s.failpoint_timeout_s)
                if rc is None:  # never reached (e.g. no 2xx during an outage): a random kill after all
                    self._killed(gw, await gw.kill())
                    self.tally.failpoint_missed += 1
                    self.tally.random += 1
                elif rc == -signal.SIGKILL:
                    self.tally.failpoint[kind] += 1
                else:
                    raise RuntimeError(f"daemon exited {rc} on its own during the crash loop: {gw.tail()}")
            # the WAL as the next start finds it: what a SIGKILL at that instant left behind
            wal = wal_size(self.db)
            self.tally.wal_after_kill_max = max(self.tally.wal_after_kill_max, wal)
            self.tally.wal_max = max(self.tally.wal_max, wal)
            self.tally.kills += 1
            i += 1
            if i % 10 == 0:
                s.log(f"{i} kills")

    @staticmethod
    def _killed(gw: GatewayProcess, k: Killed) -> None:
        if not k.by_us:
            raise RuntimeError(f"daemon exited {k.rc} on its own during the crash loop: {gw.tail()}")

    async def _drain(self, gw: GatewayProcess) -> int | None:
        """Run undisturbed until the timer is done and every passing left Pending; then SIGTERM."""
        s = self.s
        assert self.reader is not None
        await gw.start()
        await gw.wait_ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.drain_timeout_s
        rc = await self.reader.wait(s.drain_timeout_s)
        if rc is None:
            s.log(f"simulator still running after {s.drain_timeout_s:g}s: {self.reader.tail(500)}")
        while loop.time() < deadline:
            if self._settled(gw):
                break
            await asyncio.sleep(0.2)
        return await gw.terminate()

    def _settled(self, gw: GatewayProcess) -> bool:
        try:
            pending = gw.query("SELECT COUNT(*) FROM passings WHERE state = 'Pending'")[0][0]
            top = gw.query("SELECT COALESCE(MAX(id), 0) FROM reads")[0][0]
            cursor = gw.query("SELECT value FROM meta WHERE key = 'pipeline.cursor'")
            # a duplicate window still open holds its passing back until it closes
            held = gw.query("SELECT COUNT(*) FROM dedup WHERE state LIKE '%\"window\"%'")[0][0]
        except Exception:
            return False
        return pending == 0 and held == 0 and bool(cursor) and int(cursor[0][0]) >= top

    async def _sample(self) -> None:
        """The WAL's size and the Pending backlog, sampled the whole run long."""
        assert self.gateway is not None
        while True:
            self.tally.wal_max = max(self.tally.wal_max, wal_size(self.db))
            pending = self._pending_or_none()  # None: no database yet, or mid-recovery: next time
            if pending is not None:
                self.tally.pending_max = max(self.tally.pending_max, pending)
            await asyncio.sleep(0.25)

    async def _snapshot_status(self) -> None:
        """Save what the status page shows (whatever the cloud is doing: 5xx, 401, hangs, offline), so the final
        grep for the API key covers /status.json and /metrics too."""
        import aiohttp

        out = self.s.workdir / "status"
        out.mkdir(exist_ok=True)
        timeout = aiohttp.ClientTimeout(total=1.5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                await asyncio.sleep(self.s.status_every_s)
                n = self.tally.status_snapshots + self.tally.status_failures
                for path, suffix in (("/status.json", "status.json"), ("/metrics", "metrics.txt")):
                    try:
                        async with http.get(self.status_url + path) as resp:
                            body = await resp.read()
                    except (aiohttp.ClientError, TimeoutError, OSError):
                        self.tally.status_failures += 1  # killed or starting: the next one
                        break
                    (out / f"{n:04d}-{self._phase}-{suffix}").write_bytes(body)
                else:
                    self.tally.status_snapshots += 1

    # -- the network --------------------------------------------------------------------------------------
    def _clear_faults(self) -> None:
        self.emulator.set_faults(error_rate=0.0, error_status=503, retry_after=None, latency_ms=0,
                                 drop_after_commit=0.0, hang_rate=0.0, offline=False)  # fmt: skip

    async def _faults(self) -> None:
        """Phase after phase, calm weather between them, until the kills are done and every phase has run at
        least once. A phase is never cut short: an outage lasts its outage_s in full."""
        s = self.s
        i = 0
        again: list[str] = []  # phases whose fault never met the gateway: run again before the cycle goes on
        while True:
            if self._kills_done.is_set() and not again and all(self.tally.phases[p] for p in s.phases):
                return
            if again:
                name = again.pop(0)
            else:
                name = s.phases[i % len(s.phases)]
                i += 1
                if name in ONCE and self.tally.phases[name]:
                    if all(p in ONCE for p in s.phases):  # nothing left to repeat: wait for the kills
                        await self._kills_done.wait()
                    continue
            first = self._phase_first = self._requests_seen()
            self._phase = name
            self._pending_at_fault = None
            self.tally.phases[name] += 1
            began = time.monotonic()
            self._phase_began = began_at = time.time()
            self._phase_first_log = max(1, self.gateway.starts if self.gateway is not None else 1)
            try:
                await self._run_phase(name)
            finally:
                self._clear_faults()
                self._phase = "calm"
                self.tally.phase_requests.append((name, first, self._requests_seen()))
                ended_at = time.time()
                self.tally.phase_windows.append((name, began_at, ended_at))
                fired = {k: n for k, n in self._fault_counts(first).items() if n and k != "offline"}
                record: dict[str, Any] = {
                    "phase": name, "at_s": round(began - self._t0, 1), "held_s": round(time.monotonic() - began, 1),
                    "requests": self._requests_seen() - first, "fired": fired,
                    "pending_at_fault": self._pending_at_fault, "window": [round(began_at, 3), round(ended_at, 3)],
                }  # fmt: skip
                if name in OFFLINE:  # refused connects the gateway logged during this run of the phase
                    record["met"] = self._met_since(began_at, self._phase_first_log)
                with (s.workdir / "phases.jsonl").open("a") as f:  # forensics: what the cloud did, when
                    f.write(json.dumps(record) + "\n")
            unmet = (
                (name in TRAFFIC and not self._fault_counts()[PHASE_FAULT[name]])
                or (name in HELD and not self._offline_met()[name])
                or (name == "poison" and self.tally.poisoned_bib is None)  # nothing queued to poison then
            )
            if unmet and self.tally.phase_retries[name] < s.phase_attempts - 1:
                # Not a pass and not a failure yet: the dice or the kills kept the fault from the gateway.
                # Run it again (the coverage check still fails a run in which it never met the gateway).
                self.tally.phase_retries[name] += 1
                again.append(name)
            if not self._kills_done.is_set():
                await asyncio.sleep(self.rng.uniform(*s.calm_s))

    async def _run_phase(self, name: str) -> None:
        s = self.s
        settings: dict[str, dict[str, Any]] = {
            "5xx": {"error_rate": 0.5, "error_status": 503},
            "429": {"error_rate": 0.5, "error_status": 429, "retry_after": 1},
            "401": {"error_rate": 0.5, "error_status": 401},  # the key refused: the gateway stops, alerts
            "slow": {"latency_ms": 400},
            "drop_after_commit": {"drop_after_commit": 1.0},  # every stored batch's answer lost: all re-sent
            "hang": {"hang_rate": 0.3, "hang_s": 4.0},  # the gateway's read timeout is 2 s
            "offline": {"offline": True},
        }
        if name == "rollover":
            self._rollover()
        elif name == "poison":
            await self._poison()
        elif name in HELD:
            await self._refuse(flap=name == "flap")
        elif name == "outage":
            self.emulator.set_offline(True)
            started = time.monotonic()
            s.log(f"cloud offline for {s.outage_s:g}s")
            self._pending_at_fault = pending = self._pending_or_none() or 0
            end = started + s.outage_s
            while (left := end - time.monotonic()) > 0:
                await asyncio.sleep(min(0.5, left))
                n = self._pending_or_none()
                pending = pending if n is None else n  # the last count read (a query can meet a checkpoint)
            # Read while still offline: nothing can have left Pending since, so this is what the outage held.
            self.tally.outage_pending = pending
            self.emulator.set_offline(False)
            self.tally.outage_held_s = round(time.monotonic() - started, 1)
        else:
            if name in TRAFFIC:
                self._pending_at_fault = await self._backlog(s.backlog_s)
            first = self._requests_seen()
            self._fired.clear()
            if name in TRAFFIC:
                self._starved.set()
            try:
                self.emulator.set_faults(**settings[name])
                # phase_s at least; held on (up to phase_max_s) until its fault has fired once
                began = time.monotonic()
                while time.monotonic() < began + s.phase_max_s:
                    if self._fault_counts(first)[PHASE_FAULT[name]]:
                        self._fired.set()
                        self._starved.clear()
                        if time.monotonic() >= began + s.phase_s:
                            break
                    await asyncio.sleep(0.2)
            finally:
                self._starved.clear()
                self._fired.set()

    async def _refuse(self, *, flap: bool) -> None:
        """The cloud refuses connections (offline; flap: on and off every 0.5-1.5 s) for phase_s (flap_s) at
        least, and on, up to phase_max_s, until a daemon has logged a refused connect. A gateway with nothing
        Pending sends nothing, so the phase is its own backlog: offline, what the timer sends piles up until
        there is something to try. The kill loop is not held back: a daemon that starts with a backlog tries
        it at once, while one kept alive may be one that stopped sending (a 401 just before: auth_failed)."""
        s = self.s
        began, first_log = self._phase_began, self._phase_first_log
        least = s.flap_s if flap else s.phase_s
        self._pending_at_fault = self._pending_or_none()
        if not flap:
            self.emulator.set_offline(True)
        start = time.monotonic()
        while True:
            held = time.monotonic() - start
            if self._met_since(began, first_log):
                if held >= least:
                    return
            elif held >= max(least, s.phase_max_s):
                return  # never met: the phase may run again, and coverage says so if it never does
            if flap:  # the first switch takes it offline
                self.emulator.set_offline(not self.emulator.faults.offline)
                await asyncio.sleep(self.rng.uniform(0.5, 1.5))
            else:
                await asyncio.sleep(0.2)

    def _refusals(self, first_log: int = 1) -> list[float]:
        """When the daemons (from start number `first_log` on) logged a cloud call refused at connect."""
        gw = self.gateway
        if gw is None:
            return []
        times: list[float] = []
        for n in range(max(1, first_log), gw.starts + 1):
            try:
                text = gw.log_path(n).read_text(errors="replace")
            except OSError:
                continue
            times += refused_at(text.splitlines())
        return times

    def _met_since(self, began: float, first_log: int) -> int:
        return sum(1 for t in self._refusals(first_log) if t >= began)

    def _offline_met(self) -> Counter[str]:
        """Per offline phase, the refused connects the gateway logged within its runs' windows."""
        return met_per_phase(self.tally.phase_windows, self._refusals(), OFFLINE)

    def _pending_or_none(self) -> int | None:
        assert self.gateway is not None
        try:
            return int(self.gateway.query("SELECT COUNT(*) FROM passings WHERE state = 'Pending'")[0][0])
        except Exception:  # no database yet, or a checkpoint in progress
            return None

    async def _backlog(self, budget: float) -> int:
        """Hold the cloud offline until at least one passing waits in Pending (at most `budget` s), so the fault
        switched on next meets a gateway that has something to send as soon as it is up, instead of whatever
        the race and the kills happen to offer in the phase's seconds (a 2xx write for drop_after_commit, any
        request for the others). Offline, what is queued cannot drain before the fault is on. Returns the
        backlog found (0: none within the budget, e.g. the race is over: the retries and coverage say so)."""
        self.emulator.set_offline(True)
        try:
            end = time.monotonic() + budget
            while True:
                await asyncio.sleep(0.25)
                n = self._pending_or_none() or 0
                race_over = self.reader is not None and not self.reader.running  # nothing more will come
                if n or race_over or time.monotonic() >= end:
                    return n
        finally:
            self.emulator.set_offline(False)

    def _requests_seen(self) -> int:
        return int(self.emulator.counts["requests"])

    def _fault_counts(self, first: int = 0) -> Counter[str]:
        """The cloud's misbehaviour as the gateway met it (from request number `first` on), from the emulator's
        own request log: requests answered 503 / 429 / 401 by an injected error, held past the timeout (hang),
        stored then left unanswered (drop), served during a `slow` phase (the latency applies to every request).
        `offline` stays 0 here: a refused connect leaves no request in the cloud's log, so the verdict counts
        it from the gateway's side (_offline_met)."""
        total = self._requests_seen()
        log = list(self.emulator.requests)
        base = total - len(log)  # number of log[0] among all requests: the log is a bounded deque
        counts: Counter[str] = Counter({kind: 0 for kind in FAULT_KINDS})
        for entry in log[max(0, first - base) :]:
            fault = entry.get("fault")
            if fault == "error":
                counts[f"error_{entry.get('status')}"] += 1
            elif fault == "hang":
                counts["hang"] += 1
            elif fault == "drop_after_commit":
                counts["drop"] += 1
        spans = list(self.tally.phase_requests)
        if self._phase == "slow":
            spans.append(("slow", self._phase_first, total))
        counts["slow"] = sum(max(0, b - max(a, first)) for phase, a, b in spans if phase == "slow")
        return counts

    def _rollover(self) -> None:
        """The timing crew opens a new session on the device: the gateway's session is closed under it."""
        store = self.emulator.store
        assert store is not None
        for row in store.all_sessions():
            if row["active"]:
                store.create_session(row["deviceid"], "chaos rollover")
                return

    async def _poison(self) -> None:
        """Pick a passing still queued that the cloud does not hold (the cloud is offline meanwhile, so it stays
        queued) and make the cloud refuse its bib: the gateway must set that one aside as Rejected and send the
        rest. Not one the cloud holds already (its batch stored, the 2xx lost to a kill): that one is rightly
        found in the cloud and Sent, and nothing would be set aside."""
        assert self.gateway is not None and self.emulator.store is not None
        self.emulator.set_offline(True)
        end = time.monotonic() + self._poison_wait_s
        while time.monotonic() < end:
            await asyncio.sleep(0.25)
            try:
                rows = self.gateway.query(
                    "SELECT token_session, num_passing, bib FROM passings WHERE state = 'Pending' "
                    "ORDER BY id DESC LIMIT 50"
                )
            except Exception:  # no database yet, or a checkpoint in progress: look again
                continue
            held: dict[str, set[int]] = {}  # per session, what the cloud holds: looked up once per look
            for token, num, bib in rows:
                if token not in held:
                    held[token] = set(self.emulator.store.num_passings(token))
                if num not in held[token]:
                    self.tally.poisoned_bib = str(bib)
                    self.emulator.set_faults(reject_bib=self.tally.poisoned_bib)
                    break
            if self.tally.poisoned_bib is not None:
                break
        self.emulator.set_offline(False)

    # -- the verdict ----------------------------------------------------------------------------------------
    def _verdict(self, sigterm_rc: int | None, wall_s: float) -> Report:
        s = self.s
        assert self.reader is not None and self.gateway is not None and self.emulator.store is not None
        self.tally.wal_max = max(self.tally.wal_max, wal_size(self.db))
        local = snapshot_db(self.db)
        store = self.emulator.store
        rows: list[dict[str, Any]] = []
        for session in store.all_sessions():
            rows += store.passings_of(session["token_session"], 1 << 30)
        truth = load_truth(p for p in self.reader.truths if p.exists())
        claim: Claim = "acknowledged" if s.fmt in ACKING_FORMATS else "journaled"
        leaks = secret_leaks(s.workdir, API_KEY)
        state = self.emulator.state()
        t = self.tally
        faults = self._fault_counts()
        met = self._offline_met()
        faults["offline"] = sum(met.values())  # met by the gateway, not switched by the emulator
        extra = {
            "profile": s.profile,
            "format": s.fmt,
            "kills": t.kills,
            "kills_random": t.random,
            "kills_before_ready": t.startup,
            "kills_failpoint": dict(sorted(t.failpoint.items())),
            "failpoints_not_reached": t.failpoint_missed,
            "restarts": self.gateway.starts - 1,
            "reader_reboots": t.reader_reboots,
            "sigterm_exit": sigterm_rc,
            "network_phases": dict(sorted(t.phases.items())),
            "network_phase_retries": dict(sorted(t.phase_retries.items())),
            "failpoints_deferred": t.failpoints_deferred,
            "network_faults": dict(sorted(faults.items())),
            "offline_met": dict(sorted(met.items())),
            "outage_held_s": t.outage_held_s,
            "outage_pending": t.outage_pending,
            "pending_max": t.pending_max,
            "cloud_faults_fired": dict(sorted(state["faults_fired"].items())),
            "cloud_requests": state["counts"]["requests"],
            "cloud_duplicates": state["counts"]["duplicate"],
            "wal_bytes_after_kill_max": t.wal_after_kill_max,
            "not_ready_in_30s": t.not_ready,
            "poisoned_bib": t.poisoned_bib,
            "status_snapshots": t.status_snapshots,
            "secret_leaks": len(leaks),
            "wall_s": round(wall_s, 1),
        }
        report = check(local, cloud_from_rows(rows), truth, claim=claim, window_s=s.window_s, wal_max=t.wal_max,
                       extra=extra)  # fmt: skip
        gaps = coverage_gaps(report.figures, s)
        report.figures["coverage_gaps"] = len(gaps)
        if gaps:
            report.details["coverage"] = gaps
        if leaks:
            report.details["secret_leaks"] = leaks
        if sigterm_rc != 0:
            report.details["sigterm"] = [f"exit {sigterm_rc} after SIGTERM: {self.gateway.tail(1000)}"]
        if claim == "acknowledged" and not truth.complete:
            report.details["reader"] = [f"simulator did not finish (all sent and acked): {self.reader.tail(500)}"]
        report.figures["reader_complete"] = truth.complete
        report.figures["ok"] = (
            bool(report.figures["ok"])
            and not leaks
            and not gaps
            and sigterm_rc == 0
            and (claim != "acknowledged" or truth.complete)
        )
        return report


def coverage_gaps(figures: Mapping[str, Any], s: ChaosSettings) -> list[str]:
    """What the run was meant to exercise and did not: a run that never hit a failpoint or never had the
    cloud misbehave in some way proves nothing about it, so it does not pass."""
    gaps: list[str] = []
    if figures["kills"] < s.kills:
        gaps.append(f"{figures['kills']} kills, {s.kills} planned")
    gaps += [f"failpoint {p} never hit" for p in FAILPOINTS if not figures["kills_failpoint"].get(p)]
    if s.network_faults:
        gaps += [f"network phase {p} never ran" for p in s.phases if not figures["network_phases"].get(p)]
        faults = figures["network_faults"]
        gaps += [f"phase {p}: the cloud never did {PHASE_FAULT[p]}" for p in s.phases
                 if p in PHASE_FAULT and not faults.get(PHASE_FAULT[p])]  # fmt: skip
        met = figures["offline_met"]
        gaps += [f"phase {p}: the gateway never met a refused connection" for p in s.phases
                 if p in OFFLINE and not met.get(p)]  # fmt: skip
        if "outage" in s.phases and figures["outage_held_s"] < s.outage_s:
            gaps.append(f"the outage held {figures['outage_held_s']}s, not {s.outage_s:g}s")
        if "outage" in s.phases and not figures["outage_pending"]:
            gaps.append("the outage ended with nothing Pending: it held no reads back")
        if not figures["pending_max"]:
            gaps.append("no passing ever waited in Pending: the faults never held anything back")
    if not figures["status_snapshots"]:
        gaps.append("the status page was never saved, so never grepped")
    return gaps


def secret_leaks(root: Path, secret: str) -> list[str]:
    """Every file under `root` holding `secret` (logs, truth files, databases, exports), as 'path:line'."""
    needle = secret.encode()
    hits: list[str] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if needle in data:
            line = data[: data.index(needle)].count(b"\n") + 1
            hits.append(f"{path.relative_to(root)}:{line}")
    return hits


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_chaos(s: ChaosSettings) -> Report:
    return await Supervisor(s).run()


def figures_line(report: Report) -> str:
    return json.dumps(report.figures, sort_keys=True, separators=(",", ":"))
