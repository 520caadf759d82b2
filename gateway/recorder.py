"""`record` captures what a real reader sends, with arrival times; `replay` plays a capture back to a gateway.

record speaks the format's gateway-side conversation (greeting, answers, acknowledgements), so a reader in
push mode starts sending and an acknowledging reader moves on; every chunk is written and flushed to the
capture before anything is acknowledged. replay reproduces the original spacing (scaled by --speed, or none
with --speed 0) and resumes where it stopped when the gateway reconnects.

It sits above links, formats and the ingest (it drives a format's conversation over a link), beside the other
commands, so links/ stays a byte mover and formats/ never reaches up into a link.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from gateway.capture import CaptureWriter, Entry, is_capture, read_capture, split_lines
from gateway.errors import GatewayError, ReaderError
from gateway.formats.base import Format, ParseContext
from gateway.ingest import ReaderCounters, serve_connection
from gateway.links import Connection, LinkState, open_link
from gateway.model import Read, format_ts


class RecordingConnection(Connection):
    """Tees every byte read into the capture (flushed) before the conversation sees it."""

    def __init__(self, inner: Connection, capture: CaptureWriter) -> None:
        super().__init__(inner.peer, LinkState())
        self._inner = inner
        self._capture = capture

    async def _read(self) -> bytes:
        data = await self._inner.read()
        if data:
            self._capture.write(data)
        return data

    def _write(self, data: bytes) -> None:
        self._inner.write(data)

    async def drain(self) -> None:
        await self._inner.drain()

    async def close(self) -> None:
        await self._inner.close()


class _CountingSink:
    """record's sink: the capture is the durable copy, so every read counts as taken once it is flushed."""

    def __init__(self) -> None:
        self.rejects = 0

    async def journal(self, link: str, reads: Sequence[Read]) -> Sequence[bool]:
        return [True] * len(reads)

    async def reject(self, link: str, offset: int, reason: str, raw: str) -> None:
        self.rejects += 1


@dataclass
class RecordStats:
    bytes: int
    entries: int
    reads: int
    rejected: int
    skipped: int


async def record(
    url: str, fmt: Format | str, out: Path, *, tz: ZoneInfo | None = None, duration: float | None = None
) -> RecordStats:
    """Capture from `url` until `duration` passes (a file:// source: until its end)."""
    from gateway import formats

    if isinstance(fmt, str):
        fmt = formats.get(fmt)
    link = open_link(url, name="record")
    ctx = ParseContext(tz=tz or ZoneInfo("UTC"), reader="record")
    counters = ReaderCounters()
    sink = _CountingSink()
    try:
        stream = out.open("w", encoding="ascii")
    except OSError as exc:
        raise ReaderError(f"{out}: {exc.strerror or exc}") from exc
    with stream:
        capture = CaptureWriter(stream, format=fmt.name, source=link.url, started=format_ts_now())

        async def handler(conn: Connection) -> None:
            await serve_connection(
                RecordingConnection(conn, capture), fmt, ctx, sink, link_name="record", counters=counters
            )

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(link.run(handler), duration)
    return RecordStats(capture.bytes, capture.entries, counters.reads, counters.rejected, counters.skipped)


def format_ts_now() -> str:
    from datetime import UTC, datetime

    return format_ts(datetime.now(UTC))


def load_entries(path: Path) -> list[Entry]:
    """A capture's entries; a plain file becomes one entry per line, all at one instant (no spacing)."""
    if not path.is_file():
        raise ReaderError(f"{path}: no such file")
    if is_capture(path):
        _header, entries = read_capture(path)
        return list(entries)
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return [Entry(now, piece) for piece in split_lines(path.read_bytes())]


def write_raw(entries: Sequence[Entry], path: Path) -> int:
    """The capture's bytes exactly as the reader sent them, without arrival times."""
    try:
        with path.open("wb") as f:
            for entry in entries:
                f.write(entry.data)
    except OSError as exc:
        raise ReaderError(f"{path}: {exc.strerror or exc}") from exc
    return sum(len(e.data) for e in entries)


