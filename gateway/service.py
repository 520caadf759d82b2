"""The daemon: the only module that knows every layer. It wires readers -> journal -> pipeline -> outbox ->
uploader as named tasks in one TaskGroup, serves the local control endpoint, talks to systemd, and shuts
down in order (stop reading, flush the journal, stop the uploader between requests, checkpoint, close).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway import config as config_mod
from gateway import failpoints, formats, guards, snapshot
from gateway.aio import wait_event
from gateway.cloud.client import RufusClient, Timeouts
from gateway.control import ControlServer
from gateway.errors import ConfigError, DatabaseCorruptError, GatewayError
from gateway.formats.base import ParseContext
from gateway.guards import ClockGuard, DiskGuard
from gateway.ingest import ReaderCounters, run_reader
from gateway.lifecycle import LifecycleSettings, close_session, new_session, resolve_device, resolve_session
from gateway.lifecycle import can_read as lifecycle_can_read
from gateway.links import Link, open_link
from gateway.log import get_logger, register_secret
from gateway.model import Read
from gateway.pipeline import CURSOR_KEY, ChipMap, Pipeline, ReaderRules, Stamp
from gateway.sdnotify import Notifier, watchdog_interval
from gateway.store import JournalWriter, Store
from gateway.uploader import Uploader, UploaderSettings

if TYPE_CHECKING:
    from gateway.status.server import StatusServer

log = get_logger("gateway.service")

PIPELINE_TICK_S = 0.5  # 'strongest' windows close on the clock too, not only on the next read
LINK_FIRST_TRY_S = 2.0  # at start, how long 'running' waits for the reader links' first attempt
JOURNAL_STALL_S = 10.0  # reads queued this long without a commit: the disk or the writer is stuck


def reader_rules(settings: config_mod.Settings) -> dict[str, ReaderRules]:
    """The pipeline's per-reader rules (dedup window, chip map) from the config; a bad chip map raises.

    config.load has already read each chip map; this reads it again for use, and a file changed since then
    still gives one line naming the config and the key."""
    rules: dict[str, ReaderRules] = {}
    for r in settings.readers:
        try:
            chip_map = (
                ChipMap.load(r.chip_map, last_n=r.chip_last_n) if r.chip_map else ChipMap.empty(last_n=r.chip_last_n)
            )
        except ConfigError as exc:
            raise ConfigError(f"{settings.source}: reader {r.name!r} chip_map: {exc}", key="reader.chip_map") from None
        rules[r.name] = ReaderRules(
            dedup_window_s=r.dedup_window_s,
            dedup_mode=r.dedup_mode,  # type: ignore[arg-type]
            finished_window_s=r.finished_window_s,
            chip_map=chip_map,
            seen=r.ipico_seen,  # type: ignore[arg-type]
        )
    return rules


def stamp_of(settings: config_mod.Settings) -> Stamp:
    s = settings.session
    return Stamp(timezone=s.timezone, latitude=s.latitude, longitude=s.longitude)


def move_aside(db: Path) -> Path:
    """Rename a damaged database (and its -wal/-shm) to `<name>.damaged-<UTC time>`; returns the new path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = db.with_name(f"{db.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = db.with_name(db.name + suffix)
        if src.exists():
            src.rename(target.with_name(target.name + suffix))
    return target


NO_KEY = "no API key ([cloud] api_key or RUFUS_API_KEY): reads are journaled but nothing is uploaded"


def restart_needed(old: config_mod.Settings, new: config_mod.Settings, *, cloud_started: bool) -> list[str]:
    """The changed keys a running daemon cannot apply: links, database, listeners, log set-up, and the device
    and session identity once the lifecycle has resolved them."""
    keys: list[str] = []
    if old.readers != new.readers:
        keys.append("[[reader]]")
    if old.outbox.path != new.outbox.path:
        keys.append("[outbox] path")
    for k in ("listen", "token"):
        if getattr(old.status, k) != getattr(new.status, k):
            keys.append(f"[status] {k}")
    if old.log_level != new.log_level:
        keys.append("[log] level")
    if cloud_started:
        for f in dataclasses.fields(old.device):
            if getattr(old.device, f.name) != getattr(new.device, f.name):
                keys.append(f"[device] {f.name}")
        for k in ("token_session", "alias"):
            if getattr(old.session, k) != getattr(new.session, k):
                keys.append(f"[session] {k}")
    return keys


def make_client(c: config_mod.CloudSettings) -> RufusClient:
    total = c.connect_timeout_s + c.read_timeout_s
    timeouts = Timeouts(connect=c.connect_timeout_s, read=c.read_timeout_s, total=total)
    return RufusClient(c.base_url, c.api_key, key_header=c.api_key_header, timeouts=timeouts)


class _Sink:
    """The links' ReadSink: the group-commit journal, plus a nudge to the pipeline after each commit, and
    what was journaled to the clock guard (the readers' clocks against ours)."""

    def __init__(
        self,
        writer: JournalWriter,
        on_commit: Callable[[], None],
        observe: Callable[[str, Sequence[Read], Sequence[bool]], None] | None = None,
    ) -> None:
        self._writer = writer
        self._on_commit = on_commit
        self._observe = observe

    async def journal(self, link: str, reads: Sequence[Read]) -> Sequence[bool]:
        result = await self._writer.journal(link, reads)
        self._on_commit()
        if self._observe is not None:
            self._observe(link, reads, result)
        return result

    async def reject(self, link: str, offset: int, reason: str, raw: str) -> None:
        await self._writer.reject(link, offset, reason, raw)


@dataclass
class GatewayState:
    """What the status surfaces read (never write)."""

    started_at: float = field(default_factory=time.time)
    phase: str = "starting"  # starting, running, stopping, stopped
    deviceid: str | None = None
    token_session: str | None = None
    can_read: bool = True
    clock_suspect: bool = False
    last_watchdog_at: float | None = None
    alerts: list[str] = field(default_factory=list)


class Gateway:
    def __init__(
        self,
        settings: config_mod.Settings,
        *,
        notifier: Notifier | None = None,
        stop_requested: Callable[[], bool] | None = None,
        clock: ClockGuard | None = None,
        disk: DiskGuard | None = None,
    ) -> None:
        self.settings = settings
        # A stop asked for before this loop's handlers existed (the daemon's early signal handler remembers it)
        self._stop_requested = stop_requested or (lambda: False)
        self.notifier = notifier or Notifier()
        self.state = GatewayState()
        # Guards with the real probes unless a test gives its own (an unsynchronised clock, a full disk)
        self.clock = clock or ClockGuard(
            hold_uploads_until_synced=settings.clock.hold_uploads_until_synced, max_skew_s=settings.clock.max_skew_s
        )
        self.disk = disk or DiskGuard(settings.outbox.path, min_free_mb=settings.outbox.min_free_mb)
        self.outbox: Store | None = None
        self.writer: JournalWriter | None = None
        self.pipeline: Pipeline | None = None
        self.uploader: Uploader | None = None
        self.client: RufusClient | None = None
        self.links: dict[str, Link] = {}
        self.counters: dict[str, ReaderCounters] = {}
        self._work = asyncio.Event()
        self._stop = asyncio.Event()
        self._session_ready = asyncio.Event()
        self._reload: asyncio.Event = asyncio.Event()
        self.running = asyncio.Event()  # set once the readers are up (READY=1)
        self.status_server: StatusServer | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._core: list[asyncio.Task[Any]] = []  # every task but the readers; the journal writer first
        # Clients replaced by a reload: a request may still be in flight on one, so it is closed at shutdown
        self._retired: list[RufusClient] = []
        register_secret(settings.cloud.api_key)
        register_secret(settings.status.token)

    # -- public control ---------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        self._reload.set()

    def kick(self) -> None:
        """New reads are journaled: let the pipeline derive passings now."""
        self._work.set()

    async def mark(self, bib: str, when: datetime | None = None) -> int | None:
        """Manual entry: journal a bib the mat missed (origin manual); returns its num_passing once derived."""
        assert self.outbox is not None and self.pipeline is not None
        read = Read(chip=None, bib=bib, timestamp=(when or datetime.now(UTC)), reader="manual")
        ids = await self.outbox.journal("manual", [read], origin="manual")
        await self.pipeline.step()
        if self.uploader:
            self.uploader.notify()
        row = await self.outbox.passing_of_read(ids[0]) if ids[0] is not None else None
        return row.passing.num_passing if row else None

    # -- the local surfaces' protocol (gateway/snapshot.py) -----------------------------------------------
    def live(self) -> snapshot.Live:
        """A copy of the figures the control socket, the status page and /metrics show."""
        writer, pipeline, up = self.writer, self.pipeline, self.uploader
        status = snapshot.copy(up.status) if up is not None else None
        return snapshot.Live(
            phase=self.state.phase,
            started_at=self.state.started_at,
            deviceid=self.state.deviceid,
            token_session=self.state.token_session,
            alerts=(*self.state.alerts, *(status.alerts if status is not None else ())),
            watchdog_at=self.state.last_watchdog_at,
            readers=tuple(
                snapshot.ReaderFigures(
                    name=r.name,
                    format=r.format,
                    url=r.url,
                    link=snapshot.copy(self.links[r.name].state) if r.name in self.links else None,
                    counters=snapshot.copy(self.counters[r.name]) if r.name in self.counters else None,
                )
                for r in self.settings.readers
            ),
            journal=None if writer is None else snapshot.read_off(snapshot.JournalFigures, writer),
            pipeline=None if pipeline is None else snapshot.read_off(snapshot.PipelineFigures, pipeline),
            uploader=status,
            clock=snapshot.copy(self.clock.status),
            disk=snapshot.copy(self.disk.status),
            timezone=self.settings.session.timezone,
        )

    async def outbox_figures(self) -> snapshot.OutboxFigures | None:
        outbox = self.outbox
        if outbox is None:
            return None
        stats = await outbox.stats()
        session = await outbox.current_session()
        cursor = self.pipeline.cursor if self.pipeline is not None else None
        if cursor is None:  # before its first step (or after a commit it did not see): the stored one
            cursor = int(await outbox.get_meta(CURSOR_KEY) or 0)
        return snapshot.OutboxFigures(
            stats=stats,
            session_alias=session.alias if session else None,
            caught_up=not await outbox.reads_after(cursor, 1),  # the pipeline has derived every read
        )

    async def command(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One crew action on the running daemon: the control socket's and the status page's (POST /manual,
        /void) single path, so a bib typed on the phone is journaled exactly as `rufus-gateway mark` does."""
        outbox = self.outbox
        if outbox is None or (action == "mark" and self.pipeline is None):
            raise snapshot.NotReady()
        if action == "mark":
            when = datetime.fromisoformat(body["time"]) if body.get("time") else None
            num = await self.mark(str(body["bib"]), when)
            return {"num_passing": num, "token_session": self.state.token_session}
        if action == "prune":
            # the same explicit retention as the direct command (invariant 5), logged by prune_sent
            return {"pruned": await outbox.prune_sent(float(body["older_than_s"]))}
        if action == "device_bind":
            return {"deviceid": await self._bind(outbox, body)}
        session = await outbox.current_session()
        token = body.get("token_session") or (session.token_session if session else None)
        if action == "void":
            if token is None:
                raise GatewayError("no current session")
            return {"voided": await outbox.void(token, int(body["num_passing"]))}
        if action == "requeue":
            if body.get("rejected"):
                # every session unless one is named: a Rejected row may sit in an older one
                n = await outbox.requeue_rejected(body.get("token_session"))
                if self.uploader:
                    self.uploader.retry_now()  # the crew says the cloud is fixed: no need to wait out 'refused'
                return {"requeued": n}
            if token is None:
                raise GatewayError("no current session")
            n = await outbox.requeue(token, [int(x) for x in body["nums"]])
            if self.uploader:
                self.uploader.notify()
            return {"requeued": n}
        if action in ("session_new", "session_close"):
            if self.client is None:
                raise GatewayError("no API key configured: cannot talk to the cloud")
            if action == "session_new":
                rec = await new_session(outbox, self.client, body.get("alias"), self.state.deviceid)
                self.state.token_session = rec.token_session
                self.kick()
                return {"token_session": rec.token_session}
            if token is None:
                raise GatewayError("no current session")
            await close_session(outbox, self.client, token)
            return {"closed": token}
        raise KeyError(action)

    async def _bind(self, outbox: Store, body: Mapping[str, Any]) -> str:
        """`device bind`: the CLI's [device] values, the same rules as without a daemon (a configured or
        stored deviceid is kept, not bound again), and the daemon uses the deviceid from now on."""
        if self.client is None:
            raise GatewayError("no API key configured: cannot talk to the cloud")

        def text(key: str) -> str | None:
            value = body.get(key)
            return None if value is None else str(value)

        settings = LifecycleSettings(
            deviceid=text("deviceid"),
            serial_number=text("serial_number"),
            model=text("model"),
            device_alias=text("alias"),
            firmware=text("firmware"),
            device_type=text("type") or config_mod.DEFAULT_DEVICE_TYPE,
            patient=False,  # the crew is at the keyboard: an error now, not a retry loop
        )
        deviceid = await resolve_device(outbox, self.client, settings)
        if deviceid is None:
            raise ConfigError("[device] serial_number and model: both needed to bind a device", key="device")
        self.state.deviceid = deviceid
        log.info("device bound through the control endpoint", deviceid=deviceid)
        return deviceid

    # -- the run ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        rules = reader_rules(s)  # a bad chip map is a config error: before anything is opened
        # Handlers first: a SIGTERM while the database opens (quick_check on a big file takes a while) must
        # stop us cleanly, not kill us with the default action (systemd would record a failure).
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop), (signal.SIGHUP, self.reload)):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler)
        if self._stop_requested():
            self.stop()
        try:
            await self._open_and_run(s, rules)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _open_and_run(self, s: config_mod.Settings, rules: dict[str, ReaderRules]) -> None:
        Path(s.outbox.path).parent.mkdir(parents=True, exist_ok=True)
        await failpoints.stall("before_outbox_open")
        try:
            outbox = await Store.open(s.outbox.path)
        except DatabaseCorruptError as exc:
            # Refusing to start would crash-loop under systemd and stop the race; deleting would lose evidence.
            # So: keep the damaged file beside, start a fresh one (a session it adopts is numbered above the
            # cloud's highest, invariant 2), and say so loudly.
            kept = move_aside(Path(s.outbox.path))
            msg = f"{exc}; moved aside to {kept} and kept; starting with a fresh database"
            log.error("database damaged", error=msg)
            self.state.alerts.append(msg)
            outbox = await Store.open(s.outbox.path)
        self.outbox = outbox
        try:
            if self._stop.is_set():
                log.info("stop requested during start-up: closing without starting the readers")
                self.notifier.stopping()
            else:
                await self._run(outbox, rules)
        finally:
            self.state.phase = "stopping"
            for client in [*self._retired, *([self.client] if self.client is not None else [])]:
                await client.close()
            await outbox.close()  # checkpoints the WAL
            self.state.phase = "stopped"
            log.info("gateway stopped")

    async def _run(self, outbox: Store, rules: dict[str, ReaderRules]) -> None:
        s = self.settings
        self.writer = JournalWriter(outbox)
        self.pipeline = Pipeline(outbox, rules, stamp_of(s))
        replays = {r.name for r in s.readers if r.url.startswith("file:")}  # old timestamps by design
        sink = _Sink(
            self.writer,
            self.kick,
            lambda link, reads, fresh: None if link in replays else self.clock.observe(link, reads, fresh, time.time()),
        )
        control = ControlServer(self, s.control_socket)
        self._check_guards()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            core = self._core
            core += [
                tg.create_task(self._guard("journal", self.writer.run()), name="journal"),
                tg.create_task(self._guard("control", control.serve()), name="control"),
                tg.create_task(self._guard("watchdog", self._watchdog()), name="watchdog"),
                tg.create_task(self._guard("reload", self._reload_loop()), name="reload"),
                tg.create_task(self._guard("guards", self._guards_loop()), name="guards"),
            ]
            if s.status.listen:  # before the disk wait: the page is where the crew sees that the disk is full
                from gateway.status.server import StatusServer  # only with a page: it costs start-up time

                self.status_server = StatusServer(self, s.status.listen, s.status.token)
                core.append(tg.create_task(self._guard("status", self.status_server.serve()), name="status"))
            await self._wait_for_room()
            core.append(tg.create_task(self._guard("pipeline", self._pipeline_loop()), name="pipeline"))
            if s.cloud.api_key:
                self._start_cloud(s)
            else:
                log.warning(NO_KEY)
                self.state.alerts.append(NO_KEY)
            readers = [self._start_reader(tg, r, sink, await outbox.last_seqs(r.name)) for r in s.readers]
            await self._links_tried()
            self.state.phase = "running"
            self.running.set()
            self.notifier.ready(self._status_line())
            log.info("gateway running", readers=[r.name for r in s.readers], db=s.outbox.path)
            if outbox.check_owed:  # a clean stop left the file untouched: the open skipped the check, run it now
                core.append(tg.create_task(self._guard("integrity", self._check_aside(outbox)), name="integrity"))
            await self._stop.wait()
            # Shutdown order matters: stop taking reads, let every taken read commit, then the rest.
            self.state.phase = "stopping"
            self.notifier.stopping()
            log.info("stopping: closing reader links")
            for t in readers:
                t.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            rest = [t for t in core if t.get_name() != "journal"]  # read again: a reload may have added tasks
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            if not self.disk.status.full:  # derive what the last reads make, so a restart has less to do
                await self.pipeline.step()
            core[0].cancel()  # the journal writer flushes what it holds when cancelled

    def _start_cloud(self, s: config_mod.Settings) -> None:
        """Client, uploader and the device/session lifecycle: at start, or when a reload brings the first key."""
        assert self._tg is not None and self.outbox is not None
        self.client = make_client(s.cloud)
        self.uploader = Uploader(
            self.outbox,
            self.client,
            UploaderSettings(
                batch_size=s.cloud.batch_size,
                linger_s=s.cloud.linger_s,
                follow_active_session=s.session.follow_active_session,
                deviceid=s.device.deviceid,
                backoff_cap=s.cloud.backoff_cap_s,
            ),
            hold=lambda: self.clock.hold_reason,  # [clock] hold_uploads_until_synced
        )
        tg = self._tg
        self._core += [
            tg.create_task(self._guard("lifecycle", self._lifecycle(s)), name="lifecycle"),
            tg.create_task(self._guard("uploader", self._upload()), name="uploader"),
        ]

    async def _links_tried(self) -> None:
        """Until every reader link has made its first attempt (at most LINK_FIRST_TRY_S, or a stop): a listener
        is then bound, so 'running' (and systemd's READY) means a reader can connect. A port that is taken, a
        reader that is not there yet, is retried by the link meanwhile, not waited for."""

        async def all_tried() -> None:
            for link in self.links.values():
                await link.first_attempt.wait()

        tried = asyncio.ensure_future(all_tried())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({tried, stop}, timeout=LINK_FIRST_TRY_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tried.cancel()
            stop.cancel()
        if not done:
            slow = [name for name, link in self.links.items() if not link.first_attempt.is_set()]
            log.info("reader links still opening: running without waiting for them", links=slow)

    def _start_reader(
        self, tg: asyncio.TaskGroup, r: config_mod.ReaderSettings, sink: _Sink, last_seqs: dict[str, int]
    ) -> asyncio.Task[None]:
        fmt = formats.get(r.format)
        link = open_link(r.url, name=r.name)
        self.links[r.name] = link
        counters = ReaderCounters()
        counters.last_seq.update(last_seqs)  # so a gap spanning our own downtime is noticed and re-fetched
        self.counters[r.name] = counters
        ctx = ParseContext(tz=ZoneInfo(r.tz), reader=r.name)
        return tg.create_task(
            self._guard(
                f"reader {r.name}",
                run_reader(link, fmt, ctx, sink, counters, silence_s=r.silence_s, set_time=r.set_time),
            ),
            name=f"reader:{r.name}",
        )

    async def _guard(self, what: str, coro: Awaitable[None]) -> None:
        """No task dies silently: a crash is logged with its cause and takes the process down non-zero."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "task crashed",
                task=what,
                error=f"{exc.__class__.__name__}: {exc}",
                exc_info=not isinstance(exc, GatewayError),
            )
            raise

    async def _check_aside(self, outbox: Store) -> None:
        """The start's integrity check, after READY: the open skipped it because the file is exactly as the last
        clean stop left it (store.db.CleanStamp). Damage found now stops the daemon (exit 74, which systemd
        restarts): the next start checks the file first, keeps it aside and runs on a fresh one, instead of
        acknowledging more reads into a file it will leave."""
        t0 = time.monotonic()
        found = await outbox.check_aside()
        if found != ["ok"]:
            raise DatabaseCorruptError(
                f"database {outbox.path} failed its integrity check ({outbox.damaged}): stopping; the restart keeps "
                "it aside and starts a fresh one"
            )
        log.info("database integrity checked", db=str(outbox.path), seconds=round(time.monotonic() - t0, 2))

    async def _pipeline_loop(self) -> None:
        assert self.pipeline is not None
        while True:
            # woken by each commit, and at the earliest open window's deadline (its passing waits no tick)
            due = self.pipeline.next_deadline_s()
            wait = PIPELINE_TICK_S if due is None else min(PIPELINE_TICK_S, max(0.005, due - time.time()))
            await wait_event(self._work, wait)
            self._work.clear()
            if await self.pipeline.step() and self.uploader is not None:
                self.uploader.notify(waited=self.pipeline.last_closed_by_clock > 0)

    async def _lifecycle(self, settings: config_mod.Settings) -> None:
        """Find (or bind/create) the device and session; retried inside until the cloud answers."""
        assert self.outbox is not None
        ls = LifecycleSettings.from_settings(settings)
        # A callable, not the client: a SIGHUP with a fixed key swaps the client while this still retries.
        deviceid = await resolve_device(self.outbox, self._current_client, ls)
        self.state.deviceid = deviceid
        record = await resolve_session(self.outbox, self._current_client, ls)
        if record is not None:
            self.state.token_session = record.token_session
        self.state.can_read = lifecycle_can_read(self._current_client())
        self._session_ready.set()
        self.kick()

    def _current_client(self) -> RufusClient:
        assert self.client is not None
        return self.client

    async def _upload(self) -> None:
        assert self.uploader is not None
        await self._session_ready.wait()
        await self.uploader.run()

    async def _reload_loop(self) -> None:
        """SIGHUP: re-read the config and apply what can change while running (see `_apply`). A config that
        does not load is refused in one line naming file:line and key; the running one stays."""
        while True:
            await self._reload.wait()
            self._reload.clear()
            source = self.settings.source
            try:
                fresh = config_mod.load(None if source == "<defaults>" else source)
            except GatewayError as exc:
                log.error("reload refused: config invalid, keeping the running one", error=str(exc))
                continue
            await self._apply(fresh)

    async def _apply(self, fresh: config_mod.Settings) -> None:
        old = self.settings
        register_secret(fresh.cloud.api_key)
        register_secret(fresh.status.token)
        cloud_started = self.client is not None
        applied: list[str] = []
        restart = restart_needed(old, fresh, cloud_started=cloud_started)
        cloud = fresh.cloud
        if old.cloud.api_key and not cloud.api_key:
            # No way to upload without one: keep the running key rather than stop mid-race.
            cloud = dataclasses.replace(cloud, api_key=old.cloud.api_key)
            restart.append("[cloud] api_key (removed)")
        # What runs from now on: the new values where they apply live, the running ones where a restart is needed.
        # Device and session identity are resolved once the cloud side has started; before that (no key yet)
        # the new ones are simply used when it starts.
        device, session = fresh.device, fresh.session
        if cloud_started:
            device = old.device
            session = dataclasses.replace(session, token_session=old.session.token_session, alias=old.session.alias)
        running = dataclasses.replace(
            fresh,
            cloud=cloud,
            readers=old.readers,
            outbox=dataclasses.replace(old.outbox, min_free_mb=fresh.outbox.min_free_mb),
            status=old.status,
            log_level=old.log_level,
            device=device,
            session=session,
        )
        client_keys = ("base_url", "api_key", "api_key_header", "connect_timeout_s", "read_timeout_s")
        client_changed = [k for k in client_keys if getattr(old.cloud, k) != getattr(running.cloud, k)]
        self.settings = running
        if self.pipeline is not None and stamp_of(running) != stamp_of(old):
            self.pipeline.stamp = stamp_of(running)
            applied += [
                f"[session] {k}"
                for k in ("timezone", "latitude", "longitude")
                if getattr(old.session, k) != getattr(running.session, k)
            ]
        guard_keys = [
            f"[clock] {f.name}"
            for f in dataclasses.fields(old.clock)
            if getattr(old.clock, f.name) != getattr(running.clock, f.name)
        ]
        if old.outbox.min_free_mb != running.outbox.min_free_mb:
            guard_keys.append("[outbox] min_free_mb")
        if guard_keys:
            self.clock.hold_until_synced = running.clock.hold_uploads_until_synced
            self.clock.max_skew_s = running.clock.max_skew_s
            self.disk.status.min_free_mb = running.outbox.min_free_mb
            self._check_guards()
            applied += guard_keys
        if not cloud_started:
            if running.cloud.api_key:
                self._start_cloud(running)
                if NO_KEY in self.state.alerts:
                    self.state.alerts.remove(NO_KEY)
                applied.append("[cloud] api_key (uploads start)")
        else:
            if client_changed:
                assert self.client is not None and self.uploader is not None
                self._retired.append(self.client)
                self.client = make_client(running.cloud)
                self.uploader.update_client(self.client)  # also leaves auth_failed: a fixed key resumes
                applied += [f"[cloud] {k}" for k in client_changed]
            applied += self._update_uploader(old, running)
        if applied:
            log.info("config reloaded", applied=applied)
        else:
            log.info("config reloaded: nothing that applies while running changed")
        if restart:
            log.warning("config reloaded, but these changes take effect only after a restart", keys=restart)

    def _update_uploader(self, old: config_mod.Settings, new: config_mod.Settings) -> list[str]:
        """Push [cloud] batch_size/linger_s/backoff_cap_s and [session] follow_active_session into the running
        uploader (which replaces the state derived from them too)."""
        up = self.uploader
        assert up is not None
        changed: list[str] = []
        if new.cloud.batch_size != old.cloud.batch_size:
            changed.append("[cloud] batch_size")
        if new.cloud.linger_s != old.cloud.linger_s:
            changed.append("[cloud] linger_s")
        if new.cloud.backoff_cap_s != old.cloud.backoff_cap_s:
            changed.append("[cloud] backoff_cap_s")
        if new.session.follow_active_session != old.session.follow_active_session:
            changed.append("[session] follow_active_session")
        up.reconfigure(
            dataclasses.replace(
                up.settings,
                batch_size=new.cloud.batch_size,
                linger_s=new.cloud.linger_s,
                backoff_cap=new.cloud.backoff_cap_s,
                follow_active_session=new.session.follow_active_session,
            )
        )
        return changed

    def _status_line(self) -> str:
        pending = "?"
        if self.uploader is not None:
            pending = str(self.uploader.status.state)
        line = f"phase={self.state.phase} uploader={pending}"
        # what `systemctl status` shows: the guards' warnings first-hand, not only on the page
        warnings = [m for m in (self.disk.status.message, self.clock.status.message) if m]
        return "; ".join([line, *warnings])

    def _check_guards(self) -> None:
        """The clock and the disk, now: a change is told to systemd at once and wakes the uploader (a hold
        that ends must not wait for its next poll)."""
        changed = self.clock.check()
        changed = self.disk.check() or changed
        if changed:
            self.notifier.status(self._status_line())
            if self.uploader is not None:
                self.uploader.notify()

    async def _guards_loop(self) -> None:
        while True:
            await asyncio.sleep(guards.CHECK_INTERVAL_S)
            self._check_guards()

    async def _wait_for_room(self) -> None:
        """At start, before anything writes: a database that cannot grow (the last run ended on a full disk,
        exit 75) is waited on, alive, rather than crashed on again and again. systemd hears READY and the
        watchdog (the process is fine), STATUS= and the page say DISK FULL, and every FULL_RETRY_S the room
        is looked for again; once there is some, the readers start. Reads already taken stay where they are."""
        reason = await asyncio.to_thread(self.disk.room)
        if reason is None:
            return
        self.disk.check()
        self.disk.set_full(reason)
        alert = self.disk.status.message
        self.state.alerts.append(alert)
        self.notifier.ready(self._status_line())
        while reason is not None:
            if await wait_event(self._stop, guards.FULL_RETRY_S):
                return  # stopping while full: the shutdown path skips the writes it can skip
            reason = await asyncio.to_thread(self.disk.room)
        self.disk.check()
        self.disk.set_full(None)
        self.state.alerts.remove(alert)
        self.notifier.status(self._status_line())

    def progress_problem(self, now: float | None = None) -> str | None:
        """Why the gateway is NOT making progress, or None. Progress = this loop turns (we are running it),
        the journal writer's task is alive, and reads waiting for it get committed. Never the cloud: a 4G
        outage must not get the service killed (invariant 9)."""
        w = self.writer
        if w is None or not w.alive:
            return "journal writer not alive"
        now = time.time() if now is None else now
        last = w.last_commit_at or self.state.started_at
        if w.queued and now - last > JOURNAL_STALL_S:
            return f"{w.queued} reads waiting and no journal commit for {now - last:.0f} s"
        return None

    async def _watchdog(self) -> None:
        interval = watchdog_interval() or 5.0
        while True:
            await asyncio.sleep(interval)
            problem = self.progress_problem()
            if problem is None:
                self.state.last_watchdog_at = time.time()
                self.notifier.watchdog()
                self.notifier.status(self._status_line())
            else:  # systemd restarts us after WatchdogSec: a stuck writer must not sit on acknowledged reads
                log.error("watchdog withheld", problem=problem)
