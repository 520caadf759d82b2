"""What the cloud refuses: a poison passing (400), too large a batch (413), the key (401/403)."""

from __future__ import annotations

import pytest

from gateway import uploader as uploader_mod
from gateway.uploader import Uploader
from tests.integration.uploader.helpers import Env, all_sent, client_for, cloud_nums, eventually, fast, running


async def test_poison_passing_is_set_aside_and_the_rest_flows(env: Env) -> None:
    await env.add(30)
    poison = "17"  # bib of num_passing 17
    env.emu.set_faults(reject_bib=poison)
    up = Uploader(env.outbox, env.client, fast(batch_size=30))
    async with running(up):
        await eventually(await all_sent(env, 29), what="29 Sent")
        await env.add(3)  # the queue is not blocked behind it
        up.notify()
        await eventually(await all_sent(env, 32), what="32 Sent")
    rejected = await env.outbox.rows(env.token, state="Rejected")
    assert [r.passing.num_passing for r in rejected] == [17]
    assert rejected[0].passing.bib == poison
    assert rejected[0].reason  # the server's description, kept for the crew
    assert cloud_nums(env.emu, env.token) == [n for n in range(1, 34) if n != 17]
    assert up.status.rejected == 1
    assert any("rejected" in a and "17" in a for a in up.status.alerts)


