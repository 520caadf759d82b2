"""What the cloud refuses: a poison passing (400), too large a batch (413), the key (401/403)."""

from __future__ import annotations

import pytest

from gateway import uploader as uploader_mod
from gateway.uploader import Uploader
from tests.uploader.helpers import Env, all_sent, client_for, cloud_nums, eventually, fast, running


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


async def _is(value: bool) -> bool:
    return value


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)
