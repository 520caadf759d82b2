"""Answers the emulator does not give but something between us and the cloud can: a proxy's HTML 404, a
Retry-After to honour, a 2xx whose counts do not add up. A small server in front of the emulator plays them."""

from __future__ import annotations

from aiohttp import web

from gateway.uploader import Uploader
from tests.integration.uploader.fakefront import FakeFront
from tests.integration.uploader.helpers import Env, all_sent, client_for, cloud_nums, eventually, fast, running


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


async def test_a_2xx_that_counts_fewer_passings_than_sent_is_read_back(env: Env) -> None:
    await env.add(10)
    async with FakeFront(env.emu) as front:
        dropped: list[int] = []

        async def lossy(request: web.Request, body: bytes) -> web.Response | None:
            if request.method != "POST" or dropped:
                return None
            import json

            payload = json.loads(body)
            kept = payload["passings_list"][:-3]  # something in between loses the tail of the batch
            dropped.extend(p["num_passing"] for p in payload["passings_list"][-3:])
            fwd = await front.forward(request, json.dumps({**payload, "passings_list": kept}).encode())
            return fwd

        front.hook = lossy
        client = client_for(env.emu)
        client.base_url = front.base_url
        up = Uploader(env.outbox, client, fast(batch_size=10, linger_s=0.0))
        try:
            async with running(up):
                await eventually(await all_sent(env, 10), what="10 Sent")
        finally:
            await client.close()
    assert dropped == [8, 9, 10]
    assert cloud_nums(env.emu, env.token) == list(range(1, 11))  # the lost three were sent again, once
    assert any("7 of 10" in a for a in up.status.alerts), up.status.alerts
    assert env.emu.counts["inserted"] == 10


async def test_a_short_count_with_a_key_that_cannot_read_is_sent_tagged_and_alerted(env: Env) -> None:
    from tests.integration.uploader.helpers import W_KEY

    await env.add(4)
    async with FakeFront(env.emu) as front:

        async def short(request: web.Request, body: bytes) -> web.Response | None:
            if request.method != "POST":
                return None
            await front.forward(request, body)
            return web.json_response(
                {"description": "Passings inserted succesfully", "inserted_count": 2, "duplicate_count": 0}
            )

        front.hook = short
        client = client_for(env.emu, W_KEY)
        client.base_url = front.base_url
        up = Uploader(env.outbox, client, fast(linger_s=0.0), can_read=False)
        try:
            async with running(up):
                await eventually(await all_sent(env, 4), what="4 Sent")
        finally:
            await client.close()
    rows = await env.outbox.rows(env.token)
    assert all(r.reason and "not verified" in r.reason for r in rows), [r.reason for r in rows]
    assert any("2 of 4" in a and "cannot read" in a for a in up.status.alerts), up.status.alerts
