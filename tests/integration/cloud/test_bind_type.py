"""One page version of the vendor's bind requires `type`: the gateway always sends one, so it binds against
an emulator playing that version (`bind_requires_type`), whether the daemon, `device bind` or the demo binds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway import config, lifecycle
from gateway.cloud import DeviceBind, RufusClient
from gateway.emulator import ApiKey, Emulator
from gateway.errors import BadRequestError
from gateway.store import Store
from tests.e2e.support import cli
from tests.fixtures.daemon import write_config

KEY = "ror-0123456789abcdef0a1b"


@pytest.fixture
async def strict(emulator_factory: Any) -> Emulator:
    emu: Emulator = await emulator_factory(bind_requires_type=True, api_keys=[ApiKey(KEY, "READ_WRITE", True)])
    return emu


async def test_the_strict_emulator_refuses_a_bind_without_type(strict: Emulator) -> None:
    async with RufusClient(strict.base_url, KEY) as client:
        with pytest.raises(BadRequestError) as err:
            await client.bind_device(DeviceBind("One4All", "SN-1"))
        assert err.value.description is not None and "type" in err.value.description
        bound = await client.bind_device(DeviceBind("One4All", "SN-1", type="One4All"))
        assert (await client.device_info(bound.deviceid)).type == "One4All"


@pytest.mark.parametrize(("line", "expected"), [("", "One4All"), ('type = ""', "One4All"), ('type = "Pi-4G"', "Pi-4G")])
async def test_lifecycle_binds_with_the_configured_or_default_type(
    tmp_path: Path, strict: Emulator, line: str, expected: str
) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[cloud]\nbase_url = "{strict.base_url}"\napi_key = "{KEY}"\n'
        f'[device]\nserial_number = "SN-T"\nmodel = "One4All"\n{line}\n'
        f'[outbox]\npath = "{tmp_path / "outbox.db"}"\n'
    )
    settings = config.load(cfg, environ={})
    assert settings.device.type == expected
    outbox = await Store.open(settings.outbox.path)
    try:
        async with RufusClient(strict.base_url, KEY) as client:
            ls = lifecycle.LifecycleSettings.from_settings(settings, patient=False)
            deviceid = await lifecycle.resolve_device(outbox, client, ls)
            assert deviceid is not None
            assert (await client.device_info(deviceid)).type == expected
    finally:
        await outbox.close()


async def test_device_bind_command_binds_against_the_strict_emulator(tmp_path: Path, strict: Emulator) -> None:
    cfg = write_config(
        tmp_path / "gw.toml", base_url=strict.base_url, api_key=KEY, readers=[], db=str(tmp_path / "outbox.db")
    )
    code, out, err = await cli("device", "bind", "--config", str(cfg))
    assert code == 0, out + err
    deviceid = out.split()[-1]
    async with RufusClient(strict.base_url, KEY) as client:
        info = await client.device_info(deviceid)
    assert (info.serial_number, info.type) == ("SIM-0001", "One4All")
