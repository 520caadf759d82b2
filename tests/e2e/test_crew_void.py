"""`mark --void` against the running daemon: a manual passing a request may already have carried is not
voided, and it does reach the cloud."""

from __future__ import annotations

from pathlib import Path

from gateway.emulator import Emulator
from tests.e2e.support import cli, cloud_nums, csv_lines, make, send, until
from tests.fixtures.daemon import free_port


async def test_void_is_refused_while_the_uploader_retries_the_passing(tmp_path: Path, enveloped: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    try:
        await send(port, csv_lines(2))
        await until(lambda: d.count("Sent") == 2, what="2 Sent")
        enveloped.set_offline(True)
        code, out, err = await cli("mark", "777", "--config", str(d.config))
        assert code == 0 and "bib 777 -> num_passing 3" in out, out + err
        await until(lambda: d.query("select attempts from passings where num_passing=3")[0][0] > 0, what="tried")
        code, out, err = await cli("mark", "--void", "3", "--config", str(d.config))
        assert code != 0, out + err
        [line] = err.strip().splitlines()
        assert "num_passing 3" in line and "may be there" in line and "not voided" in line
        assert d.query("select state from passings where num_passing=3") == [("Pending",)]
        enveloped.set_offline(False)
        await until(lambda: d.query("select state from passings where num_passing=3") == [("Sent",)], what="Sent")
        [(_tok, nums)] = cloud_nums(enveloped).items()
        assert nums == [1, 2, 3]
    finally:
        await d.kill()
