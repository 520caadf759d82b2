"""The daemon's local control endpoint: an HTTP API on a unix socket beside the database.

One writer (invariant 8): while the daemon runs, the crew's writing commands (`mark`, `outbox requeue|prune`,
`session new|close`, `device bind`) go through here instead of opening the database themselves. A unix socket
is local by construction and guarded by file permissions, so it needs no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from typing import Any

import aiohttp
from aiohttp import web

from gateway.errors import GatewayError
from gateway.snapshot import COMMANDS, Surface

SHUTDOWN_GRACE_S = 1.0  # at stop, how long an unfinished request may hold us


class ControlServer:
    """HTTP on a unix socket in front of `Surface.command`: it decides nothing of its own."""

    def __init__(self, gateway: Surface, path: str) -> None:
        self.gateway = gateway
        self.path = path
        self.app = web.Application()
        # one POST route a command: /mark, /void, /requeue, /prune, /session/new, /session/close, /device/bind
        self.app.add_routes(
            [web.get("/ping", self._ping)]
            + [
                web.post("/" + action.replace("_", "/"), functools.partial(self._call, action=action))
                for action in COMMANDS
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
        return web.json_response({"pid": os.getpid(), "phase": self.gateway.live().phase})

    async def _call(self, request: web.Request, *, action: str) -> web.Response:
        try:
            body: dict[str, Any] = await request.json() if request.can_read_body else {}
            result = await self.gateway.command(action, body)
        except GatewayError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        return web.json_response(result)


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
