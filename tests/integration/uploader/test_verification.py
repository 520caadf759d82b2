"""The verification collaborator: the verdict of a read-back (ok, someone else's, missing, unverified), and the
crew's `reconcile` reaching the same verdict as the uploader for the same cloud data."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import cli
from gateway.cloud.client import RufusClient
from gateway.model import Passing
from gateway.uplink import Uplink, UploaderStatus
from gateway.verification import UNVERIFIED_DUPLICATE, UNVERIFIED_SHORT, Verdict, Verifier, compare
from tests.fixtures.daemon import write_config
from tests.integration.uploader.helpers import T0, W_KEY, Env, client_for


def _uplink(env: Env, client: RufusClient | None = None) -> Uplink:
    return Uplink(env.outbox, client or env.client, UploaderStatus(), backoff_base=0.01, backoff_cap=0.05)


async def _theirs_at_2_ours_at_1_none_at_3(env: Env) -> None:
    """The cloud holds our passing 1, someone else's at 2, nothing at 3 (of our 1..3)."""
    await env.add(3)
    ours = {r.passing.num_passing: r.passing for r in await env.outbox.rows(env.token)}
    theirs = Passing(timestamp=T0 + timedelta(hours=1), num_passing=2, bib="X2")
    await env.client.insert_passings(env.token, [ours[1], theirs])


async def test_compare_sorts_rows_by_what_the_cloud_holds(env: Env) -> None:
    await _theirs_at_2_ours_at_1_none_at_3(env)
    rows = await env.outbox.rows(env.token)
    verdict = compare(rows, await env.client.session_passings(env.token))
    assert verdict == Verdict(ok=[1], mismatched=[2], missing=[3])
    assert verdict.not_ours == [2, 3]


async def test_the_same_bib_at_another_millisecond_is_someone_else(env: Env) -> None:
    await env.add(1)
    [row] = await env.outbox.rows(env.token)
    moved = Passing(timestamp=row.passing.timestamp + timedelta(milliseconds=1), num_passing=1, bib=row.passing.bib)
    await env.client.insert_passings(env.token, [moved])
    assert compare([row], await env.client.session_passings(env.token)).mismatched == [1]


async def test_verify_reads_back_and_judges_each_row(env: Env) -> None:
    await _theirs_at_2_ours_at_1_none_at_3(env)
    rows = await env.outbox.rows(env.token)
    uplink = _uplink(env)
    verdict = await Verifier(uplink).verify(env.token, rows, fresh={1, 2, 3}, inserted=0, duplicates=2)
    assert verdict == Verdict(ok=[1], mismatched=[2], missing=[3])
    assert any("counted only 2 of 3" in a for a in uplink.status.alerts)


async def test_verify_without_read_access_is_unverified_with_the_reason(env: Env) -> None:
    await _theirs_at_2_ours_at_1_none_at_3(env)
    rows = await env.outbox.rows(env.token)
    writer = client_for(env.emu, W_KEY)
    try:
        uplink = _uplink(env, writer)
        verifier = Verifier(uplink)
        duplicate = await verifier.verify(env.token, rows, fresh={2, 3}, inserted=1, duplicates=2)
        short = await verifier.verify(env.token, rows, fresh=set(), inserted=1, duplicates=1)
    finally:
        await writer.close()
    assert uplink.status.can_read is False  # the 403 on the read-back was recorded, once
    assert duplicate == Verdict(ok=[1, 2, 3], unverified={2: UNVERIFIED_DUPLICATE, 3: UNVERIFIED_DUPLICATE})
    assert short == Verdict(ok=[1, 2, 3], unverified=dict.fromkeys([1, 2, 3], UNVERIFIED_SHORT))


async def test_reconcile_and_the_uploader_reach_the_same_verdict(env: Env, tmp_path: Path) -> None:
    await _theirs_at_2_ours_at_1_none_at_3(env)
    rows = await env.outbox.rows(env.token)
    verdict = await Verifier(_uplink(env)).verify(env.token, rows, fresh=set(), inserted=0, duplicates=3)
    # as if each had been acknowledged: reconcile judges Sent rows
    await env.outbox.mark_sent(env.token, [1, 2, 3])
    await env.outbox.close()  # reconcile opens the database itself (and requeues through it, no daemon runs)
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url=env.emu.base_url,
        api_key=env.emu.api_key,
        readers=[{"name": "finish", "url": "tcp-listen://127.0.0.1:9", "format": "csv"}],
        db=str(env.outbox.path),
    )
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["reconcile", "--config", str(cfg)])
    assert result.exit_code == 1, result.output
    assert verdict.not_ours == [2, 3]
    assert f"session {env.token}: 2 passing(s) marked Sent are not in the cloud (requeued): 2, 3" in result.output
