"""The hardware-in-loop driver: plays a race's reads through a link the way a timer of that make would.

It speaks the reader side of the format's conversation (greets, answers rewinds, takes acknowledgements),
paces reads by their race time scaled by `speed`, keeps reconnecting while the gateway is away (the chaos
harness kills it on purpose), and for protocols that re-send re-sends every read the gateway has not
acknowledged on each new connection, as a real decoder does from its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.capture import CaptureWriter
from gateway.errors import ReaderError
from gateway.formats.base import Format, ParseContext, ReaderConversation
from gateway.links import Connection, open_link
from gateway.log import get_logger
from gateway.model import Read
from gateway.simulator.truth import TruthWriter, read_key

log = get_logger("gateway.simulator")

_NOISE = b"!%&()*?=<>|^_"
QUIET_S = 0.5  # with lost reads: how long the gateway must stay silent before we stop answering re-fetches
HANDSHAKE_TIMEOUT_S = 30.0  # how long a timer waits for the gateway's handshake before the simulate gives up
LINGER_S = 2.0  # after the last byte, how long to wait for the gateway to hang up before closing


@dataclass
class DriveStats:
    """What a run did; written as the truth file's summary line and printed by `simulate`."""

    reads: int = 0  # reads in the race
    sent: int = 0  # distinct reads sent at least once
    resent: int = 0  # re-sends after a reconnect (protocols with acknowledgements)
    refetched: int = 0  # reads sent again because the gateway asked (re-fetch, rewind, resume)
    acked: int = 0
    unacked: int = 0
    corrupt: int = 0
    dropped: int = 0  # lost on the wire on purpose (drop_rate): the gateway may fetch them again
    heartbeats: int = 0
    connections: int = 0
    complete: bool = False  # every read sent (and, where the protocol acks, acknowledged)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _terminator(fmt: Format, ctx: ParseContext) -> bytes:
    """The line ending a format uses, so a corrupt line is still one record (b"" if not line-based)."""
    sample = fmt.format(Read(chip="1", bib="1", timestamp=datetime(2026, 1, 1, tzinfo=UTC)), ctx)
    stripped = sample.rstrip(b"\r\n")
    return sample[len(stripped) :]


