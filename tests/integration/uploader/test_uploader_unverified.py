"""A key that cannot read back: what the gateway could not check is Sent on the 2xx's word, and says so."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from click.testing import CliRunner

from gateway.cli import cli
from gateway.model import Passing
from gateway.uploader import Uploader
from gateway.verification import UNVERIFIED_DUPLICATE
from tests.integration.uploader.helpers import T0, W_KEY, Env, all_sent, client_for, eventually, fast, running


async def test_duplicates_of_never_sent_rows_are_sent_with_a_reason_the_crew_sees(env: Env) -> None:
    await env.add(4)
    # someone else's passings already sit at numbers 1 and 2 of our session
    theirs = [Passing(timestamp=T0 + timedelta(hours=1, seconds=n), num_passing=n, bib=f"X{n}") for n in (1, 2)]
    await env.client.insert_passings(env.token, theirs)
    writer = client_for(env.emu, W_KEY)
    try:
        up = Uploader(env.outbox, writer, fast(linger_s=0.0), can_read=False)
        async with running(up):
            await eventually(await all_sent(env, 4), what="4 Sent")
    finally:
        await writer.close()
    assert any("never sent before" in a for a in up.status.alerts)
    rows = {r.passing.num_passing: r for r in await env.outbox.rows(env.token)}
    assert {n: r.state for n, r in rows.items()} == dict.fromkeys([1, 2, 3, 4], "Sent")
    # which of the batch were the duplicates is unknown: every first send in it carries the reason
    assert {n: r.reason for n, r in rows.items()} == dict.fromkeys([1, 2, 3, 4], UNVERIFIED_DUPLICATE)
    await env.outbox.close()  # the crew looks at the file as the daemon left it
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["outbox", "list", "--db", str(env.outbox.path), "--json"]
    )
    assert result.exit_code == 0, result.output
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["num_passing"], r["state"], r["reason"]) for r in listed] == [
        (n, "Sent", "duplicate, not verified: key cannot read") for n in (1, 2, 3, 4)
    ]
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["outbox", "list", "--db", str(env.outbox.path)])
    assert result.stdout.count("duplicate, not verified: key cannot read") == 4


async def test_duplicates_of_re_sent_rows_need_no_reason(env: Env) -> None:
    """Re-sends after a lost answer are expected duplicates: nothing to tag, nothing to alert."""
    await env.add(3)
    env.emu.set_faults(drop_after_commit=1.0)
    writer = client_for(env.emu, W_KEY)
    try:
        up = Uploader(env.outbox, writer, fast(linger_s=0.0), can_read=False)
        async with running(up):
            await eventually(lambda: _is(up.status.retries >= 1), what="a lost answer")
            env.emu.set_faults(drop_after_commit=0.0)
            await eventually(await all_sent(env, 3), what="3 Sent")
    finally:
        await writer.close()
    assert [r.reason for r in await env.outbox.rows(env.token)] == [None, None, None]
    assert not up.status.alerts


async def _is(value: bool) -> bool:
    return value