@pytest.mark.parametrize("cloud", ["bare"], indirect=True)  # 5200 passings: one dialect is enough here
async def test_payload_too_large_halves_the_batch(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Our own settings cap batch_size at the cloud's 5000; lift that cap here so the real 413 path is taken.
    monkeypatch.setattr(uploader_mod, "MAX_BATCH", 10_000)
    n = 5200
    await env.add(n)
    up = Uploader(env.outbox, env.client, fast(batch_size=n))
    async with running(up):
        await eventually(await all_sent(env, n), timeout=30, what=f"{n} Sent")
    assert up.status.batch_limit == n // 2
    assert up.status.batches_sent == 2
    assert cloud_nums(env.emu, env.token) == list(range(1, n + 1))


async def test_wrong_key_stops_then_fixed_key_resumes(env: Env) -> None:
    await env.add(8)
    bad = client_for(env.emu, "ror-00000000000000000000")
    good = client_for(env.emu)
    try:
        up = Uploader(env.outbox, bad, fast())
        async with running(up):
            await eventually(lambda: _is(up.status.state == "auth_failed"), what="auth_failed")
            assert (await env.states()) == {"Pending": 8}  # kept, not dropped
            assert any("API key" in a for a in up.status.alerts)
            alerts = len(up.status.alerts)
            await env.add(2)  # reading and storing go on
            up.notify()
            await _sleep(0.2)
            assert up.status.state == "auth_failed" and len(up.status.alerts) == alerts  # no request storm, one alert
            up.update_client(good)
            await eventually(await all_sent(env, 10), what="10 Sent with the fixed key")
        assert cloud_nums(env.emu, env.token) == list(range(1, 11))
        for alert in up.status.alerts:
            assert env.emu.api_key not in alert and "ror-0000" not in alert
    finally:
        await bad.close()
        await good.close()


async def test_a_key_refused_with_403_stops_uploads_like_a_401(env: Env) -> None:
    """A key whose access type may not write (403): stop uploading, keep storing, one alert, resume on a
    reloaded key; exactly as for an unknown key (401)."""
    from tests.integration.uploader.helpers import R_KEY

    await env.add(5)
    reader = client_for(env.emu, R_KEY)
    good = client_for(env.emu)
    try:
        up = Uploader(env.outbox, reader, fast())
        async with running(up) as task:
            await eventually(lambda: _is(up.status.state == "auth_failed"), what="auth_failed")
            assert env.emu.requests[-1]["status"] == 403
            assert (await env.states()) == {"Pending": 5}
            [alert] = up.status.alerts
            assert "(403)" in alert and "API key" in alert
            posts = _posts(env)
            await env.add(3)  # reading and storing go on
            up.notify()
            await _sleep(0.3)
            assert _posts(env) == posts and not task.done()  # no retry storm, no crash
            up.update_client(good)
            await eventually(await all_sent(env, 8), what="8 Sent with a READ_WRITE key")
        assert cloud_nums(env.emu, env.token) == list(range(1, 9))
    finally:
        await reader.close()
        await good.close()


async def _is(value: bool) -> bool:
    return value


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


# -- a cloud that refuses everything is not a queue of poison passings ------------------------------------


def _posts(env: Env) -> int:
    return sum(r["method"] == "POST" and r["path"].startswith("/v0/passings") for r in env.emu.requests)


async def test_a_cloud_refusing_every_passing_keeps_the_queue_pending(env: Env) -> None:
    await env.add(64)
    env.emu.set_faults(error_rate=1.0, error_status=400)
    up = Uploader(env.outbox, env.client, fast(batch_size=64, backoff_cap=30.0))  # waits 30 s unless told
    async with running(up):
        await eventually(lambda: _is(up.status.state == "refused"), what="refused")
        assert (await env.states()) == {"Pending": 64}  # nothing set aside
        assert up.status.rejected == 0
        [alert] = up.status.alerts
        assert "refuses every passing" in alert and "Injected fault: HTTP 400" in alert
        posts = _posts(env)
        assert posts < 64  # it gave up splitting long before trying every row alone
        await env.add(1)
        up.notify()  # new reads do not set off another round of refused requests
        await _sleep(0.5)
        assert _posts(env) == posts and up.status.state == "refused"
        env.emu.set_faults(error_rate=0.0)
        up.retry_now()  # what SIGHUP or `outbox requeue --rejected` does
        await eventually(await all_sent(env, 65), what="65 Sent")
    assert cloud_nums(env.emu, env.token) == list(range(1, 66))
    assert not await env.outbox.rows(env.token, state="Rejected")


async def test_refusing_everything_after_a_good_start_is_told_by_a_probe(env: Env) -> None:
    await env.add(5)
    up = Uploader(env.outbox, env.client, fast(batch_size=50))
    async with running(up):
        await eventually(await all_sent(env, 5), what="5 Sent")
        env.emu.set_faults(error_rate=1.0, error_status=400)
        await env.add(20)
        up.notify()
        await eventually(lambda: _is(up.status.state == "refused"), what="refused")
        assert (await env.states()) == {"Sent": 5, "Pending": 20}
        env.emu.set_faults(error_rate=0.0)  # without being told: it tries again after backoff_cap (0.1 s)
        await eventually(await all_sent(env, 25), what="25 Sent")
    assert cloud_nums(env.emu, env.token) == list(range(1, 26))
    assert env.emu.counts["inserted"] == 25


async def test_a_poison_passing_alone_waits_then_is_set_aside_once_others_go_through(env: Env) -> None:
    """In a session the cloud never took anything from, one refused passing cannot be told from a cloud
    refusing everything: it stays Pending; once another passing goes through, it is set aside."""
    await env.add(1)
    env.emu.set_faults(reject_bib="1")
    up = Uploader(env.outbox, env.client, fast())
    async with running(up):
        await eventually(lambda: _is(up.status.state == "refused"), what="refused")
        assert (await env.states()) == {"Pending": 1}
        await env.add(4)
        await eventually(await all_sent(env, 4), what="4 Sent")
        await eventually(lambda: _is(up.status.rejected == 1), what="the poison set aside")
    assert {r.passing.num_passing: r.state for r in await env.outbox.rows(env.token)} == {
        1: "Rejected",
        2: "Sent",
        3: "Sent",
        4: "Sent",
        5: "Sent",
    }


async def test_a_run_of_poison_passings_with_one_reason_is_still_set_aside(env: Env) -> None:
    """Twelve bad passings in a row, refused with the same words, at the head of a new session's queue:
    not a cloud refusing everything, since others go through."""
    from aiohttp import web

    from tests.integration.uploader.fakefront import FakeFront

    await env.add(40)
    bad = {str(i) for i in range(1, 13)}
    async with FakeFront(env.emu) as front:

        async def picky(request: web.Request, body: bytes) -> web.Response | None:
            import json

            if request.method == "POST" and {p["bib"] for p in json.loads(body)["passings_list"]} & bad:
                return web.json_response({"description": "Invalid passing"}, status=400)
            return None

        front.hook = picky
        client = client_for(env.emu)
        client.base_url = front.base_url
        up = Uploader(env.outbox, client, fast(batch_size=40))
        try:
            async with running(up):
                await eventually(await all_sent(env, 28), what="28 Sent")
                await eventually(lambda: _is(up.status.rejected == 12), what="12 set aside")
        finally:
            await client.close()
    rows = {r.passing.num_passing: r for r in await env.outbox.rows(env.token)}
    assert sorted(n for n, r in rows.items() if r.state == "Rejected") == list(range(1, 13))
    assert all(rows[n].reason == "Invalid passing" for n in range(1, 13))
    assert cloud_nums(env.emu, env.token) == list(range(13, 41))
