"""A small HTTP server in front of the emulator: it answers what a test tells it to (a proxy's HTML 404, a
Retry-After, a 2xx with a short count) and passes everything else through to the real emulator."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from types import TracebackType

import aiohttp
from aiohttp import web

from gateway.emulator import Emulator

# Given the request and its body: a Response to answer with, or None to pass it through.
Hook = Callable[[web.Request, bytes], Awaitable[web.StreamResponse | None]]


class FakeFront:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.hook: Hook | None = None
        self.posts: list[float] = []  # time.monotonic() of each POST /passings that arrived
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v0"

    async def __aenter__(self) -> FakeFront:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST" and request.path.endswith("/passings"):
            self.posts.append(time.monotonic())
        if self.hook is not None:
            answer = await self.hook(request, body)
            if answer is not None:
                return answer
        return await self.forward(request, body)

    async def forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._http is not None
        target = self.emu.base_url.rsplit("/v0", 1)[0] + request.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._http.request(request.method, target, data=body or None, headers=headers) as resp:
            data = await resp.read()
            return web.Response(status=resp.status, body=data, content_type=resp.content_type)