class Driver:
    def __init__(
        self,
        fmt: Format,
        url: str,
        reads: Sequence[Read],
        *,
        speed: float = 1.0,
        truth: TruthWriter | None = None,
        ctx: ParseContext | None = None,
        seed: int = 0,
        corrupt_rate: float = 0.0,
        drop_rate: float = 0.0,
        heartbeat_s: float = 5.0,
        ack_timeout: float | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
        backoff_base: float = 0.5,
        backoff_cap: float = 5.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.fmt = fmt
        self.url = url
        self.reads = list(reads)
        self.speed = speed
        self.truth = truth
        self.ctx = ctx or ParseContext(reader="simulator")
        self.heartbeat_s = heartbeat_s
        self.ack_timeout = ack_timeout
        self.handshake_timeout = handshake_timeout
        self.progress = progress
        self.rconv: ReaderConversation = fmt.reader_conversation(self.ctx)
        self.needs_ack = self.rconv.needs_ack
        self.stats = DriveStats(reads=len(self.reads))
        self.cursor = 0
        self.unacked: dict[tuple[str | None, str], Read] = {}  # insertion order = send order
        rng = random.Random(f"{seed}:corrupt")
        term = b"" if self.needs_ack else _terminator(fmt, self.ctx)
        # A corrupt line in an acknowledged protocol would stall it, and without a line end it is not one record.
        self.corrupt_before: dict[int, bytes] = {}
        if term and corrupt_rate > 0:
            for i in range(len(self.reads)):
                if rng.random() < corrupt_rate:
                    noise = bytes(rng.choice(_NOISE) for _ in range(rng.randint(6, 20)))
                    self.corrupt_before[i] = b"\x00\x7f" + noise + term
        # Reads lost on the wire (a noisy serial line): the reader numbers and logs them but the bytes never
        # arrive, so a gateway that notices the gap can fetch them again (RaceResult, Ultra, ChronoTrack).
        # Never the first or the last read: a gap is only visible between two reads the gateway did get.
        drop_rng = random.Random(f"{seed}:drop")
        self.drop: set[int] = set()
        if drop_rate > 0 and not self.needs_ack:
            self.drop = {i for i in range(1, len(self.reads) - 1) if drop_rng.random() < drop_rate}
        self._all_sent = asyncio.Event()
        self._all_acked = asyncio.Event()
        self._ready = asyncio.Event()  # the gateway's handshake arrived on the current connection
        self._abort: asyncio.Future[None] | None = None  # fails the run (no handshake): not a link error to retry
        self._one = asyncio.Lock()
        self._current: Connection | None = None
        self._link = (
            None
            if url.startswith("file://")
            else open_link(url, name="simulator", backoff_base=backoff_base, backoff_cap=backoff_cap)
        )
        self._t0_wall = 0.0
        self._last_rx = 0.0

    @property
    def link_state(self) -> Any:
        return None if self._link is None else self._link.state

    async def run(self) -> DriveStats:
        loop = asyncio.get_running_loop()
        self._t0_wall = loop.time()
        try:
            if self._link is None:
                self._to_file(Path(self.url.removeprefix("file://")))
            else:
                await self._over_link()
        finally:
            self.stats.unacked = len(self.unacked)
            everything = self.stats.sent + self.stats.dropped == len(self.reads)
            self.stats.complete = everything and (not self.needs_ack or not self.unacked)
            if self.truth is not None:
                self.truth.summary(**self.stats.as_dict(), format=self.fmt.name, needs_ack=self.needs_ack)
        return self.stats

    async def _over_link(self) -> None:
        assert self._link is not None
        self._abort = asyncio.get_running_loop().create_future()
        link_task = asyncio.create_task(self._link.run(self._handler), name="simulator:link")
        try:
            await self._until(self._all_sent.wait(), link_task)
            if self.needs_ack:
                if not self.unacked:
                    self._all_acked.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._until(self._all_acked.wait(), link_task), self.ack_timeout)
        finally:
            link_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link_task

    async def _until(self, coro: Any, link_task: asyncio.Task[None]) -> None:
        waiter = asyncio.ensure_future(coro)
        try:
            assert self._abort is not None
            await asyncio.wait({waiter, link_task, self._abort}, return_when=asyncio.FIRST_COMPLETED)
            if self._abort.done():
                self._abort.result()  # raises why the run cannot go on
            if link_task.done():
                link_task.result()  # the link gave up (a file link) or crashed: say why
                raise ReaderError("the link ended before the race was sent")
        finally:
            waiter.cancel()

    # -- one connection -------------------------------------------------------------------------------
    async def _handler(self, conn: Connection) -> None:
        old = self._current
        if old is not None:  # a timer talks to one gateway at a time: a new connection replaces the old
            await old.close()
        async with self._one:
            self._current = conn
            self.stats.connections += 1
            listener = asyncio.create_task(self._listen(conn), name="simulator:listen")
            beats = asyncio.create_task(self._heartbeats(conn), name="simulator:heartbeat")
            try:
                self.rconv.connection_started()
                self._ready.clear()
                conn.write(self.rconv.greeting())
                await self._handshake(conn, listener)
                for read in list(self.unacked.values()):
                    self._check(listener)
                    conn.write(self.rconv.encode(read))
                    self.stats.resent += 1
                    if self.truth:
                        self.truth.sent(read, resend=True)
                await conn.drain()
                while self.cursor < len(self.reads):
                    i = self.cursor
                    read = self.reads[i]
                    await self._pace(read, listener)
                    if i in self.corrupt_before:
                        raw = self.corrupt_before.pop(i)
                        conn.write(raw)
                        self.stats.corrupt += 1
                        if self.truth:
                            self.truth.corrupt(raw)
                    data = self.rconv.encode(read)
                    if self.needs_ack:
                        self.unacked[read_key(read)] = read
                    if i in self.drop:
                        self.cursor += 1
                        self.stats.dropped += 1
                        if self.truth:
                            self.truth.dropped(read)
                        continue
                    # truth first: a run killed between the two lines lists one read too many, never one too few
                    if self.truth:
                        self.truth.sent(read)
                    conn.write(data)
                    self.cursor += 1
                    self.stats.sent += 1
                    if self.progress:
                        self.progress(self.cursor, len(self.reads))
                    await conn.drain()
                await conn.drain()
                if self.drop:  # the gateway may still be asking for lost reads: answer until it goes quiet
                    loop = asyncio.get_running_loop()
                    self._last_rx = max(self._last_rx, loop.time())  # quiet counts from our last byte too
                    while not listener.done() and (left := self._last_rx + QUIET_S - loop.time()) > 0:
                        await asyncio.wait({listener}, timeout=left)
                if not self.needs_ack:
                    await self._hang_up(conn, listener)
                self._all_sent.set()
                await listener  # stay on the line: acknowledgements and rewinds still come
            finally:
                for task in (beats, listener):
                    task.cancel()
                await asyncio.gather(beats, listener, return_exceptions=True)
                if self._current is conn:
                    self._current = None

    async def _handshake(self, conn: Connection, listener: asyncio.Task[None]) -> None:
        """A real timer sends no read before the gateway's side of the handshake (RACE RESULT: SETPUSHPASSINGS;1,
        ChronoTrack: start); neither does the simulated one. No handshake in time ends the run: a gateway that
        never asks would get nothing from the real reader either, and retrying would hide that."""
        if self.rconv.ready:
            return
        await conn.drain()
        waiter = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({waiter, listener}, timeout=self.handshake_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self.rconv.ready:
            return
        self._check(listener)  # the gateway hung up: a link error, the link reconnects
        error = ReaderError(
            f"no handshake from the gateway within {self.handshake_timeout:g} s: a {self.fmt.name} reader sends "
            "nothing until the gateway asks (is the gateway speaking this format?)"
        )
        log.error("simulator: no handshake from the gateway", format=self.fmt.name, timeout_s=self.handshake_timeout)
        if self._abort is not None and not self._abort.done():
            self._abort.set_exception(error)
        raise error

    @staticmethod
    async def _hang_up(conn: Connection, listener: asyncio.Task[None]) -> None:
        """Done sending: half-close and give the gateway a moment to read it all and hang up itself."""
        if conn.write_eof():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(listener), LINGER_S)

    def _check(self, listener: asyncio.Task[None]) -> None:
        if listener.done():
            exc = None if listener.cancelled() else listener.exception()
            raise ReaderError(f"gateway hung up{f': {exc}' if exc else ''}")

    async def _pace(self, read: Read, listener: asyncio.Task[None]) -> None:
        self._check(listener)
        if self.speed <= 0 or not self.reads:
            if self.cursor % 64 == 0:
                await asyncio.sleep(0)  # as fast as possible, but let acknowledgements in
            return
        race_s = (read.timestamp - self.reads[0].timestamp).total_seconds()
        delay = self._t0_wall + race_s / self.speed - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.wait({listener}, timeout=delay)
        self._check(listener)

    async def _listen(self, conn: Connection) -> None:
        """Bytes from the gateway: acknowledgements, rewind requests. Returns at EOF."""
        while data := await conn.read():
            self._last_rx = asyncio.get_running_loop().time()
            acked, answer = self.rconv.on_bytes(data)
            if self.rconv.ready:
                self._ready.set()
            for again in self.rconv.take_resent():  # truth first, as for live reads
                self.stats.refetched += 1
                if self.truth:
                    self.truth.sent(again, resend=True, trigger="refetch")
            for read in acked:
                original = self.unacked.pop(read_key(read), None)
                if original is None:
                    continue  # an ack for a read already acknowledged (a re-send the gateway recognised)
                self.stats.acked += 1
                if self.truth:
                    self.truth.acked(original)
            if answer:
                conn.write(answer)
            if self.needs_ack and not self.unacked and self._all_sent.is_set():
                self._all_acked.set()

    async def _heartbeats(self, conn: Connection) -> None:
        if self.heartbeat_s <= 0:
            return
        while True:
            await asyncio.sleep(self.heartbeat_s)
            beat = self.rconv.heartbeat()
            if beat:
                conn.write(beat)
                self.stats.heartbeats += 1

    # -- a capture file ---------------------------------------------------------------------------------
    def _to_file(self, path: Path) -> None:
        """Write the race as a capture whose arrival times are the reads' race times (so replay paces it)."""
        try:
            f = path.open("w", encoding="ascii")
        except OSError as exc:
            raise ReaderError(f"{path}: {exc.strerror or exc}") from exc
        with f:
            out = CaptureWriter(f, format=self.fmt.name, source="simulator")
            out.write(self.rconv.greeting(), self.reads[0].timestamp if self.reads else None)
            for i, read in enumerate(self.reads):
                if i in self.corrupt_before:
                    raw = self.corrupt_before.pop(i)
                    out.write(raw, read.timestamp)
                    self.stats.corrupt += 1
                    if self.truth:
                        self.truth.corrupt(raw)
                out.write(self.rconv.encode(read), read.timestamp)
                self.cursor += 1
                self.stats.sent += 1
                if self.truth:
                    self.truth.sent(read)
        self.stats.connections = 1


async def drive(
    fmt: Format,
    url: str,
    reads: Sequence[Read],
    *,
    speed: float = 1.0,
    truth: TruthWriter | None = None,
    **options: Any,
) -> DriveStats:
    """Play `reads` to `url` as a `fmt` timer would; returns when all are sent (and acknowledged, if acked)."""
    return await Driver(fmt, url, reads, speed=speed, truth=truth, **options).run()
