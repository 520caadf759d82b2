"""Joins a link, a format's conversation and a durable sink: bytes in, journaled reads out, acks after commit.

Invariant 1 lives here: a read is acknowledged to the reader only after `sink.journal` has returned, which
it does only after a durable commit. Re-sends (the sink says "already journaled") are acknowledged too, or
the reader would keep re-sending them forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.formats.base import (
    Conversation,
    Format,
    Framer,
    ParseContext,
    ReaderHolds,
    Rejected,
    Skipped,
    parse_record,
)
from gateway.links.base import LINK_ERRORS, Connection, Link
from gateway.log import get_logger
from gateway.model import Read, format_ts

log = get_logger("gateway.ingest")

KEEPALIVE_DEFAULT_S = 30.0
REJECT_LOG_FIRST = 20
REJECT_LOG_EVERY = 1000  # protocols without a silence timeout still get an occasional keepalive
IN_FLIGHT = 2  # batches a link may have queued for the journal behind the one committing


class ReadSink(Protocol):
    async def journal(self, link: str, reads: Sequence[Read]) -> Sequence[bool]:
        """Return after a durable commit; per read True = new, False = already journaled (a re-send)."""
        ...

    async def reject(self, link: str, offset: int, reason: str, raw: str) -> None:
        """Keep a record that is not a read, for inspection."""
        ...


@dataclass
class ReaderCounters:
    """Per link, plain attributes for the status page and /metrics."""

    reads: int = 0  # new reads journaled
    resent: int = 0  # reads the reader sent again that were already journaled
    rejected: int = 0
    skipped: int = 0  # heartbeats, status lines, comments
    acks_sent: int = 0
    gaps: int = 0  # reads missing between sequence numbers (reported, re-fetched where possible)
    refetches: int = 0
    restarts: int = 0  # times a reader was seen numbering its reads from 1 again
    clock_sets: int = 0  # set-time commands sent ([reader] set_time)
    silence_drops: int = 0  # connections dropped by the silence watchdog
    connections: int = 0
    last_read_at: float | None = None
    last_reject: str | None = None
    skipped_kinds: dict[str, int] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)  # per reader id: highest sequence number seen

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SilenceError(TimeoutError):
    """No byte for longer than the protocol's heartbeat allows: the link is presumed dead."""


