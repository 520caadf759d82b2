"""The crash-loop supervisor: the real daemon against an emulated cloud and a simulated timer, killed again
and again, at random instants and at every failpoint, while the network misbehaves; then the checker.

    emulator (in this process, SQLite file) <-HTTP- rufus-gateway run (subprocess) <-TCP- rufus-gateway simulate
                 ^ faults switched here                ^ SIGKILLed here                  (truth file)

Every kill is followed by a restart at once, the way systemd's Restart=always would. A kill either lands at a
random instant (sometimes before the daemon is even ready: in the middle of opening and migrating the
database) or is made by the daemon itself at a failpoint (`RUFUS_FAILPOINT=name:n`). When the kills are done
the faults are cleared, the gateway runs until the timer has sent everything and every passing has left
`Pending`, is stopped with SIGTERM (it must exit 0), and the three witnesses are compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.chaos.checker import Claim, Report, check, cloud_from_rows, load_truth, snapshot_db, wal_size
from gateway.chaos.processes import GatewayProcess, ReaderProcess, write_gateway_config
from gateway.emulator.config import ApiKey, EmulatorConfig
from gateway.emulator.server import Emulator

FAILPOINTS = ("after_journal_commit", "mid_batch_commit", "after_cloud_2xx_before_mark_sent")
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
    outage_s: float = 20.0  # one long outage
    flap_s: float = 8.0  # seconds of flapping (on/off every 0.5-1.5 s)
    phases: tuple[str, ...] = (
        "5xx", "poison", "429", "slow", "drop_after_commit", "hang", "offline", "rollover", "flap", "outage",
    )  # fmt: skip
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
    wal_max: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    poisoned_bib: str | None = None
    reader_reboots: int = 0


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
        self._stop_faults = asyncio.Event()

    # -- the run ----------------------------------------------------------------------------------------
    async def run(self) -> Report:
        s = self.s
        t0 = time.monotonic()
        await self.emulator.start()
        try:
            port = _free_port()
            config = write_gateway_config(
                s.workdir / "gateway.toml", base_url=self.emulator.base_url, api_key="", db=self.db,
                readers=[{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": s.fmt,
                          "dedup_window_s": s.window_s}],
                session={"follow_active_session": True},
            )  # fmt: skip
            # The key comes from the environment, so every file the harness leaves can be grepped for it.
            self.gateway = gw = GatewayProcess(config, self.db, env={"RUFUS_API_KEY": API_KEY})
            speed, gun = race_plan(s.runners, s.seed, s.race_s or s.kills * 2.5)
            self.reader = ReaderProcess(s.workdir, s.fmt, f"tcp://127.0.0.1:{port}", s.runners, speed, s.seed,
                                        extra=["--start", gun.isoformat()])
            await gw.start()
            await gw.wait_ready()
            await self.reader.start()
            s.log(f"race: {s.runners} runners at speed {speed:.1f}, {s.kills} kills, format {s.fmt}")
            sampler = asyncio.create_task(self._sample_wal(), name="chaos:wal")
            faults = asyncio.create_task(self._faults(), name="chaos:faults") if s.network_faults else None
            try:
                await self._kill_loop(gw)
            finally:
                self._stop_faults.set()
                if faults is not None:
                    await faults
                self._clear_faults()
            sigterm_rc = await self._drain(gw)
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            report = self._verdict(sigterm_rc, time.monotonic() - t0)
            (s.workdir / "figures.json").write_text(report.json_line() + "\n")
            return report
        finally:
            if self.reader is not None:
                await self.reader.kill()
            if self.gateway is not None:
                await self.gateway.kill()
            await self.emulator.stop()

    async def _kill_loop(self, gw: GatewayProcess) -> None:
        s = self.s
        plan = ["random", FAILPOINTS[0], "random", FAILPOINTS[1], "random", FAILPOINTS[2]]
        # reader reboots spread over the first half, so the last incarnation still has time to finish the race
        reboots = {round((k + 1) * s.kills / (2 * (s.reader_reboots + 1))) for k in range(s.reader_reboots)}
        for i in range(s.kills):
            if i in reboots and self.reader is not None:
                await self.reader.kill()
                await self.reader.start()
                self.tally.reader_reboots += 1
            kind = plan[i % len(plan)]
            await gw.kill()  # the previous incarnation is dead already; this reaps a straggler
            if kind == "random":
                await gw.start()
                if self.rng.random() < s.startup_kill_rate:
                    await asyncio.sleep(self.rng.uniform(0.05, 0.9))  # opening, migrating, binding
                    self.tally.startup += 1
                else:
                    with contextlib.suppress(RuntimeError):
                        await gw.wait_ready()
                    await asyncio.sleep(self.rng.uniform(*s.up_s))
                await gw.kill()
                self.tally.random += 1
            else:
                await gw.start(failpoint=f"{kind}:{self.rng.randint(1, 4)}")
                rc = await gw.wait(s.failpoint_timeout_s)
                if rc is None:  # never reached (e.g. no 2xx during an outage): a random kill after all
                    await gw.kill()
                    self.tally.failpoint_missed += 1
                    self.tally.random += 1
                elif rc == -9:
                    self.tally.failpoint[kind] += 1
                else:
                    raise RuntimeError(f"daemon exited {rc} on its own during the crash loop: {gw.tail()}")
            self.tally.kills += 1
            if (i + 1) % 10 == 0:
                s.log(f"{i + 1} kills")

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
        except Exception:
            return False
        return pending == 0 and bool(cursor) and int(cursor[0][0]) >= top

    async def _sample_wal(self) -> None:
        while True:
            self.tally.wal_max = max(self.tally.wal_max, wal_size(self.db))
            await asyncio.sleep(0.25)

    # -- the network --------------------------------------------------------------------------------------
    def _clear_faults(self) -> None:
        self.emulator.set_faults(error_rate=0.0, error_status=503, retry_after=None, latency_ms=0,
                                 drop_after_commit=0.0, hang_rate=0.0, offline=False)  # fmt: skip

    async def _pause(self, seconds: float) -> bool:
        """Sleep, or return True early when the kill loop is over."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_faults.wait(), seconds)
        return self._stop_faults.is_set()

    async def _faults(self) -> None:
        s = self.s
        settings: dict[str, dict[str, Any]] = {
            "5xx": {"error_rate": 0.5, "error_status": 503},
            "429": {"error_rate": 0.5, "error_status": 429, "retry_after": 1},
            "slow": {"latency_ms": 400},
            "drop_after_commit": {"drop_after_commit": 0.5},
            "hang": {"hang_rate": 0.3, "hang_s": 4.0},  # the gateway's read timeout is 2 s
            "offline": {"offline": True},
        }
        i = 0
        while not self._stop_faults.is_set():
            name = s.phases[i % len(s.phases)]
            faults = settings.get(name, {})
            i += 1
            if name in ("rollover", "poison", "outage") and self.tally.phases[name]:
                if await self._pause(0.2):  # once per run; never spin when only those are left
                    return
                continue
            self.tally.phases[name] += 1
            if name == "rollover":
                self._rollover()
            elif name == "poison":
                await self._poison()
            elif name == "flap":
                end = time.monotonic() + s.flap_s
                while time.monotonic() < end and not self._stop_faults.is_set():
                    self.emulator.set_offline(not self.emulator.faults.offline)
                    await self._pause(self.rng.uniform(0.5, 1.5))
            elif name == "outage":
                self.emulator.set_offline(True)
                s.log(f"cloud offline for {s.outage_s:g}s")
                await self._pause(s.outage_s)
            else:
                self.emulator.set_faults(**faults)
                await self._pause(s.phase_s)
            self._clear_faults()
            if await self._pause(self.rng.uniform(1.0, 2.0)):  # clear weather between storms
                return

    def _rollover(self) -> None:
        """The timing crew opens a new session on the device: the gateway's session is closed under it."""
        store = self.emulator.store
        assert store is not None
        for row in store.all_sessions():
            if row["active"]:
                store.create_session(row["deviceid"], "chaos rollover")
                return

    async def _poison(self) -> None:
        """Pick a passing still queued (the cloud is offline meanwhile, so it stays queued) and make the cloud
        refuse its bib: the gateway must set that one aside as Rejected and send the rest."""
        assert self.gateway is not None
        self.emulator.set_offline(True)
        end = time.monotonic() + 8.0
        while time.monotonic() < end and not self._stop_faults.is_set():
            await asyncio.sleep(0.25)
            try:
                rows = self.gateway.query(
                    "SELECT bib FROM passings WHERE state = 'Pending' ORDER BY id DESC LIMIT 1"
                )
            except Exception:  # no database yet, or a checkpoint in progress: look again
                continue
            if rows:
                self.tally.poisoned_bib = str(rows[0][0])
                self.emulator.set_faults(reject_bib=self.tally.poisoned_bib)
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
            "cloud_faults_fired": dict(sorted(state["faults_fired"].items())),
            "cloud_requests": state["counts"]["requests"],
            "cloud_duplicates": state["counts"]["duplicate"],
            "wal_bytes_max": t.wal_max,
            "poisoned_bib": t.poisoned_bib,
            "secret_leaks": len(leaks),
            "wall_s": round(wall_s, 1),
        }
        report = check(local, cloud_from_rows(rows), truth, claim=claim, window_s=s.window_s, extra=extra)
        if leaks:
            report.details["secret_leaks"] = leaks
        if sigterm_rc != 0:
            report.details["sigterm"] = [f"exit {sigterm_rc} after SIGTERM: {self.gateway.tail(1000)}"]
        if claim == "acknowledged" and not truth.complete:
            report.details["reader"] = [f"simulator did not finish (all sent and acked): {self.reader.tail(500)}"]
        report.figures["reader_complete"] = truth.complete
        report.figures["ok"] = bool(report.figures["ok"]) and not leaks and sigterm_rc == 0 and (
            claim != "acknowledged" or truth.complete
        )
        return report


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
