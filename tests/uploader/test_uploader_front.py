"""Answers the emulator does not give but something between us and the cloud can: a proxy's HTML 404, a
Retry-After to honour, a 2xx whose counts do not add up. A small server in front of the emulator plays them."""

from __future__ import annotations

from aiohttp import web

from gateway.uploader import Uploader
from tests.uploader.fakefront import FakeFront
from tests.uploader.helpers import Env, all_sent, client_for, cloud_nums, eventually, fast, running


async def _is(value: bool) -> bool:
    return value


async def test_an_html_404_is_retried_with_one_alert_not_a_crash(env: Env) -> None:
    await env.add(6)
    async with FakeFront(env.emu) as front:
        broken = True

        async def portal(request: web.Request, _body: bytes) -> web.Response | None:
            if broken and request.method == "POST":
                return web.Response(status=404, text="<html><body>Not Found</body></html>", content_type="text/html")
            return None

        front.hook = portal
        client = client_for(env.emu)
        client.base_url = front.base_url
        up = Uploader(env.outbox, client, fast())
        try:
            async with running(up) as task:
                await eventually(lambda: _is(len(front.posts) >= 3), what="several attempts")
                assert not task.done()  # the uploader is alive and retrying
                assert up.status.state in ("backoff", "sending")
                assert (await env.states()) == {"Pending": 6}
                [alert] = [a for a in up.status.alerts if "404" in a]
                assert "base_url" in alert
                broken = False  # the portal lets us through
                await eventually(await all_sent(env, 6), what="6 Sent")
        finally:
            await client.close()
    assert cloud_nums(env.emu, env.token) == [1, 2, 3, 4, 5, 6]

async def test_retry_after_is_waited_out_between_attempts(env: Env) -> None:
    await env.add(3)
    async with FakeFront(env.emu) as front:

        async def busy(request: web.Request, _body: bytes) -> web.Response | None:
            if request.method == "POST" and len(front.posts) <= 2:
                return web.json_response({"description": "busy"}, status=503, headers={"Retry-After": "1"})
            return None

        front.hook = busy
        client = client_for(env.emu)
        client.base_url = front.base_url
        up = Uploader(env.outbox, client, fast())  # its own backoff is at most 0.1 s: the wait is the server's
        try:
            async with running(up):
                await eventually(await all_sent(env, 3), what="3 Sent")
        finally:
            await client.close()
    assert len(front.posts) == 3
    gaps = [b - a for a, b in zip(front.posts, front.posts[1:], strict=False)]
    assert all(g >= 0.95 for g in gaps), gaps  # a lower bound only: a slow machine may wait longer

