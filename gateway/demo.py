"""`rufus-gateway demo`: the whole job on embedded defaults, in one process, with nothing to configure.

A RUFUS Cloud emulator, a simulated One4All timer running a compressed race, and the real gateway between
them, in a temporary directory. Mid-race the cloud goes offline and comes back. The run ends with a summary
checked against the simulator's truth: every read the timer sent was journaled, every passing derived is in
the cloud exactly once, numbered 1..N. Exit 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from gateway import config as config_mod
from gateway import formats
from gateway import log as log_mod
from gateway.emulator import Emulator, EmulatorConfig
from gateway.simulator.driver import Driver, DriveStats
from gateway.simulator.race import Race, chip_style_for
from gateway.simulator.truth import TruthWriter
from gateway.store import OutboxStats, Store


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 60.0
    runners: int = 200
    format: str = "csv"
    seed: int = 7
    outage: bool = True
    workdir: Path | None = None


@dataclass
class Check:
    what: str
    expected: Any
    actual: Any

    @property
    def ok(self) -> bool:
        return bool(self.expected == self.actual)


def drained(cursor: int | None, open_windows: int | None, stats: OutboxStats | None, token: str | None) -> bool:
    """The race is over in the outbox: every journaled read had been through the pipeline and no duplicate
    window held a passing back (`cursor` and `open_windows`, both read before `stats` was taken), and every
    passing it made is Sent."""
    return (
        stats is not None
        and cursor is not None
        and cursor >= stats.reads  # read ids are 1..n: the cursor is the last one processed
        and open_windows == 0
        and stats.pending == 0
        and token is not None
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.o = options
        self.console = console
        self.emulator: Emulator | None = None
        self.driver: Driver | None = None
        self.gateway: Any = None
        self.stats: OutboxStats | None = None
        self.cloud_note = "online"
        self.t0 = 0.0

    def _settings(self, work: Path, base_url: str, api_key: str, port: int) -> config_mod.Settings:
        fmt = formats.get(self.o.format)
        # Who dials whom follows the protocol: a reader-connects protocol gets a listening gateway.
        url = f"tcp-listen://127.0.0.1:{port}" if fmt.gateway_role != "connect" else f"tcp://127.0.0.1:{port}"
        return config_mod.Settings(
            cloud=config_mod.CloudSettings(base_url=base_url, api_key=api_key, linger_s=0.2, backoff_cap_s=3.0),
            device=config_mod.DeviceSettings(serial_number="DEMO-0001", model="One4All", alias="demo finish line"),
            session=config_mod.SessionSettings(alias="Demo race", timezone="CET"),
            readers=(config_mod.ReaderSettings(name="finish", url=url, format=self.o.format, tz="UTC"),),
            outbox=config_mod.OutboxSettings(path=str(work / "outbox.db")),
            status=config_mod.StatusSettings(listen=None),
            source="<demo>",
        )

    async def run(self, work: Path) -> list[Check]:
        from gateway.service import Gateway  # late: keeps `--help` light

        o = self.o
        # The stricter of the vendor's bind descriptions (type required): the gateway must bind against either.
        self.emulator = emu = Emulator(EmulatorConfig(db=str(work / "cloud.db"), bind_requires_type=True))
        await emu.start()
        try:
            port = _free_port()
            settings = self._settings(work, emu.base_url, emu.api_key, port)
            fmt = formats.get(o.format)
            now = datetime.now(UTC)
            reads = Race.generate(o.runners, o.seed, now, waves=2, chip_style=chip_style_for(o.format))
            if reads:  # shift the race so that the first finisher crosses the line now
                lead = reads[0].timestamp - now
                reads = [dataclasses.replace(r, timestamp=r.timestamp - lead) for r in reads]
            span = (reads[-1].timestamp - reads[0].timestamp).total_seconds() if reads else 0.0
            # the race plays in the first 60% of the run; the rest lets the outage backlog drain
            speed = max(span / (0.6 * o.duration_s), 1.0) if span else 0.0
            self.gateway = gw = Gateway(settings)
            truth = TruthWriter.open(work / "truth.jsonl")
            sim_url = f"tcp://127.0.0.1:{port}" if fmt.gateway_role != "connect" else f"tcp-listen://127.0.0.1:{port}"
            self.driver = Driver(
                fmt,
                sim_url,
                reads,
                speed=speed,
                truth=truth,
                seed=o.seed,
                corrupt_rate=0.02,
                heartbeat_s=2.0,
                backoff_cap=1.0,
            )
            self.t0 = time.monotonic()
            gw_task = asyncio.create_task(gw.run(), name="gateway")
            try:
                ready = asyncio.create_task(gw.running.wait())
                await asyncio.wait({ready, gw_task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                if gw_task.done():
                    await gw_task  # raises the gateway's own error
                drive_task = asyncio.create_task(self.driver.run(), name="simulator")
                chaos_task = asyncio.create_task(self._outage(), name="outage")
                with Live(self._view(), console=self.console, refresh_per_second=4, transient=False) as live:
                    while True:
                        if gw_task.done():
                            await gw_task
                            raise click.ClickException("the gateway stopped unexpectedly")
                        sent_all = drive_task.done()
                        # The pipeline's progress first, then the stats: a window closing in between made
                        # passings the stats may not hold yet, so its count must be the one from before.
                        cursor = gw.pipeline.cursor if gw.pipeline is not None else None
                        windows = gw.pipeline.open_windows if gw.pipeline is not None else None
                        await self._refresh()  # taken after the cursor: it includes what those reads made
                        live.update(self._view())
                        if sent_all and drained(cursor, windows, self.stats, self.gateway.state.token_session):
                            break
                        if time.monotonic() - self.t0 > o.duration_s * 3 + 60:
                            break  # never hang: the checks below will say what is missing
                        await asyncio.sleep(0.25)
                    await self._refresh()
                    live.update(self._view())
                chaos_task.cancel()
                await asyncio.gather(chaos_task, return_exceptions=True)
                emu.set_offline(False)
                drive_stats = await drive_task if drive_task.done() else DriveStats()
                if not drive_task.done():
                    drive_task.cancel()
                    await asyncio.gather(drive_task, return_exceptions=True)
            finally:
                gw.stop()
                await asyncio.wait_for(gw_task, 30)
                truth.close()
            return await self._checks(work, drive_stats, runners_seen=len({r.chip for r in reads}))
        finally:
            await emu.stop()

    async def _outage(self) -> None:
        """The 4G drops mid-race and comes back: the backlog waits in the outbox and drains after. It drops
        once passings are flowing (a duplicate window holds each back about a window), so there is a backlog."""
        assert self.emulator is not None
        if not self.o.outage:
            return
        await asyncio.sleep(self.o.duration_s * 0.25)
        give_up = time.monotonic() + self.o.duration_s
        while (p := self.gateway.pipeline) is None or p.passings_created == 0:
            if time.monotonic() > give_up:
                break
            await asyncio.sleep(0.05)
        self.emulator.set_offline(True)
        self.cloud_note = "OFFLINE (simulated 4G outage)"
        await asyncio.sleep(self.o.duration_s * 0.2)
        self.emulator.set_offline(False)
        self.cloud_note = "back online"

    async def _refresh(self) -> None:
        outbox = self.gateway.outbox
        if outbox is not None:
            with contextlib.suppress(Exception):  # the view must never take the demo down
                self.stats = await outbox.stats()

    def _view(self) -> Group:
        gw = self.gateway
        t = Table(
            title=f"rufus-gateway demo - {time.monotonic() - self.t0:5.1f} s / ~{self.o.duration_s:.0f} s",
            show_header=False,
            min_width=64,
        )
        t.add_column(style="bold")
        t.add_column()
        d = self.driver.stats if self.driver else DriveStats()
        link = gw.links.get("finish") if gw else None
        counters = gw.counters.get("finish") if gw else None
        t.add_row(
            "timer (simulated)", f"{d.sent}/{d.reads} reads sent, {d.corrupt} corrupt lines, {d.heartbeats} heartbeats"
        )
        t.add_row(
            "reader link",
            ("connected" if link and link.state.connected else "not connected")
            + (
                f", last byte {time.time() - link.state.last_byte_at:.1f} s ago"
                if link and link.state.last_byte_at
                else ""
            ),
        )
        if counters:
            t.add_row("journal", f"{counters.reads} reads journaled, {counters.rejected} lines rejected (kept)")
        if self.stats:
            age = f", oldest {self.stats.oldest_pending_age_s:.0f} s" if self.stats.oldest_pending_age_s else ""
            t.add_row(
                "outbox", f"{self.stats.pending} pending{age}, {self.stats.sent} sent, {self.stats.rejected} rejected"
            )
        up = gw.uploader.status if gw and gw.uploader else None
        if up is not None:
            t.add_row("uploader", f"{up.state}, {up.batches_sent} batches, {up.retries} retries")
        t.add_row("cloud (emulator)", self.cloud_note)
        return Group(t)

    async def _checks(self, work: Path, drive: DriveStats, runners_seen: int) -> list[Check]:
        assert self.emulator is not None
        outbox = await Store.open(work / "outbox.db", lock=False, read_only=True)
        try:
            stats = await outbox.stats()
            rows = await outbox.rows()
            session = await outbox.current_session()
        finally:
            await outbox.close()
        derived = [r for r in rows if r.state != "Moved"]
        cloud = self.emulator.state()["sessions"]
        token = session.token_session if session else None
        held = cloud.get(token, {}).get("num_passings", []) if token else []
        return [
            Check("reads the timer sent = reads journaled", drive.sent, stats.reads),
            Check("runners the timer saw = passings derived", runners_seen, len(derived)),
            Check("corrupt lines sent = lines rejected and kept", drive.corrupt, self._rejected_lines(work)),
            Check("passings in the cloud = passings derived", len(derived), len(held)),
            Check("num_passing in the cloud is exactly 1..N", list(range(1, len(derived) + 1)), held),
            Check("passings still pending", 0, stats.pending),
            Check("duplicates stored by the cloud", 0, self.emulator.state()["counts"]["inserted"] - len(held)),
        ]

    @staticmethod
    def _rejected_lines(work: Path) -> int:
        import sqlite3

        con = sqlite3.connect(f"file:{work / 'outbox.db'}?mode=ro", uri=True)
        try:
            return int(con.execute("select count(*) from rejected_lines").fetchone()[0])
        finally:
            con.close()


@click.command("demo")
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(5, 3600),
    default=60.0,
    show_default=True,
    help="Rough length of the run in seconds (the race is compressed to fit).",
)
@click.option("--runners", type=click.IntRange(1, 20000), default=200, show_default=True)
@click.option("--format", "fmt", default="csv", show_default=True, help="Protocol of the simulated timer.")
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same race.")
@click.option("--outage/--no-outage", default=True, show_default=True, help="Take the cloud offline mid-race.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the databases, truth file and log here (default: a temporary directory).",
)
def demo_cmd(duration_s: float, runners: int, fmt: str, seed: int, outage: bool, workdir: Path | None) -> None:
    """Emulator + simulated One4All race + gateway in one process: no hardware, no internet, no config."""
    if fmt not in formats.names():
        raise click.BadParameter(f"unknown format {fmt!r} (known: {', '.join(formats.names())})", param_hint="--format")
    console = Console()
    options = DemoOptions(duration_s, runners, fmt, seed, outage, workdir)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rufus-demo-")))
        else:
            work = workdir
            work.mkdir(parents=True, exist_ok=True)
        logfile = stack.enter_context(open(work / "gateway.log", "w", encoding="utf-8"))
        log_mod.configure("info", stream=logfile, json=True)
        console.print(
            f"[bold]rufus-gateway demo[/]: {runners} runners, {fmt} timer, about {duration_s:.0f} s; "
            f"cloud outage mid-race: {'yes' if outage else 'no'}"
        )
        checks = asyncio.run(Demo(options, console).run(work))
        console.print()
        table = Table(title="Summary, checked against the simulator's truth")
        table.add_column("check")
        table.add_column("expected", justify="right")
        table.add_column("actual", justify="right")
        table.add_column("")
        for c in checks:
            exp = _short(c.expected)
            act = _short(c.actual)
            table.add_row(c.what, exp, act, "[green]ok[/]" if c.ok else "[red]FAIL[/]")
        console.print(table)
        if workdir is not None:
            console.print(f"Kept in {work}: outbox.db, cloud.db, truth.jsonl, gateway.log")
        if all(c.ok for c in checks):
            console.print("[bold green]All checks passed:[/] nothing lost, nothing doubled.")
            return
        console.print("[bold red]Some checks failed.[/] See gateway.log" + (f" in {work}" if workdir else ""))
        sys.exit(1)


def _short(value: Any) -> str:
    if isinstance(value, list):
        if value and value == list(range(value[0], value[0] + len(value))):
            return f"{value[0]}..{value[-1]}"
        return f"{len(value)} values" if value else "none"
    return str(value)