async def serve_connection(
    conn: Connection,
    fmt: Format,
    ctx: ParseContext,
    sink: ReadSink,
    *,
    link_name: str,
    counters: ReaderCounters,
    keepalive_s: float | None = None,
    tracker: SeqTracker | None = None,
    silence_s: float | None = None,
    set_time: bool = False,
) -> None:
    """Serve one connection until EOF; raises SilenceError (a LINK_ERROR) when the reader goes quiet.

    `silence_s` (the `[reader] silence_s` setting) overrides the protocol's own silence timeout: a csv or ipico
    reader has no heartbeat the gateway knows of, but a crew whose reader sends something every few seconds can
    still have a dead link dropped. `set_time` (`[reader] set_time`, off unless the crew opts in: it changes the
    reader's clock) sends the gateway's clock to the reader after the greeting, where the protocol can."""
    conv = fmt.conversation(ctx)
    seqs = tracker or SeqTracker(counters, link_name)
    framer = fmt.framer()
    counters.connections += 1
    greeting = conv.greeting()
    if greeting:
        conn.write(greeting)
    if set_time:
        now = datetime.now(UTC)
        command = conv.set_time(now)
        if command:
            conn.write(command)
            counters.clock_sets += 1
            log.info("reader clock set", link=link_name, peer=conn.peer, to=format_ts(now))
        elif counters.connections == 1:
            log.warning("set_time: this reader protocol has no set-time command", link=link_name, format=fmt.name)
    timeout = silence_s if silence_s is not None else conv.silence_timeout
    interval = keepalive_s or (timeout / 3 if timeout else KEEPALIVE_DEFAULT_S)
    keeper = asyncio.create_task(_keepalive(conn, conv.keepalive, interval), name=f"keepalive:{link_name}")
    acks = _Acks(conn, conv, seqs, counters, link_name)
    stopping = False
    try:
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as the read
                # completes, so a reader that keeps sending would never let shutdown stop this task.
                async with asyncio.timeout(timeout) as silence:
                    chunk = await conn.read()
            except TimeoutError:
                if not silence.expired():  # the socket's own timeout (a dead peer, ETIMEDOUT): a broken link
                    await _flush(framer, fmt, ctx, sink, link_name, counters)
                    raise
                counters.silence_drops += 1
                log.warning("reader silent: dropping the connection", link=link_name, peer=conn.peer, silence_s=timeout)
                await _flush(framer, fmt, ctx, sink, link_name, counters)
                raise SilenceError(f"no byte from {conn.peer} for {timeout:g} s") from None
            except LINK_ERRORS:
                await _flush(framer, fmt, ctx, sink, link_name, counters)
                raise
            if not chunk:
                await acks.drain()
                await _flush(framer, fmt, ctx, sink, link_name, counters)
                return
            reads: list[Read] = []
            reply = bytearray()
            for record in framer.feed(chunk):
                results, answer = conv.on_record(record)
                reply += answer
                for result in results:
                    if isinstance(result, Read):
                        reads.append(result)
                    elif isinstance(result, Rejected):
                        await _reject(sink, link_name, record.offset, result, counters)
                    elif isinstance(result, Skipped):
                        counters.skipped += 1
                        counters.skipped_kinds[result.kind] = counters.skipped_kinds.get(result.kind, 0) + 1
                        if isinstance(result, ReaderHolds):
                            reply += seqs.holds(result, conv.refetch)
            if reply:
                conn.write(bytes(reply))
            if reads:
                # durable before acknowledged: the acks go out from `acks` once this batch has committed,
                # while this loop reads and parses the next chunk
                await acks.submit(asyncio.ensure_future(sink.journal(link_name, reads)), reads)
    except asyncio.CancelledError:
        stopping = True
        if acks.stopped_us:  # the journal failed while this loop waited for the reader: surface that failure
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            assert acks.failure is not None
            raise acks.failure from None
        raise
    finally:
        await acks.close(wait=not stopping)
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


async def _flush(
    framer: Framer, fmt: Format, ctx: ParseContext, sink: ReadSink, link: str, counters: ReaderCounters
) -> None:
    """An unterminated tail (the cable pulled mid-line) is kept as a rejection, never silently lost."""
    for record in framer.flush():
        result = parse_record(fmt, record, ctx)
        if isinstance(result, Rejected):
            await _reject(sink, link, record.offset, result, counters)


