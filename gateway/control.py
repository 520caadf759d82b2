"""The daemon's local control endpoint: an HTTP API on a unix socket beside the database.

One writer (invariant 8): while the daemon runs, the crew's writing commands (`mark`, `outbox requeue|prune`,
`session new|close`, `device bind`) go through here instead of opening the database themselves. A unix socket
is local by construction and guarded by file permissions, so it needs no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from gateway.errors import GatewayError
from gateway.log import get_logger

if TYPE_CHECKING:
    from gateway.service import Gateway

log = get_logger("gateway.control")
SHUTDOWN_GRACE_S = 1.0  # at stop, how long an unfinished request may hold us


class ControlServer:
    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway = gateway
        self.path = path
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/ping", self._ping),
                web.post("/mark", self._mark),
                web.post("/void", self._void),
                web.post("/requeue", self._requeue),
                web.post("/session/new", self._session_new),
                web.post("/session/close", self._session_close),
                web.post("/device/bind", self._device_bind),
                web.post("/prune", self._prune),
            ]
        )

    async def serve(self) -> None:
        # A client stuck mid-request (a killed crew command, a phone on bad Wi-Fi) must not hold a SIGTERM
        # for aiohttp's default 60 s: systemd would SIGKILL us first.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a stale socket of a killed daemon; the db lock already proved we are alone
        site = web.UnixSite(runner, self.path)
        await site.start()
        os.chmod(self.path, 0o660)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _ping(self, _request: web.Request) -> web.Response:
        return web.json_response({"pid": os.getpid(), "phase": self.gateway.state.phase})

    async def _call(self, request: web.Request, action: str) -> web.Response:
        try:
            body: dict[str, Any] = await request.json() if request.can_read_body else {}
            result = await self._dispatch(action, body)
        except GatewayError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        return web.json_response(result)

    async def _dispatch(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        if action == "device_bind":
            return {"deviceid": await self._bind(body)}
        return await dispatch(self.gateway, action, body)

    async def _bind(self, body: dict[str, Any]) -> str:
        """`device bind`: the CLI's [device] values, the same rules as without a daemon (a configured or
        stored deviceid is kept, not bound again), and the daemon uses the deviceid from now on."""
        from gateway import lifecycle
        from gateway.config import DEFAULT_DEVICE_TYPE
        from gateway.errors import ConfigError

        gw = self.gateway
        assert gw.outbox is not None
        if gw.client is None:
            raise GatewayError("no API key configured: cannot talk to the cloud")

        def text(key: str) -> str | None:
            value = body.get(key)
            return None if value is None else str(value)

        settings = lifecycle.LifecycleSettings(
            deviceid=text("deviceid"),
            serial_number=text("serial_number"),
            model=text("model"),
            device_alias=text("alias"),
            firmware=text("firmware"),
            device_type=text("type") or DEFAULT_DEVICE_TYPE,
            patient=False,  # the crew is at the keyboard: an error now, not a retry loop
        )
        deviceid = await lifecycle.resolve_device(gw.outbox, gw.client, settings)
        if deviceid is None:
            raise ConfigError("[device] serial_number and model: both needed to bind a device", key="device")
        gw.state.deviceid = deviceid
        log.info("device bound through the control endpoint", deviceid=deviceid)
        return deviceid

    async def _device_bind(self, request: web.Request) -> web.Response:
        return await self._call(request, "device_bind")

    async def _prune(self, request: web.Request) -> web.Response:
        return await self._call(request, "prune")

    async def _mark(self, request: web.Request) -> web.Response:
        return await self._call(request, "mark")

    async def _void(self, request: web.Request) -> web.Response:
        return await self._call(request, "void")

    async def _requeue(self, request: web.Request) -> web.Response:
        return await self._call(request, "requeue")

    async def _session_new(self, request: web.Request) -> web.Response:
        return await self._call(request, "session_new")

    async def _session_close(self, request: web.Request) -> web.Response:
        return await self._call(request, "session_close")


async def dispatch(gw: Gateway, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """One crew action on the running daemon: the control socket's and the status page's (POST /manual,
    /void) single path, so a bib typed on the phone is journaled exactly as `rufus-gateway mark` does."""
    outbox = gw.outbox
    assert outbox is not None
    if action == "mark":
        when = datetime.fromisoformat(body["time"]) if body.get("time") else None
        num = await gw.mark(str(body["bib"]), when)
        return {"num_passing": num, "token_session": gw.state.token_session}
    if action == "prune":
        # the same explicit retention as the direct command (invariant 5), logged by prune_sent
        return {"pruned": await outbox.prune_sent(float(body["older_than_s"]))}
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
            if gw.uploader:
                gw.uploader.retry_now()  # the crew says the cloud is fixed: no need to wait out 'refused'
            return {"requeued": n}
        if token is None:
            raise GatewayError("no current session")
        n = await outbox.requeue(token, [int(x) for x in body["nums"]])
        if gw.uploader:
            gw.uploader.notify()
        return {"requeued": n}
    if action in ("session_new", "session_close"):
        from gateway import lifecycle

        if gw.client is None:
            raise GatewayError("no API key configured: cannot talk to the cloud")
        if action == "session_new":
            rec = await lifecycle.new_session(outbox, gw.client, body.get("alias"), gw.state.deviceid)
            gw.state.token_session = rec.token_session
            gw.kick()
            return {"token_session": rec.token_session}
        if token is None:
            raise GatewayError("no current session")
        await lifecycle.close_session(outbox, gw.client, token)
        return {"closed": token}
    raise KeyError(action)


class DaemonNotRunning(Exception):
    pass


async def call(path: str, method: str, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask the running daemon; raises DaemonNotRunning when nobody listens on the socket."""
    if not os.path.exists(path):  # noqa: ASYNC240 - one stat of a local socket path
        raise DaemonNotRunning(path)
    connector = aiohttp.UnixConnector(path=path)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.request(method, f"http://daemon{route}", json=body) as resp:
                data: dict[str, Any] = await resp.json()
                if resp.status >= 400:
                    raise GatewayError(str(data.get("error", f"daemon answered {resp.status}")))
                return data
    except aiohttp.ClientConnectorError:  # nobody listens on the socket: a stale file of a stopped daemon
        raise DaemonNotRunning(path) from None
    except aiohttp.ClientConnectionError:
        # The daemon took the request and the connection broke before its answer (it stopped, or crashed).
        # It may have done what was asked: doing it again here, without it, could mark a bib twice.
        raise GatewayError(
            f"the running daemon dropped the connection before answering {method} {route}: it may have done it; "
            "check with `rufus-gateway outbox stats` or `outbox list` before running the command again"
        ) from None
