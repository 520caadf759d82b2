"""`rufus-gateway simulate`: a virtual timer of any supported make, for rehearsals and end-to-end tests."""

from __future__ import annotations

import asyncio
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from gateway.errors import GatewayError
from gateway.formats.base import ParseContext
from gateway.simulator.driver import Driver, DriveStats
from gateway.simulator.race import CHIP_STYLES, Race, chip_style_for
from gateway.simulator.truth import TruthWriter


def _zone(ctx: click.Context, param: click.Parameter, value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown IANA time zone {value!r} (e.g. Europe/Berlin)") from None


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 date-time: {value!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def summary_line(stats: DriveStats, url: str) -> str:
    acked = f", {stats.acked} acknowledged, {stats.unacked} not" if stats.acked or stats.unacked else ""
    return (
        f"{'complete' if stats.complete else 'INCOMPLETE'}: sent {stats.sent}/{stats.reads} reads to {url} "
        f"({stats.resent} re-sent{acked}, {stats.dropped} lost on the wire, {stats.refetched} sent again on request, "
        f"{stats.corrupt} corrupt lines, "
        f"{stats.heartbeats} heartbeats, "
        f"{stats.connections} connection(s))"
    )


def _run_with_progress(driver: Driver, total: int) -> DriveStats:
    """A progress bar on a terminal (reads sent); plain when piped, so logs and CI output stay clean."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("race"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("race", total=total)
        driver.progress = lambda done, _total: bar.update(task, completed=done)
        return asyncio.run(driver.run())


@click.command("simulate")
@click.option(
    "--format",
    "fmt_name",
    default="csv",
    show_default=True,
    help="Reader protocol to speak (csv, the simulated One4All's own; raceresult, mylaps, ...).",
)
@click.option(
    "--to", "url", required=True, help="tcp://host:port, tcp-listen://host:port, a serial device, file://path."
)
@click.option("--runners", type=click.IntRange(0, 100_000), default=100, show_default=True)
@click.option(
    "--speed",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Time scale: 60 = a race minute per second; 0 = as fast as possible.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same race.")
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every read sent (and acknowledged) as JSON lines, for end-to-end checks.",
)
@click.option(
    "--tz",
    "tz",
    default="UTC",
    show_default=True,
    callback=_zone,
    help="The simulated reader's local zone (for protocols that send local times).",
)
@click.option("--start", callback=_when, help="Gun time (ISO 8601); default: the first finisher crosses now.")
@click.option("--waves", type=click.IntRange(1, 100), default=None, help="Start waves (default: one per 500 runners).")
@click.option("--miss-rate", type=click.FloatRange(0, 0.9), default=0.1, show_default=True)
@click.option(
    "--corrupt-rate",
    type=click.FloatRange(0, 1),
    default=0.002,
    show_default=True,
    help="Share of reads preceded by a line of noise (line-based protocols without acks).",
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 0.5),
    default=0.0,
    show_default=True,
    help="Share of reads lost on the wire (logged by the reader, so a re-fetch can bring them back).",
)
@click.option(
    "--heartbeat",
    "heartbeat_s",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds between the reader's heartbeats (0: none).",
)
@click.option(
    "--ack-timeout",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="After the last read, how long to wait for outstanding acknowledgements.",
)
@click.option(
    "--handshake-timeout",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="How long to wait for the gateway's handshake (push mode, start) before giving up.",
)
def simulate_cmd(
    fmt_name: str,
    url: str,
    runners: int,
    speed: float,
    seed: int,
    truth_path: Path | None,
    tz: ZoneInfo,
    start: datetime | None,
    waves: int | None,
    miss_rate: float,
    corrupt_rate: float,
    drop_rate: float,
    heartbeat_s: float,
    ack_timeout: float,
    handshake_timeout: float,
) -> None:
    """Play a seeded race to a gateway as a timer of FORMAT would, over TCP, a serial line or into a file."""
    from gateway import formats

    try:
        fmt = formats.get(fmt_name)
    except GatewayError as exc:
        raise click.BadParameter(str(exc), param_hint="--format") from None
    style = chip_style_for(fmt.name)
    race_options: dict[str, Any] = {"miss_rate": miss_rate, "chip_style": style}
    race_options["waves"] = waves or max(1, math.ceil(runners / 500))
    now = datetime.now(UTC).replace(microsecond=0)
    reads = Race.generate(runners, seed, start or now, **race_options)
    if start is None and reads:  # by default the first finisher crosses two seconds from now
        gun = now + (now + timedelta(seconds=2) - reads[0].timestamp)
        reads = Race.generate(runners, seed, gun, **race_options)
    truth = None
    if truth_path is not None:
        try:
            truth = TruthWriter.open(truth_path)
        except OSError as exc:
            raise click.ClickException(f"--truth {truth_path}: {exc.strerror or exc}") from None
    ctx = ParseContext(tz=tz, reader="sim")
    try:
        driver = Driver(
            fmt,
            url,
            reads,
            speed=speed,
            truth=truth,
            ctx=ctx,
            seed=seed,
            corrupt_rate=corrupt_rate,
            drop_rate=drop_rate,
            heartbeat_s=heartbeat_s,
            ack_timeout=ack_timeout,
            handshake_timeout=handshake_timeout,
        )
    except GatewayError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    click.echo(
        f"simulating {runners} runners, {len(reads)} reads as {fmt.name} to {url} (seed {seed}, speed {speed:g})",
        err=True,
    )
    try:
        stats = _run_with_progress(driver, len(reads))
    except KeyboardInterrupt:
        click.echo("interrupted: " + summary_line(driver.stats, url), err=True)
        sys.exit(130)
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if truth is not None:
            truth.close()
    click.echo(summary_line(stats, url), err=True)
    if not stats.complete:
        sys.exit(1)


__all__ = ["CHIP_STYLES", "simulate_cmd"]
