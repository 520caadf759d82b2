"""`offline` switched quickly back and forth, directly or by concurrent admin requests: the flag and the
API port must always agree (offline = connections refused, online = answering)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from gateway.emulator import Emulator, Faults

from .test_faults_admin import admin, call


async def refused(emu: Emulator) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", emu.api_port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def assert_consistent(emu: Emulator) -> None:
    await asyncio.sleep(0.05)  # a relisten task, if any, has had every chance to run
    if emu.faults.offline:
        assert await refused(emu), "offline, yet the API port accepts connections"
    else:
        assert (await call(emu, "GET", "/devices", timeout=2))[0] == 200


async def test_off_on_off_in_quick_succession_ends_offline(emulator: Emulator) -> None:
    emulator.set_offline(True)
    emulator.set_offline(False)
    emulator.set_offline(True)  # before the relisten task started by the line above has run
    assert emulator.faults.offline is True
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", emulator.api_port)
    await assert_consistent(emulator)


async def test_on_off_on_in_quick_succession_ends_serving(emulator: Emulator) -> None:
    emulator.set_offline(True)
    emulator.set_offline(False)
    emulator.set_offline(True)
    emulator.set_offline(False)
    assert emulator.faults.offline is False
    await assert_consistent(emulator)
    # and the switch still works afterwards
    emulator.set_offline(True)
    await assert_consistent(emulator)
    assert await refused(emulator)


async def test_starting_offline_then_on_off_on(emulator_factory: Any) -> None:
    emu = await emulator_factory(faults=Faults(offline=True))
    assert await refused(emu)
    emu.set_offline(False)
    emu.set_offline(True)
    assert await refused(emu)
    await assert_consistent(emu)
    emu.set_offline(False)
    await emu.wait_online()
    await assert_consistent(emu)


async def test_concurrent_admin_posts_leave_flag_and_port_in_agreement(emulator: Emulator) -> None:
    status, _ = await admin(emulator, "POST", "/faults", {"offline": True})
    assert status == 200
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {emulator.admin_token}"}

        async def post(body: dict[str, Any]) -> int:
            async with http.post(emulator.admin_url + "/faults", json=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        for _ in range(15):
            # on then off, sent at once: the off may be handled before the relisten task runs
            statuses = await asyncio.gather(post({"offline": False}), post({"offline": True}))
            assert statuses == [200, 200]
            await assert_consistent(emulator)
            if not emulator.faults.offline:
                await post({"offline": True})
    # the last word was "offline" in every round
    assert emulator.faults.offline is True
    assert await refused(emulator)


async def test_stop_while_a_relisten_is_pending(emulator_factory: Any) -> None:
    emu = await emulator_factory()
    emu.set_offline(True)
    emu.set_offline(False)
    await emu.stop()  # must neither hang nor leave the socket open (the leak check would see it)
    with socket.socket() as probe:
        probe.settimeout(1)
        assert probe.connect_ex(("127.0.0.1", emu.api_port)) != 0


async def test_a_failed_switch_back_online_changes_nothing(emulator: Emulator) -> None:
    port = emulator.api_port
    assert (await admin(emulator, "POST", "/faults", {"offline": True}))[0] == 200
    with socket.socket() as squatter:  # something else takes the port while the emulator is offline
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        status, err = await admin(emulator, "POST", "/faults", {"offline": False, "error_rate": 0.5})
        assert status == 409
        assert str(port) in err["error"] and "still offline" in err["error"]
        assert err["faults"] == Faults(offline=True).as_dict()
        assert emulator.faults == Faults(offline=True)
        with pytest.raises(OSError, match="still offline"):
            emulator.set_faults(offline=False, latency_ms=5)
        assert emulator.faults == Faults(offline=True)
        _, faults = await admin(emulator, "GET", "/faults")
        assert faults == Faults(offline=True).as_dict()
    status, faults = await admin(emulator, "POST", "/faults", {"offline": False, "error_rate": 0.5})
    assert status == 200 and faults["offline"] is False and faults["error_rate"] == 0.5
    emulator.set_faults(error_rate=0)
    await assert_consistent(emulator)


async def test_a_relisten_that_fails_later_reports_offline(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.set_offline(True)

    async def failing(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("no server for you")

    monkeypatch.setattr(asyncio.get_running_loop(), "create_server", failing)
    emulator.set_offline(False)
    await emulator.wait_online()
    monkeypatch.undo()
    assert emulator.faults.offline is True
    await assert_consistent(emulator)
    emulator.set_offline(False)  # and it can still come back
    await emulator.wait_online()
    await assert_consistent(emulator)
    assert emulator.faults.offline is False
