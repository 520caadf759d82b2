"""Pending -> Sent against the real emulator over loopback, clean and under every fault mode."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from gateway.emulator import Emulator
from gateway.uploader import LINGER_MAX, Uploader
from tests.integration.uploader.helpers import (
    Env,
    all_sent,
    client_for,
    cloud_nums,
    eventually,
    fast,
    make_env,
    running,
)


async def test_pending_to_sent_gapless_once(env: Env) -> None:
    nums = await env.add(120)
    assert nums == list(range(1, 121))
    up = Uploader(env.outbox, env.client, fast(batch_size=50))
    async with running(up):
        await eventually(await all_sent(env, 120), what="120 Sent")
        more = await env.add(7)
        up.notify()
        await eventually(await all_sent(env, 127), what="127 Sent")
        await eventually(lambda: _true(up.status.state == "idle"), what="idle")
    assert more == list(range(121, 128))
    assert cloud_nums(env.emu, env.token) == list(range(1, 128))
    assert env.emu.counts["inserted"] == 127 and env.emu.counts["duplicate"] == 0
    assert up.status.passings_sent == 127
    assert up.status.duplicates == 0 and up.status.retries == 0
    assert up.status.batches_sent >= 3  # 50 + 50 + 20 (+ 7)
    assert up.status.last_success_at is not None


async def test_linger_gathers_a_burst_in_one_request(env: Env) -> None:
    """A pack crossing the mat: commits keep coming, each soon after the last, for longer than one linger. The
    uploader waits for the burst to go quiet, so it all goes in one request (a fixed wait from the first commit
    would send the tail of the burst in a second one)."""
    linger = 0.5
    up = Uploader(env.outbox, env.client, fast(linger_s=linger))
    loop = asyncio.get_running_loop()
    async with running(up):
        await asyncio.sleep(0.05)  # uploader idle, waiting for work
        t0 = last = loop.time()
        gaps = []
        for _ in range(5):
            await env.add(2)
            up.notify()
            gaps.append(loop.time() - last)
            last = loop.time()
            await asyncio.sleep(0.15)
        burst_s = last - t0
        await eventually(await all_sent(env, 10), what="10 Sent")
    if max(gaps) + 0.15 >= linger:
        pytest.skip(f"this machine took {max(gaps):.2f}s for one commit: the burst had a quiet spell")
    assert burst_s > linger  # longer than one linger: a wait from the first commit alone would split it
    assert _posts(env) == 1 and up.status.batches_sent == 1
    assert cloud_nums(env.emu, env.token) == list(range(1, 11))


async def test_linger_ends_while_a_steady_flow_goes_on(env: Env) -> None:
    """A burst that never goes quiet (a reader streaming reads) must not hold the upload back for ever: the
    linger ends after LINGER_MAX lingers and the first request goes out while the flow continues."""
    linger = 0.2
    up = Uploader(env.outbox, env.client, fast(linger_s=linger))
    loop = asyncio.get_running_loop()
    async with running(up):
        await asyncio.sleep(0.05)
        end = loop.time() + 2 * LINGER_MAX * linger
        n = 0
        while loop.time() < end:
            await env.add(1)
            n += 1
            up.notify()
            await asyncio.sleep(0.05)
        posts_during_flow = _posts(env)
        await eventually(await all_sent(env, n), what=f"{n} Sent")
    assert posts_during_flow >= 1, "the linger held the upload back for as long as the flow lasted"
    assert cloud_nums(env.emu, env.token) == list(range(1, n + 1))


async def test_passings_that_waited_their_window_go_out_without_a_linger(env: Env) -> None:
    """Passings from duplicate windows that closed on the clock have already waited a whole window: the
    uploader sends them at once instead of lingering for company (notify(waited=True)); others still linger."""
    linger = 1.0
    up = Uploader(env.outbox, env.client, fast(linger_s=linger))
    loop = asyncio.get_running_loop()
    async with running(up):
        await asyncio.sleep(0.05)  # idle
        await env.add(1)
        t0 = loop.time()
        up.notify(waited=True)
        await eventually(await all_sent(env, 1), what="1 Sent")
        waited_s = loop.time() - t0
        await asyncio.sleep(0.05)
        await env.add(1)
        t1 = loop.time()
        up.notify()
        await eventually(await all_sent(env, 2), what="2 Sent", timeout=10)
        lingered_s = loop.time() - t1
    assert waited_s < linger / 2, f"a passing that waited its window lingered {waited_s:.2f} s more"
    assert lingered_s >= linger  # an ordinary one still waits for company
    assert cloud_nums(env.emu, env.token) == [1, 2]


async def test_errors_with_retry_after_are_retried(env: Env) -> None:
    await env.add(30)
    env.emu.set_faults(error_rate=1.0, error_status=503, retry_after=0.05)
    up = Uploader(env.outbox, env.client, fast(batch_size=10))
    async with running(up):
        await eventually(lambda: _true(up.status.retries >= 3), what="retries")
        assert up.status.state in ("backoff", "sending")
        assert up.status.outage_started_at is not None
        assert (await env.states()).get("Pending") == 30  # nothing leaves Pending without a 2xx
        env.emu.set_faults(error_rate=0.0)
        await eventually(await all_sent(env, 30), what="30 Sent")
    assert cloud_nums(env.emu, env.token) == list(range(1, 31))
    assert up.status.outage_started_at is None


async def test_partial_error_rate_still_exactly_once(env: Env) -> None:
    await env.add(60)
    env.emu.set_faults(error_rate=0.5, error_status=500)
    up = Uploader(env.outbox, env.client, fast(batch_size=7))
    async with running(up):
        await eventually(await all_sent(env, 60), timeout=20, what="60 Sent")
    assert cloud_nums(env.emu, env.token) == list(range(1, 61))


async def test_drop_after_commit_stores_no_duplicates(env: Env) -> None:
    await env.add(40)
    env.emu.set_faults(drop_after_commit=1.0)
    up = Uploader(env.outbox, env.client, fast(batch_size=15))
    async with running(up):
        await eventually(lambda: _true(up.status.retries >= 2), what="lost responses")
        # The cloud has committed a batch whose 2xx we never saw: still Pending here.
        assert (await env.states()).get("Sent", 0) == 0
        env.emu.set_faults(drop_after_commit=0.0)
        await eventually(await all_sent(env, 40), what="40 Sent")
    assert cloud_nums(env.emu, env.token) == list(range(1, 41))
    assert env.emu.counts["inserted"] == 40  # each stored once; the re-sends were counted as duplicates
    assert up.status.duplicates >= 15  # the re-sent batch came back as duplicates, not as new rows
    assert up.status.renumbered == 0 and not up.status.alerts  # re-sends are ours: no false alarm


async def test_hang_past_client_timeout_is_retried(cloud: Emulator, tmp_path: Path) -> None:
    env = await make_env(cloud, tmp_path, client=client_for(cloud, read_timeout=0.3))
    try:
        await env.add(10)
        env.emu.set_faults(hang_rate=1.0)
        up = Uploader(env.outbox, env.client, fast())
        async with running(up):
            await eventually(lambda: _true(up.status.retries >= 2), what="timeouts")
            assert (await env.states()).get("Sent", 0) == 0
            env.emu.set_faults(hang_rate=0.0)
            await eventually(await all_sent(env, 10), what="10 Sent")
        assert cloud_nums(env.emu, env.token) == list(range(1, 11))
    finally:
        await env.client.close()
        await env.outbox.close()


async def test_offline_then_back(env: Env, logs: list[dict[str, Any]]) -> None:
    await env.add(5)
    env.emu.set_offline(True)
    up = Uploader(env.outbox, env.client, fast())
    async with running(up):
        await eventually(lambda: _true(up.status.retries >= 2), what="connection failures")
        more = await env.add(20)  # reads keep flowing into the outbox during the outage
        up.notify()
        assert more[-1] == 25
        env.emu.set_offline(False)
        await eventually(await all_sent(env, 25), what="25 Sent")
        await eventually(lambda: _true(up.status.state == "idle"), what="idle again")
    assert cloud_nums(env.emu, env.token) == list(range(1, 26))
    assert up.status.outage_started_at is None and up.status.last_error is not None
    failed = [e for e in logs if e["event"] == "cloud upload failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "warning"  # the start of the streak, quiet after
    assert all(e["log_level"] == "debug" for e in logs if e["event"] == "cloud upload still failing")
    [recovered] = [e for e in logs if e["event"] == "cloud upload recovered"]
    assert recovered["log_level"] == "info" and recovered["outage_s"] >= 0 and recovered["pending"] == 25


async def test_latency_does_not_reorder(env: Env) -> None:
    await env.add(12)
    env.emu.set_faults(latency_ms=80)
    up = Uploader(env.outbox, env.client, fast(batch_size=4))
    async with running(up):
        await eventually(await all_sent(env, 12), what="12 Sent")
    assert cloud_nums(env.emu, env.token) == list(range(1, 13))


async def test_cancel_mid_request_leaves_pending_then_sends_once(env: Env) -> None:
    await env.add(20)
    env.emu.set_faults(latency_ms=600)
    up = Uploader(env.outbox, env.client, fast(batch_size=20, linger_s=0.0))
    task = asyncio.create_task(up.run())
    await eventually(lambda: _true(_posts(env) == 1), what="request in flight")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (await env.states()).get("Pending") == 20  # abandoned, not guessed
    env.emu.set_faults(latency_ms=0)
    # The server finishes the abandoned request anyway (as a real one would): the cloud has all 20...
    await eventually(lambda: _true(env.emu.counts["inserted"] == 20), what="abandoned request committed")
    again = Uploader(env.outbox, env.client, fast())
    async with running(again):
        await eventually(await all_sent(env, 20), what="20 Sent after restart")
    # ...and the re-send is recognised as ours: duplicates read back and matched, nothing stored twice.
    assert cloud_nums(env.emu, env.token) == list(range(1, 21))
    assert env.emu.counts["inserted"] == 20 and env.emu.counts["duplicate"] == 20
    assert again.status.duplicates == 20 and not again.status.alerts and again.status.renumbered == 0


def _posts(env: Env) -> int:
    return sum(r["method"] == "POST" and r["path"].startswith("/v0/passings") for r in env.emu.requests)


async def _true(value: bool) -> bool:
    return value


async def test_an_idle_uploader_cancelled_as_work_arrives_stops(env: Env) -> None:
    """A SIGTERM in the same loop turn as a new passing: the uploader stops (a lost cancel would keep it
    looping and hold the shutdown)."""
    for _ in range(10):
        up = Uploader(env.outbox, env.client, fast())
        task = asyncio.create_task(up.run())
        await asyncio.sleep(0.05)  # idle: waiting for work
        up.notify()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 2.0)
