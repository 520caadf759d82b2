"""Crew commands that write, while the daemon runs: they go through its control endpoint (invariant 8)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.emulator import Emulator
from tests.e2e.support import KEY, cli, cloud_nums, csv_lines, make, send, until
from tests.fixtures.daemon import Daemon, free_port, write_config


async def test_outbox_prune_goes_through_the_running_daemon(tmp_path: Path, enveloped: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    try:
        await send(port, csv_lines(3))
        await until(lambda: d.count("Sent") == 3, what="3 Sent")
        code, out, err = await cli("outbox", "prune", "--config", str(d.config), "--older-than", "0")
        assert code == 0, out + err
        assert out.startswith("pruned 3 Sent passings")
        assert d.query("select count(*) from passings")[0][0] == 0
        assert d.query("select count(*) from reads")[0][0] == 3  # the journal is kept
        assert "pruned sent passings" in d.output()  # logged by the daemon, the one writer
        await send(port, csv_lines(1, start=3))  # numbering never reuses a pruned number
        await until(lambda: d.query("select num_passing, state from passings") == [(4, "Sent")], what="4 Sent")
        assert d.proc is not None and d.proc.returncode is None
    finally:
        await d.kill()


async def test_device_bind_and_info_through_the_running_daemon(tmp_path: Path, enveloped: Emulator) -> None:
    port = free_port()
    readers = [{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}]
    # The daemon runs with no device to bind (no serial number, no model): it journals, numbers nothing.
    daemon_cfg = write_config(tmp_path / "gw.toml", base_url=enveloped.base_url, api_key=KEY, readers=readers)
    text = daemon_cfg.read_text()
    daemon_cfg.write_text(re.sub(r"(?m)^(serial_number|model) = .*\n", "", text))
    # The crew's config: the same database, with the device to bind.
    crew_cfg = tmp_path / "crew.toml"
    crew_cfg.write_text(text.replace('"SIM-0001"', '"SIM-0042"'))
    d = Daemon(daemon_cfg)
    await d.start()
    try:
        assert enveloped.state()["devices"] == []
        code, out, err = await cli("device", "bind", "--config", str(crew_cfg))
        assert code == 0, out + err
        [device] = enveloped.state()["devices"]
        assert device["serial_number"] == "SIM-0042" and device["model"] == "One4All"
        assert out.strip() == f"deviceid {device['deviceid']}"
        assert d.query("select value from meta where key='deviceid'") == [(device["deviceid"],)]
        # again: the stored device is kept, not bound a second time
        code, out, err = await cli("device", "bind", "--config", str(crew_cfg))
        assert code == 0 and out.strip() == f"deviceid {device['deviceid']}", out + err
        assert len(enveloped.state()["devices"]) == 1
        code, out, err = await cli("device", "info", "--config", str(crew_cfg))
        assert code == 0, out + err
        info = json.loads(out)
        assert info["deviceid"] == device["deviceid"] and info["serial_number"] == "SIM-0042"
        # the daemon uses the device at once: a session for it, and passings flow
        code, out, err = await cli("session", "new", "--config", str(crew_cfg))
        assert code == 0, out + err
        token = out.split()[-1]
        assert enveloped.state()["sessions"][token]["deviceid"] == device["deviceid"]
        await send(port, csv_lines(2))
        await until(lambda: cloud_nums(enveloped).get(token) == [1, 2], what="2 passings in the new session")
    finally:
        await d.kill()


async def test_device_bind_and_info_without_a_daemon(tmp_path: Path, enveloped: Emulator) -> None:
    cfg = write_config(tmp_path / "gw.toml", base_url=enveloped.base_url, api_key=KEY, readers=[])
    code, out, err = await cli("device", "bind", "--config", str(cfg))
    assert code == 0, out + err
    [device] = enveloped.state()["devices"]
    assert out.strip() == f"deviceid {device['deviceid']}" and device["serial_number"] == "SIM-0001"
    code, out, err = await cli("device", "info", "--config", str(cfg))
    assert code == 0, out + err
    info = json.loads(out)
    assert (info["deviceid"], info["model"], info["alias"]) == (device["deviceid"], "One4All", "test pi")
