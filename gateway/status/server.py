"""The finish-line surfaces: a status page for a phone, /status.json, Prometheus /metrics and /healthz.

They only read the gateway's plain attributes (design: "the status page and metrics only read"). Clients on
the Pi itself are always served; anyone else must present `[status] token` (header X-Status-Token or
`?token=`), and with no token configured, non-local clients are refused: a finish-line Wi-Fi is not private.
Nothing here can show the API key: it is not in any attribute read, and the page is generated from the
JSON, which passes through the same redaction as the logs.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.control import SHUTDOWN_GRACE_S
from gateway.log import get_logger, redact

if TYPE_CHECKING:
    from gateway.service import Gateway

log = get_logger("gateway.status")
OUTBOX_STATS_MAX_AGE_S = 2.0  # a phone polling every second must not turn into a query per request


def _plain(obj: Any) -> dict[str, Any]:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


def safe_url(url: str) -> str:
    """A reader URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return url


class StatusServer:
    def __init__(self, gateway: Gateway, listen: str, token: str | None) -> None:
        self.gateway = gateway
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.token = token
        self._stats: dict[str, Any] | None = None
        self._stats_at = 0.0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self.app = web.Application(middlewares=[self._guard])
        self.app.add_routes(
            [
                web.get("/", self._page),
                web.get("/status.json", self._status),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
            ]
        )
        self.bound: tuple[str, int] | None = None

    # -- access ---------------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        peer = request.remote or ""
        try:
            local = ipaddress.ip_address(peer).is_loopback
        except ValueError:
            local = False
        if not local:
            given = request.headers.get("X-Status-Token") or request.query.get("token") or ""
            if not self.token or not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.json_response({"error": "a status token is required from this address"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    # -- data -----------------------------------------------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        gw = self.gateway
        now = time.time()
        if gw.outbox is not None and (self._stats is None or now - self._stats_at > OUTBOX_STATS_MAX_AGE_S):
            try:
                self._stats = asdict(await gw.outbox.stats())
                self._stats_at = now
            except Exception as exc:  # a busy or closing database must not break the page
                log.debug("outbox stats unavailable", error=str(exc))
        readers = []
        for r in gw.settings.readers:
            link = gw.links.get(r.name)
            counters = gw.counters.get(r.name)
            entry: dict[str, Any] = {"name": r.name, "format": r.format, "url": safe_url(r.url)}
            if link is not None:
                entry |= {k: v for k, v in _plain(link.state).items()}
            if counters is not None:
                entry |= {k: v for k, v in _plain(counters).items() if k not in ("last_seq",)}
            readers.append(entry)
        writer = gw.writer
        up = gw.uploader.status if gw.uploader is not None else None
        pipeline = gw.pipeline
        alerts = list(gw.state.alerts) + (list(up.alerts) if up is not None else [])
        data = {
            "version": __version__,
            "phase": gw.state.phase,
            "uptime_s": round(now - gw.state.started_at, 1),
            "deviceid": gw.state.deviceid,
            "token_session": gw.state.token_session,
            "readers": readers,
            "journal": None
            if writer is None
            else {
                "committed": writer.committed,
                "duplicates": writer.duplicates,
                "rejected": writer.rejected,
                "batches": writer.batches,
                "last_commit_at": writer.last_commit_at,
                "alive": writer.alive,
            },
            "pipeline": None
            if pipeline is None
            else {
                "passings_created": pipeline.passings_created,
                "reads_processed": pipeline.reads_processed,
                "reads_suppressed": pipeline.reads_suppressed,
                "unmapped_chips": sorted(pipeline.unmapped_chips)[:200],
                "unmapped_count": len(pipeline.unmapped_chips),
            },
            "outbox": self._stats,
            "uploader": None if up is None else {k: v for k, v in _plain(up).items() if k != "alerts"},
            "alerts": alerts[-50:],
            "watchdog_at": gw.state.last_watchdog_at,
            "clock": asdict(gw.clock.status),
            "disk": asdict(gw.disk.status),
        }
        # Belt and braces: whatever a future field carries, a registered secret never leaves this process.
        result: dict[str, Any] = json.loads(redact(json.dumps(data, default=str)))
        return result

    # -- handlers -------------------------------------------------------------------------------------
    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(await self.snapshot())

    async def _healthz(self, _request: web.Request) -> web.Response:
        gw = self.gateway
        ok = gw.state.phase == "running" and gw.writer is not None and gw.writer.alive
        return web.json_response({"ok": ok, "phase": gw.state.phase}, status=200 if ok else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        await self.snapshot()  # refresh the cached outbox figures the collector reads
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(text=_page_html(), content_type="text/html")

    # -- lifetime -------------------------------------------------------------------------------------
    async def serve(self) -> None:
        import asyncio

        # A client stuck mid-request (a killed crew command, a phone on bad Wi-Fi) must not hold a SIGTERM
        # for aiohttp's default 60 s: systemd would SIGKILL us first.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        sockets = [s.getsockname() for s in getattr(site._server, "sockets", [])]
        if sockets:
            self.bound = (str(sockets[0][0]), int(sockets[0][1]))
        log.info("status page listening", url=f"http://{self.host}:{self.bound[1] if self.bound else self.port}/")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


@functools.cache
def _page_html() -> str:
    return resources.files("gateway.status").joinpath("page.html").read_text(encoding="utf-8")


class _Collector(Collector):
    """Prometheus metrics computed at scrape time from the gateway's attributes (no shared mutable state)."""

    def __init__(self, server: StatusServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        gw = self.server.gateway
        up = GaugeMetricFamily("rufus_gateway_up", "1 while the gateway is running", labels=["phase"])
        up.add_metric([gw.state.phase], 1.0 if gw.state.phase == "running" else 0.0)
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
            value=float(gw.writer.committed if gw.writer else 0),
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
        for name, link in gw.links.items():
            link_up.add_metric([name], 1.0 if link.state.connected else 0.0)
            last_byte.add_metric([name], float(link.state.last_byte_at or 0.0))
            since.add_metric([name], float(link.state.since or 0.0))
            counters = gw.counters.get(name)
            rejected.add_metric([name], float(counters.rejected if counters else 0))
        yield link_up
        yield rejected
        yield last_byte
        yield since
        yield from _guard_metrics(gw)
        unmapped = len(gw.pipeline.unmapped_chips) if gw.pipeline is not None else 0
        yield GaugeMetricFamily(
            "rufus_gateway_unmapped_chips",
            "Distinct chips read that are not in the chip map (sent with bib = chip)",
            value=float(unmapped),
        )
        if gw.uploader is not None:
            s = gw.uploader.status
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


def _guard_metrics(gw: Gateway) -> Iterator[Metric]:
    """The clock and disk guards (gateway/guards.py), as the page and status.json show them."""
    clock, disk = gw.clock.status, gw.disk.status
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
