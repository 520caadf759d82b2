"""Device and session resolution against the emulator: configured, stored, bound/created, adopted."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway import lifecycle
from gateway.cloud.models import DeviceBind, SessionCreate
from gateway.emulator import Emulator
from gateway.errors import GatewayError, RetryableError
from gateway.lifecycle import LifecycleSettings, resolve_device, resolve_session
from gateway.model import Passing
from gateway.store import Store
from gateway.uploader import Uploader
from tests.integration.uploader.helpers import (
    T0,
    W_KEY,
    Env,
    all_sent,
    client_for,
    cloud_nums,
    eventually,
    fast,
    make_env,
    running,
)

FAST = {"backoff_base": 0.02, "backoff_cap": 0.1}


def ls(**kw: Any) -> LifecycleSettings:
    return LifecycleSettings(**(FAST | kw))


async def test_bind_then_create_then_resume(cloud: Emulator, tmp_path: Path) -> None:
    client = client_for(cloud)
    settings = ls(serial_number="SN-42", model="One4All", device_alias="finish", session_alias="10k")
    try:
        outbox = await Store.open(tmp_path / "o.db")
        try:
            deviceid = await resolve_device(outbox, client, settings)
            assert deviceid is not None and len(deviceid) == 64
            assert await outbox.get_meta("deviceid") == deviceid
            rec = await resolve_session(outbox, client, settings)
            assert rec is not None and rec.created_by_us and rec.floor == 0 and rec.deviceid == deviceid
            info = await client.session_info(rec.token_session)
            assert info.active and info.alias == "10k"
        finally:
            await outbox.close()
        # A restart resumes exactly where it stopped: same device, same session, nothing new in the cloud.
        outbox = await Store.open(tmp_path / "o.db")
        try:
            assert await resolve_device(outbox, client, settings) == deviceid
            again = await resolve_session(outbox, client, settings)
            assert again is not None and again.token_session == rec.token_session
            assert len(await client.device_sessions(deviceid)) == 1
        finally:
            await outbox.close()
    finally:
        await client.close()


async def test_nothing_configured_gives_no_session(cloud: Emulator, tmp_path: Path) -> None:
    client = client_for(cloud)
    outbox = await Store.open(tmp_path / "o.db")
    try:
        assert await resolve_device(outbox, client, ls()) is None
        assert await resolve_session(outbox, client, ls()) is None
        with pytest.raises(GatewayError, match="no deviceid"):
            await lifecycle.new_session(outbox, client, "x", None)
    finally:
        await outbox.close()
        await client.close()


async def test_adopted_session_numbers_above_the_clouds_highest(cloud: Emulator, tmp_path: Path) -> None:
    emu = cloud
    client = client_for(emu)
    outbox = await Store.open(tmp_path / "o.db")
    try:
        deviceid = (await client.bind_device(DeviceBind("One4All", "SN-ADOPT"))).deviceid
        token = (await client.create_session(SessionCreate(deviceid, "shared"))).token_session
        theirs = [Passing(timestamp=T0 + timedelta(seconds=n), num_passing=n, bib=f"X{n}") for n in range(1, 11)]
        await client.insert_passings(token, theirs)
        rec = await resolve_session(outbox, client, ls(deviceid=deviceid, token_session=token))
        assert rec is not None and rec.token_session == token
        assert not rec.created_by_us and rec.floor == 10
        env = Env(emu, outbox, client, deviceid, token)
        assert await env.add(5) == [11, 12, 13, 14, 15]
        up = Uploader(outbox, client, fast())
        async with running(up):
            await eventually(await all_sent(env, 5), what="5 Sent")
        assert cloud_nums(emu, token) == list(range(1, 16))
        assert not up.status.alerts and up.status.duplicates == 0
    finally:
        await outbox.close()
        await client.close()


async def test_cloud_unreachable_at_start_is_waited_out(cloud: Emulator, tmp_path: Path) -> None:
    emu = cloud
    client = client_for(emu)
    outbox = await Store.open(tmp_path / "o.db")
    try:
        emu.set_offline(True)
        task = asyncio.create_task(
            resolve_session(outbox, client, ls(serial_number="SN-OFF", model="One4All", session_alias="r"))
        )
        await asyncio.sleep(0.4)
        assert not task.done()  # retrying, not crashed
        await outbox.journal("mat", [])  # the database stays usable meanwhile
        emu.set_offline(False)
        rec = await asyncio.wait_for(task, 5)
        assert rec is not None and rec.created_by_us
        assert await outbox.get_meta("deviceid") is not None
    finally:
        await outbox.close()
        await client.close()


async def test_new_and_close_session(env: Env) -> None:
    await env.add(3)
    rec = await lifecycle.new_session(env.outbox, env.client, "second wave", env.deviceid)
    assert rec.created_by_us and rec.token_session != env.token
    current = await env.outbox.current_session()
    assert current is not None and current.token_session == rec.token_session
    assert not (await env.client.session_info(env.token)).active  # the cloud closed the previous one
    await lifecycle.close_session(env.outbox, env.client, rec.token_session)
    assert not (await env.client.session_info(rec.token_session)).active
    # The first session's passings are still there, Pending, for the uploader to read back / move / hold.
    assert (await env.states(env.token)) == {"Pending": 3}


async def test_a_refused_read_belongs_to_that_client_only(cloud: Emulator, logs: list[dict[str, Any]]) -> None:
    # The capability lives on the client (no module-level registry): the key that was refused stays refused,
    # and the client a reload builds for a new key starts trusted, warning again only if it is refused too.
    old, new = client_for(cloud, W_KEY), client_for(cloud)
    lifecycle.read_denied(old, "start-up probe")
    lifecycle.read_denied(old, "duplicate read-back")
    assert old.read_access.refused == "start-up probe" and not lifecycle.can_read(old)
    assert new.read_access.allowed and lifecycle.can_read(new)
    lifecycle.read_denied(new, "reconcile")
    warned = [e["refused"] for e in logs if e["event"].startswith("API key may not read")]
    assert warned == ["start-up probe", "reconcile"]


async def test_key_that_cannot_read_is_reported_once(
    cloud: Emulator, tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    emu = cloud
    admin = client_for(emu)
    client = client_for(emu, W_KEY)
    env = await make_env(emu, tmp_path, client=admin)
    try:
        await env.add(4)
        # Someone else's passing at our number 2: without read access this cannot be compared, only reported.
        await admin.insert_passings(env.token, [Passing(timestamp=T0, num_passing=2, bib="X2")])
        rec = await resolve_session(env.outbox, client, ls())
        assert rec is not None and rec.token_session == env.token
        assert not lifecycle.can_read(client)
        up = Uploader(env.outbox, client, fast())
        assert not up.can_read
        async with running(up):
            await eventually(await all_sent(env, 4), what="4 Sent with a WRITE-only key")
        assert cloud_nums(emu, env.token) == [1, 2, 3, 4]
        assert any("may not read them back" in a for a in up.status.alerts)
        warned = [e for e in logs if e["event"].startswith("API key may not read")]
        assert len(warned) == 1 and len(warned[0]["checks_off"]) == 4  # one warning, listing the checks
    finally:
        await client.close()
        await admin.close()
        await env.outbox.close()


async def test_wrong_key_at_start_waits_for_the_reloaded_one(cloud: Emulator, tmp_path: Path) -> None:
    """The service passes a callable: a SIGHUP with the fixed key reaches a lifecycle still waiting."""
    clients = {"now": client_for(cloud, "ror-00000000000000000000")}
    bad = clients["now"]
    outbox = await Store.open(tmp_path / "o.db")
    try:
        task = asyncio.create_task(
            resolve_session(outbox, lambda: clients["now"], ls(serial_number="SN-KEY", model="One4All"))
        )
        await eventually(lambda: _is(sum(r["status"] == 401 for r in cloud.requests) >= 2), what="401s")
        assert not task.done()
        clients["now"] = client_for(cloud)
        rec = await asyncio.wait_for(task, 5)
        assert rec is not None and rec.created_by_us
        assert await outbox.get_meta("deviceid") is not None
    finally:
        await outbox.close()
        await bad.close()
        await clients["now"].close()


async def _is(value: bool) -> bool:
    return value


async def test_stored_device_the_cloud_forgot_is_bound_again(cloud: Emulator, tmp_path: Path) -> None:
    client = client_for(cloud)
    outbox = await Store.open(tmp_path / "o.db")
    try:
        await outbox.set_meta("deviceid", "A" * 64)  # bound once, then unbound in the cloud
        rec = await resolve_session(outbox, client, ls(serial_number="SN-AGAIN", model="One4All"))
        assert rec is not None and rec.deviceid != "A" * 64
        assert await outbox.get_meta("deviceid") == rec.deviceid
        assert [d["serial_number"] for d in cloud.state()["devices"]] == ["SN-AGAIN"]
    finally:
        await outbox.close()
        await client.close()


async def test_not_patient_raises_at_once_for_the_crew(cloud: Emulator, tmp_path: Path) -> None:
    """`device bind` at the keyboard: an unreachable cloud is an error now, not a wait."""
    client = client_for(cloud)
    outbox = await Store.open(tmp_path / "o.db")
    try:
        cloud.set_offline(True)
        with pytest.raises(RetryableError):
            await resolve_device(outbox, client, ls(serial_number="SN-1", model="One4All", patient=False))
        assert await outbox.get_meta("deviceid") is None
    finally:
        await outbox.close()
        await client.close()


async def test_lost_answer_to_session_creation_does_not_create_two(cloud: Emulator, tmp_path: Path) -> None:
    client = client_for(cloud)
    outbox = await Store.open(tmp_path / "o.db")
    try:
        deviceid = (await client.bind_device(DeviceBind("One4All", "SN-DROP"))).deviceid
        cloud.set_faults(drop_after_commit=1.0)  # every write committed, every answer lost
        rec = await asyncio.wait_for(resolve_session(outbox, client, ls(deviceid=deviceid, session_alias="r")), 10)
        cloud.set_faults(drop_after_commit=0.0)
        assert rec is not None and rec.created_by_us
        sessions = await client.device_sessions(deviceid)
        assert [s.token_session for s in sessions] == [rec.token_session]  # one session, and it is ours
        assert cloud.faults_fired["drop_after_commit"] >= 1
    finally:
        await outbox.close()
        await client.close()


async def test_stored_session_resumes_without_the_cloud(env: Env) -> None:
    """A restart during an outage: the stored session is used at once; the uploader waits out the cloud."""
    env.emu.set_offline(True)
    rec = await asyncio.wait_for(resolve_session(env.outbox, env.client, ls()), 2)
    assert rec is not None and rec.token_session == env.token