async def _keepalive(conn: Connection, keepalive: Callable[[], bytes], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        data = keepalive()
        if data:
            with contextlib.suppress(Exception):  # a broken pipe shows up in the read loop, not here
                conn.write(data)


async def _reject(sink: ReadSink, link: str, offset: int, result: Rejected, counters: ReaderCounters) -> None:
    counters.rejected += 1
    counters.last_reject = result.reason
    # Every rejection is kept by the sink; the log gets the first few and then one line per thousand, so a
    # reader spewing garbage cannot fill the disk with log lines.
    if counters.rejected <= REJECT_LOG_FIRST:
        log.info("record rejected", link=link, offset=offset, reason=result.reason)
    elif counters.rejected % REJECT_LOG_EVERY == 0:
        log.warning("records still being rejected", link=link, rejected=counters.rejected, last=result.reason)
    await sink.reject(link, offset, result.reason, result.raw)


def _count(fresh: Sequence[bool], counters: ReaderCounters) -> None:
    new = sum(fresh)
    counters.reads += new
    counters.resent += len(fresh) - new
    counters.last_read_at = time.time()


class _Acks:
    """The batches a link handed to the journal, acknowledged in order as each becomes durable.

    The link's read loop submits a batch and goes on reading and parsing the next chunk while this one
    commits (at most IN_FLIGHT batches wait behind the one committing): the fsync no longer stalls the
    link. Only once a batch's commit has returned are its reads counted and acknowledged to the reader (the
    protocol's acks, then any re-fetch request), in the order they came. If the journal fails, the read
    loop gets that error: at its next submit, or, parked in a read (a reader waiting for acks sends
    nothing), by being cancelled, which serve_connection turns back into the failure.
    """

    def __init__(
        self, conn: Connection, conv: Conversation, seqs: SeqTracker, counters: ReaderCounters, link: str
    ) -> None:
        self._conn, self._conv, self._seqs, self._counters = conn, conv, seqs, counters
        self._queue: asyncio.Queue[tuple[asyncio.Future[Sequence[bool]], list[Read]]] = asyncio.Queue(IN_FLIGHT)
        self._unacked: collections.deque[asyncio.Future[Sequence[bool]]] = collections.deque()
        self._owner = asyncio.current_task()
        self._waiting = False  # the owner is in submit/drain: it sees a failure without being cancelled
        self.failure: BaseException | None = None
        self.stopped_us = False
        self._task = asyncio.create_task(self._run(), name=f"acks:{link}")

    async def _run(self) -> None:
        while True:
            fut, batch = await self._queue.get()
            try:
                fresh = await asyncio.shield(fut)  # shielded: stopping the acks must not cancel a commit
                self._unacked.popleft()
                _count(fresh, self._counters)
                out = bytearray()
                for read in batch:
                    data = self._conv.ack(read)
                    if data:
                        out += data
                        self._counters.acks_sent += 1
                if out:
                    self._conn.write(bytes(out))
                # after the acks: a re-fetch request goes out once what came is durable
                request = self._seqs.observe(batch, fresh, self._conv, self._conv.refetch)
                if request:
                    self._conn.write(request)
            except Exception as exc:
                self.failure = exc
                if not self._waiting and self._owner is not None and not self._owner.done():
                    self.stopped_us = True
                    self._owner.cancel()
                return
            self._queue.task_done()

    async def _until(self, op: Awaitable[Any]) -> None:
        step = asyncio.ensure_future(op)
        self._waiting = True
        try:
            await asyncio.wait({step, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting = False
            if not step.done():
                step.cancel()
        if not step.done() or step.cancelled():
            assert self.failure is not None  # _run only ends on a failure
            raise self.failure

    async def submit(self, fut: asyncio.Future[Sequence[bool]], batch: list[Read]) -> None:
        self._unacked.append(fut)
        await self._until(self._queue.put((fut, batch)))

    async def drain(self) -> None:
        """Until every submitted batch is durable and acknowledged."""
        await self._until(self._queue.join())

    async def close(self, *, wait: bool) -> None:
        """Stop. No acknowledgement goes out any more. With `wait` (the link broke or ended), the batches still
        committing are waited for and counted; without (the link is being stopped), they are let go: the
        journal writer commits what it was given whatever happens to this link (invariant 7)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        while self._unacked:
            fut = self._unacked.popleft()
            if not wait:
                fut.cancel()  # the submitter's wait, not the commit: JournalWriter shields that
                continue
            with contextlib.suppress(Exception, asyncio.CancelledError):
                _count(await fut, self._counters)


class SeqTracker:
    """Per link, across its connections: where each reader's numbering stands, and what was asked for again.

    `last` is the ReaderCounters' `last_seq` dict itself (the service seeds it from the journal), so the status
    surfaces and a restart see the same figures. A new read above `last + 1` reveals a gap, which is asked for
    again. A new read well below `last` is either an answer to such a request (its number lies in a requested
    range) or the reader numbering from 1 again (a new RACE RESULT file, an Ultra whose log was cleared):
    then `last` follows it down, or every later gap would go unnoticed. A read the journal already held (a
    re-send) or that the reader marks as re-sent (an Ultra rewind) says nothing about the numbering.
    """

    #: a new read at most this far below `last` is taken as late (reordered), not as a numbering restart
    RESTART_SLACK = 2
    #: requested ranges remembered per reader (the oldest are forgotten first)
    MAX_REQUESTS = 32

    def __init__(self, counters: ReaderCounters, link: str) -> None:
        self.counters = counters
        self.link = link
        self.last = counters.last_seq
        self.requested: dict[str, list[tuple[int, int]]] = {}  # per reader id: (first, last) inclusive
        self.generations: dict[str, str] = {}  # per reader id: the generation (file number) last reported

    def _request(self, key: str, first: int, count: int, refetch: Callable[[int, int], bytes]) -> bytes:
        ranges = self.requested.setdefault(key, [])
        ranges.append((first, first + count - 1))
        del ranges[: -self.MAX_REQUESTS]
        data = refetch(first, count)
        if data:
            self.counters.refetches += 1
        return data

    def _requested(self, key: str, seq: int) -> bool:
        return any(a <= seq <= b for a, b in self.requested.get(key, ()))

    def observe(
        self, reads: Sequence[Read], fresh: Sequence[bool], conv: Conversation, refetch: Callable[[int, int], bytes]
    ) -> bytes:
        """Follow the numbering over journaled reads (`fresh`: new to the journal); returns re-fetch requests."""
        out = bytearray()
        for read, new in zip(reads, fresh, strict=True):
            if read.seq is None or not new or conv.is_resend(read):
                continue
            key = read.reader or self.link
            seq = read.seq
            last = self.last.get(key)
            if last is None or seq == last + 1:
                self.last[key] = seq
            elif seq > last + 1:
                missing = seq - last - 1
                self.counters.gaps += missing
                log.warning("reads missing from the reader", link=self.link, reader=key, first=last + 1, count=missing)
                out += self._request(key, last + 1, missing, refetch)
                self.last[key] = seq
            elif self._requested(key, seq) or seq >= last - self.RESTART_SLACK:
                continue  # an answer to a re-fetch, or a read a little out of order: the numbering stands
            else:
                self.counters.restarts += 1
                log.warning("reader numbering restarted: following it", link=self.link, reader=key, was=last, now=seq)
                self.requested.pop(key, None)
                self.last[key] = seq
                if seq > 1:  # what the new numbering sent before this read may be lost; re-sends are recognised
                    out += self._request(key, 1, seq - 1, refetch)
        return bytes(out)

    def holds(self, answer: ReaderHolds, refetch: Callable[[int, int], bytes]) -> bytes:
        """The reader says it holds reads 1..count: ask for those above what we have (lost before a hang-up)."""
        if answer.reader is not None:
            key: str | None = answer.reader
        elif len(self.last) == 1:
            key = next(iter(self.last))
        else:
            key = None  # never heard from it (or several readers on one link): nothing to compare with
        if key is None:
            return b""
        last = self.last.get(key)
        if last is None:
            return b""
        n = answer.count
        previous = self.generations.get(key)
        if answer.generation is not None:
            self.generations[key] = answer.generation
        restarted = n < last or (previous is not None and answer.generation not in (None, previous))
        if restarted:
            # a new file: its numbers are not ours; fetch all of it (what the journal has is recognised)
            self.counters.restarts += 1
            log.warning(
                "reader numbering restarted: fetching its new file",
                link=self.link,
                reader=key,
                was=last,
                holds=n,
                generation=answer.generation,
            )
            self.requested.pop(key, None)
            self.last[key] = n
            return self._request(key, 1, n, refetch) if n > 0 else b""
        if n > last:
            missing = n - last
            self.counters.gaps += missing
            log.warning("reads missing from the reader", link=self.link, reader=key, first=last + 1, count=missing)
            self.last[key] = n
            return self._request(key, last + 1, missing, refetch)
        return b""


async def run_reader(
    link: Link,
    fmt: Format,
    ctx: ParseContext,
    sink: ReadSink,
    counters: ReaderCounters,
    *,
    silence_s: float | None = None,
    set_time: bool = False,
) -> None:
    """Serve the link forever (a file link: once), one conversation per connection."""

    tracker = SeqTracker(counters, link.name)  # outlives each connection: a gap can span a reconnect

    async def handler(conn: Connection) -> None:
        await serve_connection(
            conn,
            fmt,
            ctx,
            sink,
            link_name=link.name,
            counters=counters,
            tracker=tracker,
            silence_s=silence_s,
            set_time=set_time,
        )

    await link.run(handler)
