"""The finish-line surfaces: a status page for a phone, /status.json, Prometheus /metrics and /healthz.

They only read the gateway's plain attributes (design: "the status page and metrics only read"). Clients on
the Pi itself are always served; anyone else must present `[status] token` (header X-Status-Token, or
`?token=` once: the answer sets an HttpOnly SameSite=Strict cookie and the page drops the token from its
address), and with no token configured, non-local clients are refused: a finish-line Wi-Fi is not private.
The page is live: `/events` pushes each change of the snapshot as a Server-Sent Event (coalesced, at most
EVENTS_PER_S a second), so a phone never polls. The access log names the path, never the query string.
Nothing here can show the API key: it is not in any attribute read, and the page is generated from the
JSON, which passes through the same redaction as the logs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hmac
import ipaddress
import json
import re
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.control import SHUTDOWN_GRACE_S
from gateway.errors import GatewayError
from gateway.log import get_logger, redact
from gateway.snapshot import Live, NotReady, Surface

log = get_logger("gateway.status")
OUTBOX_STATS_MAX_AGE_S = 2.0  # a phone polling every second must not turn into a query per request
COOKIE = "rufus_status"
EVENTS_PER_S = 4  # the snapshot is compared this often; a burst of reads becomes one event per tick
KEEPALIVE_S = 15.0  # a comment line on a quiet stream, so a phone's Wi-Fi or a proxy does not drop it
RATE_WINDOW_S = 60.0
_SET_COOKIE = web.RequestKey("set_cookie", bool)
# What the page takes as a bib: what is printed on a race number (digits, letters, a dash), no spaces
BIB_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,11}")
CLOCK_TIME_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d)(?:\.(\d{1,6}))?)?")
FUTURE_TOLERANCE_S = 2.0  # a time typed "now" on a phone a second ahead of the Pi is not in the future
# keys that change on every look without anything happening: not a reason to push an event
_VOLATILE = ("uptime_s", "watchdog_at", "now")


class AccessLogger(AbstractAccessLogger):
    """One line per request with the path only: `?token=` must never reach a log line."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        get_logger("gateway.status.access").debug(
            "status request",
            method=request.method,
            path=request.path,
            status=response.status,
            peer=request.remote,
            ms=round(time * 1000, 1),
        )


