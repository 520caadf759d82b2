"""The session rollover alone: a closed session's passings already in the cloud are Sent, the rest held (and
for how long), released when follow_active_session is turned on, or moved to the device's active session."""

from __future__ import annotations

import time

from gateway.cloud.models import SessionCreate
from gateway.rollover import Rollover
from gateway.store import SessionRecord
from gateway.uplink import Uplink, UploaderStatus
from gateway.verification import Verifier
from tests.integration.uploader.helpers import Env, cloud_nums


def _rollover(env: Env, *, follow: bool) -> Rollover:
    uplink = Uplink(env.outbox, env.client, UploaderStatus(), backoff_base=0.01, backoff_cap=0.05)
    return Rollover(uplink, Verifier(uplink), follow_active_session=follow, deviceid=None)


async def _closed_with_two_of_four_in_the_cloud(env: Env) -> SessionRecord:
    await env.add(4)
    rows = await env.outbox.pending(env.token, 10)
    await env.client.insert_passings(env.token, [r.passing for r in rows[:2]])  # their 2xx lost
    await env.client.close_session(env.token)
    rec = await env.outbox.current_session()
    assert rec is not None
    return rec


async def test_without_follow_what_landed_is_sent_the_rest_held_until_the_crew_acts(env: Env) -> None:
    rollover = _rollover(env, follow=False)
    await rollover.session_closed(await _closed_with_two_of_four_in_the_cloud(env))
    assert await env.states() == {"Sent": 2, "Pending": 2}
    assert rollover.holds(env.token)
    assert rollover.waits(env.token, "ANOTHER", time.monotonic() + 1e6)  # nor does a new current session
    rollover.follow(True)  # the crew turns following on (SIGHUP)
    assert not rollover.holds(env.token) and not rollover.waits(env.token, env.token, time.monotonic())


async def test_with_follow_and_no_other_active_session_it_looks_again_later(env: Env) -> None:
    rollover = _rollover(env, follow=True)
    await rollover.session_closed(await _closed_with_two_of_four_in_the_cloud(env))
    now = time.monotonic()
    assert rollover.waits(env.token, env.token, now)
    assert not rollover.waits(env.token, "A NEW CURRENT ONE", now)  # the crew opened one: look at once
    assert not rollover.waits(env.token, env.token, now + 1.0)  # backoff_cap later


async def test_with_follow_the_rest_moves_to_the_active_session(env: Env) -> None:
    rollover = _rollover(env, follow=True)
    rec = await _closed_with_two_of_four_in_the_cloud(env)
    active = (await env.client.create_session(SessionCreate(env.deviceid, "second"))).token_session
    await rollover.session_closed(rec)
    assert not rollover.holds(env.token)
    assert await env.states() == {"Sent": 2, "Moved": 2}
    assert [r.passing.num_passing for r in await env.outbox.pending(active, 10)] == [1, 2]
    assert cloud_nums(env.emu, env.token) == [1, 2]
