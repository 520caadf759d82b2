"""Sessions under the uploader: closed in the cloud, numbers someone else used."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gateway import lifecycle
from gateway.cloud.models import SessionCreate
from gateway.model import Passing
from gateway.uploader import Uploader
from tests.integration.uploader.helpers import T0, Env, all_sent, cloud_nums, eventually, fast, running


def _theirs(nums: list[int]) -> list[Passing]:
    """Passings another gateway put into our session: same numbers, other bibs, other times."""
    return [Passing(timestamp=T0 + timedelta(hours=1, seconds=n), num_passing=n, bib=f"X{n}") for n in nums]


async def _ours(env: Env, nums: list[int]) -> list[Passing]:
    rows = {r.passing.num_passing: r.passing for r in await env.outbox.rows(env.token)}
    return [rows[n] for n in nums]


async def test_duplicate_mismatch_renumbers_above_cloud_and_alerts(env: Env) -> None:
    await env.add(5)
    await env.client.insert_passings(env.token, _theirs([1, 2, 3]))
    up = Uploader(env.outbox, env.client, fast())
    async with running(up):
        await eventually(await all_sent(env, 5), what="5 of ours Sent")
    sent = await env.outbox.rows(env.token, state="Sent")
    by_bib = {r.passing.bib: r.passing.num_passing for r in sent}
    assert by_bib["4"] == 4 and by_bib["5"] == 5  # not clashing: kept their numbers
    assert sorted(by_bib[b] for b in ("1", "2", "3")) == [6, 7, 8]  # above the cloud's highest (5)
    held = {p.num_passing: p.bib for p in await env.client.session_passings(env.token)}
    assert held == {1: "X1", 2: "X2", 3: "X3", 4: "4", 5: "5"} | {by_bib[b]: b for b in ("1", "2", "3")}
    assert cloud_nums(env.emu, env.token) == list(range(1, 9))
    assert up.status.renumbered == 3
    assert any("renumbered" in a for a in up.status.alerts)
    # The old numbers are not reused locally: the next passing goes above them all.
    assert await env.add(1) == [9]


async def test_matching_duplicates_of_a_first_send_are_ours(env: Env) -> None:
    """A restored database re-sends what the cloud already holds: same bib, same time -> Sent, no alert."""
    await env.add(4)
    await env.client.insert_passings(env.token, await _ours(env, [1, 2]))
    up = Uploader(env.outbox, env.client, fast())
    async with running(up):
        await eventually(await all_sent(env, 4), what="4 Sent")
    assert cloud_nums(env.emu, env.token) == [1, 2, 3, 4]
    assert up.status.duplicates == 2 and up.status.renumbered == 0 and not up.status.alerts


async def test_closed_session_is_held_without_follow(env: Env) -> None:
    await env.add(6)
    up = Uploader(env.outbox, env.client, fast())
    async with running(up):
        await eventually(await all_sent(env, 6), what="6 Sent")
    # A batch whose 2xx was lost just before the session closed: the cloud holds 7 and 8 already.
    await env.add(5)
    await env.client.insert_passings(env.token, await _ours(env, [7, 8]))
    await env.client.close_session(env.token)
    up = Uploader(env.outbox, env.client, fast())
    async with running(up):
        await eventually(lambda: _is(up.status.state == "session_closed"), what="session_closed")
    states = await env.states()
    assert states == {"Sent": 8, "Pending": 3}  # 7, 8 read back and Sent; 9..11 held, not dropped
    pending = [r.passing.num_passing for r in await env.outbox.rows(env.token, state="Pending")]
    assert pending == [9, 10, 11]
    assert up.status.held_sessions == [env.token]
    assert any("closed" in a and "held" in a for a in up.status.alerts)
    assert cloud_nums(env.emu, env.token) == list(range(1, 9))


async def test_closed_session_follows_the_active_one(env: Env) -> None:
    await env.add(6)
    up = Uploader(env.outbox, env.client, fast(follow_active_session=True))
    async with running(up):
        await eventually(await all_sent(env, 6), what="6 Sent")
    # The crew starts a new session from the web: the cloud closes ours.
    other = (await env.client.create_session(SessionCreate(env.deviceid, "after the break"))).token_session
    await env.client.insert_passings(other, _theirs([1, 2]))
    assert await env.add(5) == [7, 8, 9, 10, 11]  # numbered in the (now closed) session
    up = Uploader(env.outbox, env.client, fast(follow_active_session=True))
    async with running(up):
        await eventually(await all_sent(env, 5, other), what="5 Sent in the active session")
        current = await env.outbox.current_session()
        assert current is not None and current.token_session == other
        assert await env.add(1) == [8]  # new passings continue in the active session, above the moved ones
        up.notify()
        await eventually(await all_sent(env, 6, other), what="6 Sent in the active session")
    moved = await env.outbox.rows(other, state="Sent")
    assert [r.passing.num_passing for r in moved] == [3, 4, 5, 6, 7, 8]  # above the cloud's highest (2)
    assert [r.passing.bib for r in moved] == ["7", "8", "9", "10", "11", "12"]
    assert cloud_nums(env.emu, env.token) == list(range(1, 7))
    assert cloud_nums(env.emu, other) == list(range(1, 9))
    assert (await env.states(env.token)).get("Pending", 0) == 0
    assert any("moved" in a for a in up.status.alerts)


async def _is(value: bool) -> bool:
    return value


async def test_follow_waits_for_an_active_session_then_moves(env: Env) -> None:
    """Closed with no other session yet: held (not dropped, not busy-looping), moved once the crew opens one."""
    await env.add(3)
    await env.client.close_session(env.token)
    up = Uploader(env.outbox, env.client, fast(follow_active_session=True))
    async with running(up):
        await eventually(lambda: _is(up.status.held_sessions == [env.token]), what="held")
        assert (await env.states()) == {"Pending": 3}
        other = (await env.client.create_session(SessionCreate(env.deviceid, "restart"))).token_session
        await eventually(await all_sent(env, 3, other), what="moved and Sent")
    assert cloud_nums(env.emu, other) == [1, 2, 3]
    assert cloud_nums(env.emu, env.token) == []
    assert (await env.states()) == {"Moved": 3}
    assert up.status.held_sessions == []


async def test_held_session_moves_at_once_when_the_crew_opens_a_new_one(env: Env) -> None:
    await env.add(2)
    await env.client.close_session(env.token)
    up = Uploader(env.outbox, env.client, fast(follow_active_session=True, backoff_cap=60.0))
    async with running(up):
        await eventually(lambda: _is(up.status.held_sessions == [env.token]), what="held")
        rec = await lifecycle.new_session(env.outbox, env.client, "wave 2", env.deviceid)
        # Not the 60 s look-again: the change of current session is noticed by the next idle look.
        await eventually(await all_sent(env, 2, rec.token_session), timeout=5, what="moved and Sent")
    assert cloud_nums(env.emu, rec.token_session) == [1, 2]


def _posts(env: Env) -> int:
    return sum(r["method"] == "POST" and r["path"].startswith("/v0/passings") for r in env.emu.requests)


async def test_a_poison_bib_in_a_closed_session_is_moved_and_set_aside_not_retried_for_ever(env: Env) -> None:
    """The cloud answers 400 for the poison bib before it says the session is closed: the bisection ends on the
    poison row, whose probe then meets the closed session. That must be handled as the closed session it is
    (read back, moved to the active session, the poison row refused there), not retried at once, for ever
    (seen in the chaos harness: 43,864 requests, 28 passings left Pending)."""
    await env.add(3)
    up = Uploader(env.outbox, env.client, fast(follow_active_session=True))
    async with running(up):
        await eventually(await all_sent(env, 3), what="3 Sent")  # the probe has a passing to re-send
    await env.add(4)  # bibs 4..7, numbered 4..7 in our session
    env.emu.set_faults(reject_bib="4")
    other = (await env.client.create_session(SessionCreate(env.deviceid, "wave 2"))).token_session
    before = _posts(env)
    up = Uploader(env.outbox, env.client, fast(follow_active_session=True))
    async with running(up):
        await eventually(await all_sent(env, 3, other), what="the 3 good ones Sent in the active session")
        await eventually(lambda: _is(up.status.rejected == 1), what="the poison row set aside")
    assert _posts(env) - before < 20, f"{_posts(env) - before} requests: the uploader looped on the closed session"
    rejected = await env.outbox.rows(other, state="Rejected")
    assert [r.passing.bib for r in rejected] == ["4"]
    assert [r.passing.bib for r in await env.outbox.rows(other, state="Sent")] == ["5", "6", "7"]
    assert cloud_nums(env.emu, env.token) == [1, 2, 3]
    assert (await env.states(env.token)) == {"Sent": 3, "Moved": 4}


async def test_a_poison_bib_in_a_closed_session_without_follow_is_held_quietly(env: Env) -> None:
    await env.add(2)
    up = Uploader(env.outbox, env.client, fast())
    async with running(up):
        await eventually(await all_sent(env, 2), what="2 Sent")
    await env.add(3)  # bibs 3..5
    env.emu.set_faults(reject_bib="3")
    await env.client.close_session(env.token)
    before = _posts(env)
    up = Uploader(env.outbox, env.client, fast())
    async with running(up):
        await eventually(lambda: _is(up.status.state == "session_closed"), what="session_closed")
        await asyncio.sleep(0.5)  # held: no request after that
        settled = _posts(env)
        await asyncio.sleep(0.5)
        assert _posts(env) == settled, "a held session is not tried again and again"
    assert settled - before < 20
    assert (await env.states()) == {"Sent": 2, "Pending": 3}  # nothing dropped, nothing set aside yet
    assert up.status.held_sessions == [env.token]