def safe_url(url: str) -> str:
    """A reader URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return url


class StatusServer:
    # The Pi itself is served without a token (the crew's curl over ssh); a test turns this off to see what a
    # phone on the Wi-Fi sees.
    trust_loopback = True

    def __init__(self, gateway: Surface, listen: str, token: str | None) -> None:
        self.gateway = gateway
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.token = token
        self._stats: dict[str, Any] | None = None
        self._stats_at = 0.0
        self._alias: str | None = None
        self._caught_up: bool | None = None
        self._fingerprint: tuple[Any, ...] | None = None
        self._samples: dict[str, collections.deque[tuple[float, int]]] = {}
        # the latest snapshot pushed to /events, its number, and the condition the streams wait on
        self._latest: dict[str, Any] | None = None
        self._latest_key = ""
        self._version = 0
        self._changed = asyncio.Condition()
        self._subscribers = 0
        self._ticker: asyncio.Task[None] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self.app = web.Application(middlewares=[self._guard])
        self.app.add_routes(
            [
                web.get("/", self._page),
                web.get("/status.json", self._status),
                web.get("/events", self._events),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.post("/manual", self._manual),
                web.post("/void", self._void),
            ]
        )
        self.app.on_response_prepare.append(self._set_cookie)
        self.app.on_cleanup.append(self._stop_ticker)
        self.bound: tuple[str, int] | None = None

    # -- access ---------------------------------------------------------------------------------------
    def _token_of(self, request: web.Request) -> tuple[str, str]:
        """The token the client presented and how: header, cookie or query ("" when none)."""
        for how, given in (
            ("query", request.query.get("token")),  # given now: wins over an old cookie
            ("header", request.headers.get("X-Status-Token")),
            ("cookie", request.cookies.get(COOKIE)),
        ):
            if given:
                return given, how
        return "", ""

    def _same_origin(self, request: web.Request, how: str) -> bool:
        """A write must come from this page, not from another site riding on the phone's cookie."""
        origin = request.headers.get("Origin")
        if origin is not None:
            return origin == f"{request.scheme}://{request.host}"
        if how == "header":  # a custom header cannot be sent cross-site without a preflight we never answer
            return True
        return request.headers.get("Sec-Fetch-Site") == "same-origin"

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        peer = request.remote or ""
        try:
            local = self.trust_loopback and ipaddress.ip_address(peer).is_loopback
        except ValueError:
            local = False
        given, how = self._token_of(request)
        token_ok = bool(self.token) and hmac.compare_digest(given.encode(), (self.token or "").encode())
        if request.method == "POST":
            # writes need the token once one is configured, even from the Pi itself
            if not (token_ok or (local and not self.token)):
                return web.json_response({"error": "a status token is required to change anything"}, status=401)
            if not self._same_origin(request, how):
                return web.json_response({"error": "refused: not sent by this page (origin check)"}, status=403)
        elif not (token_ok or local):
            return web.json_response({"error": "a status token is required from this address"}, status=401)
        if token_ok and how == "query":
            request[_SET_COOKIE] = True
            if request.path == "/":
                # the token leaves the address bar (and the phone's history); the cookie carries it from now on
                redirect = web.Response(status=303, headers={"Location": "/"})
                await self._set_cookie(request, redirect)
                return redirect
        response: web.StreamResponse = await handler(request)
        return response

    async def _set_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.get(_SET_COOKIE) and self.token:
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")

    # -- data -----------------------------------------------------------------------------------------
    @staticmethod
    def _cheap_fingerprint(live: Live) -> tuple[Any, ...]:
        """In-memory figures that move when reads, passings or uploads do: a change refreshes the outbox
        figures at once instead of waiting out their cache."""
        up = live.uploader
        return (
            live.journal.committed if live.journal else None,
            live.pipeline.passings_created if live.pipeline else None,
            live.pipeline.reads_processed if live.pipeline else None,
            live.pipeline.open_windows if live.pipeline else None,
            up.passings_sent if up else None,
            up.rejected if up else None,
            up.state if up else None,
            live.token_session,
        )

    async def _refresh_stats(self, live: Live, now: float, force: bool) -> None:
        fingerprint = self._cheap_fingerprint(live)
        if fingerprint != self._fingerprint:
            force = True
        if not force and self._stats is not None and now - self._stats_at <= OUTBOX_STATS_MAX_AGE_S:
            return
        try:
            figures = await self.gateway.outbox_figures()
        except Exception as exc:  # a busy or closing database must not break the page
            log.debug("outbox stats unavailable", error=str(exc))
            return
        if figures is None:  # the outbox is not open yet
            return
        self._stats = asdict(figures.stats)
        self._alias = figures.session_alias
        self._caught_up = figures.caught_up
        self._stats_at = now
        self._fingerprint = fingerprint

    def _sample(self, live: Live, now: float) -> None:
        for reader in live.readers:
            if reader.counters is None:
                continue
            samples = self._samples.setdefault(reader.name, collections.deque())
            samples.append((now, reader.counters.reads))
            # keep one sample at least RATE_WINDOW_S old: the baseline of "reads in the last minute"
            while len(samples) > 1 and samples[1][0] <= now - RATE_WINDOW_S:
                samples.popleft()

    def _reads_last_min(self, name: str, reads: int) -> int:
        samples = self._samples.get(name)
        if not samples:
            return 0
        return max(0, reads - samples[0][1])

    def _pack_up(self, data: dict[str, Any]) -> dict[str, Any]:
        """One answer to "can we pack up?": every passing derived is Sent and nothing waits anywhere."""
        why: list[str] = []
        stats = data["outbox"]
        if data["phase"] != "running":
            why.append(f"the gateway is {data['phase']}")
        if stats is None:
            why.append("outbox figures not available yet")
        else:
            if stats["pending"]:
                why.append(f"{stats['pending']} passing(s) not yet in the cloud")
            if stats["rejected"]:
                why.append(f"{stats['rejected']} passing(s) rejected by the cloud: see `rufus-gateway outbox list`")
        if self._caught_up is not True:
            why.append("reads still waiting to become passings" + ("" if data["token_session"] else " (no session)"))
        pipeline = data["pipeline"]
        if pipeline is not None and pipeline["open_windows"]:
            why.append(f"{pipeline['open_windows']} bib(s) still inside their dedup window")
        if data["uploader"] is None:
            why.append("no API key configured: nothing is uploaded")
        return {"ok": not why, "why": why}

    async def snapshot(self, *, fresh: bool = False) -> dict[str, Any]:
        live = self.gateway.live()
        now = time.time()
        await self._refresh_stats(live, now, fresh)
        self._sample(live, now)
        readers = []
        for r in live.readers:
            entry: dict[str, Any] = {"name": r.name, "format": r.format, "url": safe_url(r.url)}
            if r.link is not None:
                entry |= asdict(r.link)
            if r.counters is not None:
                entry |= {k: v for k, v in asdict(r.counters).items() if k not in ("last_seq",)}
                entry["reads_last_min"] = self._reads_last_min(r.name, r.counters.reads)
            readers.append(entry)
        pipeline = live.pipeline
        data = {
            "version": __version__,
            "phase": live.phase,
            "uptime_s": round(now - live.started_at, 1),
            "now": round(now, 3),  # the Pi's clock: the page counts ages from it, not from the phone's
            "deviceid": live.deviceid,
            "token_session": live.token_session,
            "session_alias": self._alias,
            "readers": readers,
            "journal": None if live.journal is None else asdict(live.journal),
            "pipeline": None
            if pipeline is None
            else {
                "passings_created": pipeline.passings_created,
                "reads_processed": pipeline.reads_processed,
                "reads_suppressed": pipeline.reads_suppressed,
                "reads_dropped_seen": pipeline.reads_dropped_seen,
                "open_windows": pipeline.open_windows,
                "unmapped_chips": sorted(pipeline.unmapped_chips)[:200],
                "unmapped_count": len(pipeline.unmapped_chips),
            },
            "outbox": self._stats,
            "uploader": None
            if live.uploader is None
            else {k: v for k, v in asdict(live.uploader).items() if k != "alerts"},
            "alerts": list(live.alerts[-50:]),
            "watchdog_at": live.watchdog_at,
            "clock": asdict(live.clock),
            "disk": asdict(live.disk),
        }
        data["pack_up"] = self._pack_up(data)
        # Belt and braces: whatever a future field carries, a registered secret never leaves this process.
        result: dict[str, Any] = json.loads(redact(json.dumps(data, default=str)))
        return result

    # -- live -----------------------------------------------------------------------------------------
    async def _tick(self) -> None:
        """Compare the snapshot EVENTS_PER_S times a second while a page listens (only sample the reader
        counters otherwise), and wake the streams when it changed: a burst of reads is one event."""
        while True:
            if self._subscribers:
                await self._publish(await self.snapshot())
            else:
                self._sample(self.gateway.live(), time.time())
            await asyncio.sleep(1 / EVENTS_PER_S)

    async def _publish(self, snap: dict[str, Any]) -> None:
        key = json.dumps({k: v for k, v in snap.items() if k not in _VOLATILE}, sort_keys=True)
        if key != self._latest_key:
            async with self._changed:
                self._latest, self._latest_key = snap, key
                self._version += 1
                self._changed.notify_all()

    def _start_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="status-events")

    async def _stop_ticker(self, _app: web.Application | None = None) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    def _newer(self, seen: int) -> bool:
        return self._version != seen

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        self._subscribers += 1
        self._start_ticker()
        try:
            # the current state at once (a reconnecting phone must not wait for the next change)
            snap = await self.snapshot(fresh=True)
            await self._publish(snap)
            seen = self._version
            await response.write(b"retry: 2000\n" + _event(snap))
            while True:
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._changed.wait_for(functools.partial(self._newer, seen)), KEEPALIVE_S
                        )
                    latest, version = self._latest, self._version
                if version == seen or latest is None:
                    await response.write(b": keepalive\n\n")
                    continue
                seen = version
                await response.write(_event(latest))
        except (ConnectionResetError, ConnectionError):
            pass  # the phone went away
        finally:
            self._subscribers -= 1
        return response

    # -- manual entry -------------------------------------------------------------------------------
    async def _manual(self, request: web.Request) -> web.Response:
        """A bib the mat missed, typed on the phone: checked here, then the control socket's own `mark`
        (Surface.command), so it is journaled and derived exactly like `rufus-gateway mark`."""
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        bib = str(body.get("bib") or "").strip()
        if not bib:
            return _bad("bib: type the bib the mat missed")
        if not BIB_RE.fullmatch(bib):
            return _bad(f"bib: {bib[:40]!r} is not a bib (digits and letters, at most 12, no spaces)")
        now = datetime.now(UTC)
        try:
            when = self._parse_time(body.get("time"), body.get("utc_offset_min"), now)
        except ValueError as exc:
            return _bad(f"time: {exc}")
        if when is not None and (when - now).total_seconds() > FUTURE_TOLERANCE_S:
            local = when.astimezone(self._zone(body.get("utc_offset_min")))
            return _bad(
                f"time: {local:%H:%M:%S} is in the future (the gateway's clock is behind it); leave it empty for now"
            )
        try:
            result = await self.gateway.command("mark", {"bib": bib, "time": when.isoformat() if when else None})
        except NotReady as exc:
            return web.json_response({"error": str(exc)}, status=503)
        except GatewayError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        self._fingerprint = None  # the next event shows it
        log.info("manual entry from the status page", bib=bib, num_passing=result.get("num_passing"))
        return web.json_response({"bib": bib, "time": (when or now).isoformat()} | result)

    async def _void(self, request: web.Request) -> web.Response:
        """Take back a mistyped manual entry: `mark --void`'s rule (Pending, manual, never sent)."""
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        raw = str(body.get("num_passing") or "").strip().lstrip("#")
        if not raw.isdigit():
            return _bad(f"num_passing: {raw[:40]!r} is not a passing number")
        num = int(raw)
        try:
            result = await self.gateway.command("void", {"num_passing": num})
        except NotReady as exc:
            return web.json_response({"error": str(exc)}, status=503)
        except GatewayError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        if not result["voided"]:
            return web.json_response({"error": f"#{num} is not a Pending manual passing: not voided"}, status=409)
        self._fingerprint = None
        return web.json_response({"voided": num})

    def _zone(self, utc_offset_min: Any) -> tzinfo:
        """The zone a clock time typed on the phone is in: the phone's own offset when the page sends it,
        else [session] timezone, else UTC."""
        if isinstance(utc_offset_min, int | float) and not isinstance(utc_offset_min, bool):
            if abs(utc_offset_min) <= 18 * 60:
                return timezone(timedelta(minutes=utc_offset_min))
        name = self.gateway.live().timezone
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                pass
        return UTC

    def _parse_time(self, text: Any, utc_offset_min: Any, now: datetime) -> datetime | None:
        """Empty: now (None). 09:15:02 (or 09:15, 09:15:02.250): today on the phone's clock. Or ISO 8601
        with a zone, as `mark --time` takes it."""
        if text is None or not str(text).strip():
            return None
        text = str(text).strip()
        clock = CLOCK_TIME_RE.fullmatch(text)
        if clock:
            zone = self._zone(utc_offset_min)
            h, m, sec, frac = clock.groups()
            day = now.astimezone(zone)
            micro = int((frac or "0").ljust(6, "0"))
            local = day.replace(hour=int(h), minute=int(m), second=int(sec or 0), microsecond=micro)
            return local.astimezone(UTC)
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text[:40]!r} is not a time: type 09:15:02 (or leave it empty for now)") from None
        if ts.tzinfo is None:
            raise ValueError(f"{text[:40]!r} has no zone: type 09:15:02, or 2026-05-03T09:15:02+02:00")
        return ts.astimezone(UTC)

    # -- handlers -------------------------------------------------------------------------------------
    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(await self.snapshot())

    async def _healthz(self, _request: web.Request) -> web.Response:
        live = self.gateway.live()
        return web.json_response({"ok": live.healthy, "phase": live.phase}, status=200 if live.healthy else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        await self.snapshot()  # refresh the cached outbox figures the collector reads
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(text=_page_html(), content_type="text/html")

    # -- lifetime -------------------------------------------------------------------------------------
    @staticmethod
    def runner_options() -> dict[str, Any]:
        """How the app is run (the tests' server uses the same): the access log without query strings."""
        return {"access_log_class": AccessLogger, "handle_signals": False, "shutdown_timeout": SHUTDOWN_GRACE_S}

    async def serve(self) -> None:
        # A client stuck mid-request (a killed crew command, a phone on bad Wi-Fi) must not hold a SIGTERM
        # for aiohttp's default 60 s: systemd would SIGKILL us first.
        runner = web.AppRunner(self.app, **self.runner_options())
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._start_ticker()  # samples the reader counters from the start: reads in the last minute
        sockets = [s.getsockname() for s in getattr(site._server, "sockets", [])]
        if sockets:
            self.bound = (str(sockets[0][0]), int(sockets[0][1]))
        log.info("status page listening", url=f"http://{self.host}:{self.bound[1] if self.bound else self.port}/")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _bad("the request is not JSON")
    if not isinstance(body, dict):
        return _bad("the request is not a JSON object")
    return body


def _event(snapshot: dict[str, Any]) -> bytes:
    return b"event: status\ndata: " + json.dumps(snapshot, separators=(",", ":")).encode() + b"\n\n"


@functools.cache
def _page_html() -> str:
    return resources.files("gateway.status").joinpath("page.html").read_text(encoding="utf-8")


class _Collector(Collector):
    """Prometheus metrics computed at scrape time from one `Live` snapshot (no shared mutable state)."""

    def __init__(self, server: StatusServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        live = self.server.gateway.live()
        up = GaugeMetricFamily("rufus_gateway_up", "1 while the gateway is running", labels=["phase"])
        up.add_metric([live.phase], 1.0 if live.phase == "running" else 0.0)
        yield up
        stats = self.server._stats or {}
        outbox = GaugeMetricFamily("rufus_gateway_outbox_passings", "Passings in the outbox by state", labels=["state"])
        for state in ("pending", "sent", "rejected"):
            outbox.add_metric([state], float(stats.get(state) or 0))
        yield outbox
        age = stats.get("oldest_pending_age_s")
        yield GaugeMetricFamily(
            "rufus_gateway_oldest_pending_age_seconds", "Age of the oldest Pending passing", value=float(age or 0.0)
        )
        yield CounterMetricFamily(
            "rufus_gateway_reads_journaled",
            "Reads committed to the journal",
            value=float(live.journal.committed if live.journal else 0),
        )
        link_up = GaugeMetricFamily(
            "rufus_gateway_reader_connected", "1 while a reader link is connected", labels=["reader"]
        )
        rejected = CounterMetricFamily(
            "rufus_gateway_reader_rejected_lines", "Unreadable lines kept", labels=["reader"]
        )
        last_byte = GaugeMetricFamily(
            "rufus_gateway_reader_last_byte_timestamp_seconds",
            "Unix time of the last byte from a reader (0: none yet)",
            labels=["reader"],
        )
        since = GaugeMetricFamily(
            "rufus_gateway_reader_state_since_timestamp_seconds",
            "Unix time the reader link last went up or down",
            labels=["reader"],
        )
        for reader in live.readers:
            link, name = reader.link, reader.name
            if link is None:  # not opened yet
                continue
            link_up.add_metric([name], 1.0 if link.connected else 0.0)
            last_byte.add_metric([name], float(link.last_byte_at or 0.0))
            since.add_metric([name], float(link.since or 0.0))
            rejected.add_metric([name], float(reader.counters.rejected if reader.counters else 0))
        yield link_up
        yield rejected
        yield last_byte
        yield since
        yield from _guard_metrics(live)
        unmapped = len(live.pipeline.unmapped_chips) if live.pipeline is not None else 0
        yield GaugeMetricFamily(
            "rufus_gateway_unmapped_chips",
            "Distinct chips read that are not in the chip map (sent with bib = chip)",
            value=float(unmapped),
        )
        if live.uploader is not None:
            s = live.uploader
            yield CounterMetricFamily(
                "rufus_gateway_passings_sent", "Passings acknowledged by the cloud", value=float(s.passings_sent)
            )
            yield CounterMetricFamily(
                "rufus_gateway_upload_retries", "Upload attempts that failed", value=float(s.retries)
            )
            current = GaugeMetricFamily("rufus_gateway_uploader_state", "Current uploader state", labels=["state"])
            current.add_metric([s.state], 1.0)
            yield current
            last = s.last_success_at
            yield GaugeMetricFamily(
                "rufus_gateway_last_upload_timestamp_seconds", "Unix time of the last 2xx", value=float(last or 0.0)
            )


def _guard_metrics(live: Live) -> Iterator[Metric]:
    """The clock and disk guards (gateway/guards.py), as the page and status.json show them."""
    clock, disk = live.clock, live.disk
    yield GaugeMetricFamily(
        "rufus_gateway_clock_ok",
        "1 when the system clock is synchronised (or cannot tell) and not before the release date",
        value=1.0 if clock.ok else 0.0,
    )
    if clock.synced is not None:
        yield GaugeMetricFamily(
            "rufus_gateway_clock_synced",
            "1 when the kernel says the clock is synchronised",
            value=1.0 if clock.synced else 0.0,
        )
    yield GaugeMetricFamily(
        "rufus_gateway_clock_uploads_held",
        "1 while uploads wait for a trusted clock",
        value=1.0 if clock.hold_uploads else 0.0,
    )
    skew = GaugeMetricFamily(
        "rufus_gateway_reader_clock_skew_seconds",
        "Reader clock minus gateway clock, from its freshest read of the last minute",
        labels=["reader"],
    )
    for reader, value in sorted(clock.reader_skew_s.items()):
        skew.add_metric([reader], float(value))
    yield skew
    yield GaugeMetricFamily(
        "rufus_gateway_disk_free_bytes", "Free space on the database's filesystem", value=disk.free_mb * 1e6
    )
    yield GaugeMetricFamily("rufus_gateway_disk_low", "1 below [outbox] min_free_mb", value=1.0 if disk.low else 0.0)
    yield GaugeMetricFamily(
        "rufus_gateway_disk_full",
        "1 while the database cannot grow (no read is taken)",
        value=1.0 if disk.full else 0.0,
    )
