"""The delivery collaborator alone: each `Outcome` of a batch and each `Refusal` verdict, from a cloud scripted
by the fake front (what it answers to each POST /passings) in front of the real emulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from gateway.backoff import Backoff
from gateway.delivery import Delivery, Outcome, Refusal
from gateway.store import OutboxRow, SessionRecord
from gateway.uplink import Uplink, UploaderStatus
from gateway.verification import Verifier
from tests.integration.uploader.fakefront import FakeFront
from tests.integration.uploader.helpers import Env, client_for, cloud_nums

# Given the num_passings a POST /passings carries: the status to answer with, or None to pass it to the cloud.
Script = Callable[[list[int]], int | None]


@pytest.fixture
async def front(env: Env) -> AsyncIterator[FakeFront]:
    async with FakeFront(env.emu) as f:
        yield f


def scripted(front: FakeFront, script: Script) -> None:
    async def hook(request: web.Request, body: bytes) -> web.Response | None:
        if request.method != "POST" or not request.path.endswith("/passings"):
            return None
        status = script([p["num_passing"] for p in json.loads(body)["passings_list"]])
        if status is None:
            return None
        return web.json_response({"description": f"scripted {status}"}, status=status)

    front.hook = hook


class Parts:
    """A delivery with its own uplink and verifier, through the fake front."""

    def __init__(self, env: Env, front: FakeFront, *, batch_size: int = 50) -> None:
        self.env = env
        self.client = client_for(env.emu)
        self.client.base_url = front.base_url
        self.status = UploaderStatus()
        self.uplink = Uplink(env.outbox, self.client, self.status, backoff_base=0.01, backoff_cap=0.05)
        self.delivery = Delivery(self.uplink, Verifier(self.uplink), batch_size=batch_size, backoff=Backoff(0.01, 0.05))

    async def session(self) -> SessionRecord:
        rec = await self.env.outbox.current_session()
        assert rec is not None
        return rec

    async def pending(self) -> list[OutboxRow]:
        return await self.env.outbox.pending(self.env.token, 1000)

    async def deliver(self) -> Outcome:
        return await self.delivery.deliver(await self.session(), await self.pending())


@pytest.fixture
async def parts(env: Env, front: FakeFront) -> AsyncIterator[Parts]:
    p = Parts(env, front)
    try:
        yield p
    finally:
        await p.client.close()


async def _with_one_sent(parts: Parts) -> None:
    """Passing 1 taken by the cloud: the session has something to probe with."""
    await parts.env.add(1)
    assert await parts.deliver() is Outcome.DONE


# -- outcomes -------------------------------------------------------------------------------------------------
async def test_done_every_row_sent(parts: Parts, env: Env) -> None:
    await env.add(5)
    assert await parts.deliver() is Outcome.DONE
    assert await env.states() == {"Sent": 5}
    assert cloud_nums(env.emu, env.token) == [1, 2, 3, 4, 5]


async def test_done_a_poison_row_set_aside_the_rest_sent(parts: Parts, env: Env, front: FakeFront) -> None:
    await _with_one_sent(parts)
    await env.add(4)  # 2..5
    scripted(front, lambda nums: 400 if 3 in nums else None)
    assert await parts.deliver() is Outcome.DONE
    assert [r.passing.num_passing for r in await env.outbox.rows(env.token, "Rejected")] == [3]
    assert cloud_nums(env.emu, env.token) == [1, 2, 4, 5]
    assert parts.status.rejected == 1


async def test_refused_when_the_cloud_refuses_a_passing_it_took_before(
    parts: Parts, env: Env, front: FakeFront
) -> None:
    await _with_one_sent(parts)
    await env.add(4)
    scripted(front, lambda nums: 400)
    assert await parts.deliver() is Outcome.REFUSED
    assert await env.states() == {"Sent": 1, "Pending": 4}  # none set aside
    assert parts.status.rejected == 0
    assert parts.status.last_error == "HTTP 400 for every passing: scripted 400"


async def test_refused_when_a_new_session_has_nothing_to_probe_with(parts: Parts, env: Env, front: FakeFront) -> None:
    await env.add(12)
    scripted(front, lambda nums: 400)
    assert await parts.deliver() is Outcome.REFUSED  # sampled: none of the rows goes through alone
    assert await env.states() == {"Pending": 12}


async def test_later_when_the_probe_meets_an_outage(parts: Parts, env: Env, front: FakeFront) -> None:
    await _with_one_sent(parts)
    await env.add(1)
    scripted(front, lambda nums: 503 if nums == [1] else 400)  # the probe re-sends passing 1
    assert await parts.deliver() is Outcome.LATER
    assert await env.states() == {"Sent": 1, "Pending": 1}
    assert parts.status.retries == 1


async def test_too_large_halves_the_batch_size(parts: Parts, env: Env, front: FakeFront) -> None:
    await env.add(8)
    scripted(front, lambda nums: 413 if len(nums) > 4 else None)
    assert await parts.deliver() is Outcome.TOO_LARGE
    assert parts.delivery.limit == 4 and parts.status.batch_limit == 4
    assert await env.states() == {"Pending": 8}


async def test_session_closed_leaves_the_rows_to_the_rollover(parts: Parts, env: Env) -> None:
    await env.add(3)
    await env.client.close_session(env.token)
    assert await parts.deliver() is Outcome.SESSION_CLOSED
    assert await env.states() == {"Pending": 3}  # neither Sent nor Rejected: moved or held by the rollover


# -- refusal verdicts -----------------------------------------------------------------------------------------
async def test_probe_row_when_the_cloud_takes_what_it_took_before(parts: Parts) -> None:
    await _with_one_sent(parts)
    assert await parts.delivery.probe(parts.env.token, "bad bib") is Refusal.ROW


async def test_probe_everything_when_it_refuses_that_too(parts: Parts, front: FakeFront) -> None:
    await _with_one_sent(parts)
    scripted(front, lambda nums: 400)
    assert await parts.delivery.probe(parts.env.token, "bad bib") is Refusal.EVERYTHING


async def test_probe_unknown_with_nothing_sent_yet(parts: Parts, front: FakeFront) -> None:
    await parts.env.add(1)
    assert await parts.delivery.probe(parts.env.token, "bad bib") is Refusal.UNKNOWN
    assert front.posts == []  # nothing was asked


async def test_probe_session_closed(parts: Parts, env: Env) -> None:
    await _with_one_sent(parts)
    await env.client.close_session(env.token)
    assert await parts.delivery.probe(env.token, "bad bib") is Refusal.SESSION_CLOSED


async def test_probe_later_on_an_outage(parts: Parts, front: FakeFront) -> None:
    await _with_one_sent(parts)
    scripted(front, lambda nums: 502)
    assert await parts.delivery.probe(parts.env.token, "bad bib") is Refusal.LATER


async def test_sample_row_once_one_goes_through_alone(parts: Parts, env: Env, front: FakeFront) -> None:
    await env.add(10)
    scripted(front, lambda nums: 400 if nums != [10] else None)
    assert await parts.delivery.sample(env.token, await parts.pending(), "bad bib") is Refusal.ROW
    assert cloud_nums(env.emu, env.token) == [10]  # the one that went through is Sent


async def test_sample_everything_when_none_goes_through(parts: Parts, env: Env, front: FakeFront) -> None:
    await env.add(10)
    scripted(front, lambda nums: 400)
    assert await parts.delivery.sample(env.token, await parts.pending(), "bad bib") is Refusal.EVERYTHING
    assert len(front.posts) == 8  # REFUSAL_STREAK rows spread over the rest, each alone


async def test_sample_session_closed(parts: Parts, env: Env) -> None:
    await env.add(3)
    await env.client.close_session(env.token)
    assert await parts.delivery.sample(env.token, await parts.pending(), "bad bib") is Refusal.SESSION_CLOSED


async def test_sample_later_on_413(parts: Parts, env: Env, front: FakeFront) -> None:
    await env.add(3)
    scripted(front, lambda nums: 413)
    assert await parts.delivery.sample(env.token, await parts.pending(), "bad bib") is Refusal.LATER