async def replay(
    entries: Sequence[Entry], url: str, *, speed: float = 1.0, progress: Any = None, backoff_cap: float = 5.0
) -> int:
    """Send `entries` to `url` with their original spacing / speed; returns the bytes sent."""
    link = open_link(url, name="replay", backoff_cap=backoff_cap)
    done = asyncio.Event()
    state = {"next": 0, "sent": 0}
    loop = asyncio.get_running_loop()
    t0_wall = loop.time()
    t0 = entries[0].arrival if entries else None

    async def drain_replies(conn: Connection) -> None:
        while await conn.read():  # a gateway's greeting or acks: a capture has nobody to answer them
            pass

    async def handler(conn: Connection) -> None:
        listener = asyncio.create_task(drain_replies(conn))
        try:
            while state["next"] < len(entries):
                entry = entries[state["next"]]
                if speed > 0 and t0 is not None:
                    delay = t0_wall + (entry.arrival - t0).total_seconds() / speed - loop.time()
                    if delay > 0:
                        await asyncio.wait({listener}, timeout=delay)
                if listener.done():
                    raise ReaderError("the gateway hung up")
                conn.write(entry.data)
                await conn.drain()
                state["next"] += 1
                state["sent"] += len(entry.data)
                if progress is not None:
                    progress(len(entry.data))
            await conn.drain()
            if conn.write_eof():  # half-close, so the gateway reads everything before we close (no RST)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(listener), 2.0)
            done.set()
            await listener
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    run = asyncio.create_task(link.run(handler))
    waiter = asyncio.create_task(done.wait())
    try:
        await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if run.done() and not done.is_set():
            run.result()
            raise ReaderError(f"{url}: the link ended before the capture was sent")
    finally:
        for t in (run, waiter):
            t.cancel()
        await asyncio.gather(run, waiter, return_exceptions=True)
    return state["sent"]


def _zone(ctx: click.Context, param: click.Parameter, value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown IANA time zone {value!r}") from None


@click.command("record")
@click.option("--from", "url", required=True, help="The reader: tcp://host:port, tcp-listen://..., a serial device.")
@click.option("--format", "fmt_name", required=True, help="Its protocol (for the greeting and acknowledgements).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Capture file to write.")
@click.option("--tz", default="UTC", show_default=True, callback=_zone, help="The reader's local zone.")
@click.option("--duration", type=click.FloatRange(0, min_open=True), help="Stop after this many seconds.")
def record_cmd(url: str, fmt_name: str, out: Path, tz: ZoneInfo, duration: float | None) -> None:
    """Capture a reader's raw records with arrival times (Ctrl-C to stop); `replay` plays them back."""
    click.echo(f"recording {url} ({fmt_name}) to {out}; Ctrl-C to stop", err=True)
    started = time.monotonic()
    try:
        stats = asyncio.run(record(url, fmt_name, out, tz=tz, duration=duration))
    except KeyboardInterrupt:
        click.echo(f"stopped after {time.monotonic() - started:.0f} s; capture in {out}", err=True)
        return
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"recorded {stats.bytes} bytes in {stats.entries} lines: {stats.reads} reads, {stats.rejected} rejected, "
        f"{stats.skipped} skipped, to {out}",
        err=True,
    )


@click.command("replay")
@click.argument("capture", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "url", required=True, help="The gateway: tcp://host:port, tcp-listen://..., a serial device.")
@click.option(
    "--speed",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="1 = original spacing, 10 = ten times faster, 0 = as fast as possible.",
)
def replay_cmd(capture: Path, url: str, speed: float) -> None:
    """Play a capture back to a gateway as the reader sent it."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    try:
        entries = load_entries(capture)
        if url.startswith("file://"):  # the raw byte stream, e.g. for `rufus-gateway parse`
            sent = write_raw(entries, Path(url.removeprefix("file://")))
            click.echo(f"wrote {len(entries)} lines, {sent} bytes from {capture} to {url}", err=True)
            return
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
    total = sum(len(e.data) for e in entries)
    console = Console(stderr=True)
    columns = (TextColumn("replay"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("replay", total=total)
        try:
            sent = asyncio.run(replay(entries, url, speed=speed, progress=lambda n: bar.advance(task, n)))
        except KeyboardInterrupt:
            sys.exit(130)
        except GatewayError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"replayed {len(entries)} lines, {sent} bytes from {capture} to {url}", err=True)
