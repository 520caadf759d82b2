"""End to end: the real `rufus-gateway run` subprocess, real sockets, the emulator as the cloud."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.emulator import Emulator
from tests.e2e.support import KEY, cli, cloud_nums, csv_lines, make, send, until
from tests.fixtures.daemon import Daemon, free_port, write_config


async def test_reads_reach_the_cloud_gapless_and_are_sent(tmp_path: Path, cloud: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, cloud, port)
    await d.start()
    try:
        await send(port, csv_lines(40))
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 40, what="40 passings in the cloud")
        await until(lambda: d.count("Sent") == 40, what="Sent")
        [(token, nums)] = cloud_nums(cloud).items()
        assert nums == list(range(1, 41))
        rows = d.query("select num_passing, bib, token_session from passings order by num_passing")
        assert [r[0] for r in rows] == list(range(1, 41))
        assert {r[2] for r in rows} == {token}
        assert [r[1] for r in rows] == [str(100 + i) for i in range(40)]
        assert await d.terminate() == 0
    finally:
        await d.kill()
    assert KEY not in d.output()


async def test_sigterm_under_load_exits_zero_and_a_restart_finishes_the_job(tmp_path: Path, cloud: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, cloud, port)
    await d.start()
    cloud.set_offline(True)  # everything stays Pending while we stop
    try:
        await send(port, csv_lines(300))
        await until(lambda: d.query("select count(*) from reads")[0][0] == 300, what="300 reads journaled")
        t0 = asyncio.get_running_loop().time()
        assert await d.terminate(timeout=10) == 0
        assert asyncio.get_running_loop().time() - t0 < 10
        assert d.query("select count(*) from reads")[0][0] == 300
        cloud.set_offline(False)
        await d.start()
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 300, what="all 300 in the cloud")
        [(_tok, nums)] = cloud_nums(cloud).items()
        assert nums == list(range(1, 301))
        assert cloud.state()["counts"]["inserted"] == 300
    finally:
        await d.kill()


async def test_bad_config_exits_78_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[cloud]\nbatch_size = 0\n")
    code, _out, err = await cli("run", "--config", str(cfg))
    assert code == 78
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bad.toml:2: [cloud] batch_size: must be between 1 and 5000" in lines[0]


async def test_a_second_daemon_on_the_same_database_refuses(tmp_path: Path, enveloped: Emulator) -> None:
    d = make(tmp_path, enveloped, free_port())
    await d.start()
    try:
        code, _out, err = await cli("run", "--config", str(d.config))
        assert code == 73
        assert "in use by another rufus-gateway" in err and "Traceback" not in err
        assert d.proc is not None and d.proc.returncode is None  # the first one is unharmed
    finally:
        await d.kill()


async def test_wrong_key_stops_uploading_keeps_reading_then_sighup_with_fixed_key_resumes(
    tmp_path: Path, cloud: Emulator
) -> None:
    port = free_port()
    wrong = "ror-ffffffffffffffffffff"
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url=cloud.base_url,
        api_key=wrong,
        readers=[{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}],
    )
    d = Daemon(cfg)
    await d.start()
    try:
        await send(port, csv_lines(10))
        await until(lambda: d.query("select count(*) from reads")[0][0] == 10, what="reads journaled despite bad key")
        await asyncio.sleep(1.0)
        assert cloud_nums(cloud) == {}
        assert d.proc is not None and d.proc.returncode is None
        cfg.write_text(cfg.read_text().replace(wrong, KEY))
        d.proc.send_signal(signal.SIGHUP)
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 10, what="upload after SIGHUP")
        assert next(iter(cloud_nums(cloud).values())) == list(range(1, 11))
    finally:
        await d.kill()
    assert wrong not in d.output() and KEY not in d.output()


async def test_reject_bib_poison_is_set_aside_and_the_rest_flow(tmp_path: Path, cloud: Emulator) -> None:
    port = free_port()
    cloud.set_faults(reject_bib="113")
    d = make(tmp_path, cloud, port)
    await d.start()
    try:
        await send(port, csv_lines(30))
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 29, what="29 good passings")
        await until(lambda: d.count("Rejected") == 1, what="poison")
        [(num, bib, reason)] = d.query("select num_passing, bib, reason from passings where state='Rejected'")
        assert bib == "113" and num == 14 and "113" in reason
        [(_tok, nums)] = cloud_nums(cloud).items()
        assert sorted([*nums, num]) == list(range(1, 31))
    finally:
        await d.kill()


async def test_configured_session_that_already_holds_passings_numbers_above_it(tmp_path: Path, cloud: Emulator) -> None:
    from gateway.cloud.client import RufusClient
    from gateway.cloud.models import DeviceBind, SessionCreate
    from gateway.model import Passing, parse_ts

    async with RufusClient(cloud.base_url, KEY) as c:
        dev = (await c.bind_device(DeviceBind("One4All", "OTHER-1"))).deviceid
        tok = (await c.create_session(SessionCreate(dev, "shared"))).token_session
        await c.insert_passings(tok, [Passing(parse_ts("2026-05-03T08:00:00.000Z"), n, f"9{n}") for n in range(1, 8)])
    port = free_port()
    d = make(tmp_path, cloud, port, session={"token_session": tok}, device={"deviceid": dev})
    await d.start()
    try:
        await send(port, csv_lines(5))
        await until(lambda: len(cloud_nums(cloud)[tok]) == 12, what="5 more passings")
        assert cloud_nums(cloud)[tok] == list(range(1, 13))
        assert [r[0] for r in d.query("select num_passing from passings order by 1")] == [8, 9, 10, 11, 12]
    finally:
        await d.kill()


async def test_mark_through_the_running_daemon_then_reconcile_says_yes(tmp_path: Path, enveloped: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    try:
        await send(port, csv_lines(3))
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 3, what="3 passings")
        code, out, err = await cli("mark", "777", "--time", "2026-05-03T10:00:00+02:00", "--config", str(d.config))
        assert code == 0, err
        assert "bib 777 -> num_passing 4" in out
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 4, what="manual passing uploaded")
        [(origin, ts)] = d.query("select origin, timestamp from passings where bib='777'")
        assert origin == "manual" and ts.startswith("2026-05-03T08:00:00.000")
        await until(lambda: d.count("Pending") == 0, what="sent")
        code, out, err = await cli("reconcile", "--config", str(d.config))
        assert code == 0, out + err
        assert out.startswith("yes: all 4 passings")
    finally:
        await d.kill()


async def test_reconcile_finds_and_requeues_what_the_cloud_lost(tmp_path: Path, enveloped: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    try:
        await send(port, csv_lines(5))
        await until(lambda: d.count("Sent") == 5, what="5 Sent")
    finally:
        assert await d.terminate() == 0
    # the cloud loses passings 2 and 4 (an operator deleted them, a restore from backup...)
    cloud_db = sqlite3.connect(str(tmp_path / "cloud.db"))
    cloud_db.execute("delete from passings where num_passing in (2, 4)")
    cloud_db.commit()
    cloud_db.close()
    await enveloped.stop()
    await enveloped.start()
    code, out, _err = await cli("reconcile", "--config", str(d.config))
    assert code == 1
    assert "2 passing(s) marked Sent are not in the cloud (requeued): 2, 4" in out
    assert [r[0] for r in d.query("select num_passing from passings where state='Pending' order by 1")] == [2, 4]
    await d.start()
    try:
        await until(lambda: next(iter(cloud_nums(enveloped).values())) == [1, 2, 3, 4, 5], what="requeued re-sent")
    finally:
        await d.kill()


@pytest.mark.parametrize("failpoint", ["after_journal_commit", "mid_batch_commit", "after_cloud_2xx_before_mark_sent"])
async def test_killed_at_each_failpoint_then_restarted_loses_and_doubles_nothing(
    tmp_path: Path, cloud: Emulator, failpoint: str
) -> None:
    port = free_port()
    d = make(tmp_path, cloud, port)
    await d.start(failpoint=f"{failpoint}:2")
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        # Chunks apart in time make separate journal commits and upload batches; keep the reader going until
        # the failpoint's 2nd hit kills the daemon (under load, chunks may merge, so no fixed count).
        assert d.proc is not None
        sent = 0
        while d.proc.returncode is None and sent < 500:
            try:
                w.write("".join(line + "\n" for line in csv_lines(5, start=sent)).encode())
                await w.drain()
            except ConnectionError:
                break  # killed: a fire-and-forget reader loses what was on the wire, not what was journaled
            sent += 5
            await asyncio.sleep(0.3)
        assert await d.wait_exit(20) == -signal.SIGKILL, d.output()[-2000:]
        w.close()
        journaled = d.query("select count(*) from reads")[0][0]
        await d.start()
        await send(port, csv_lines(25, start=1000))  # the reader keeps going after the restart
        # every read the gateway committed, plus all sent after the restart, reaches the cloud exactly once
        expected = journaled + 25
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == expected, what=f"{expected}")
        await until(lambda: d.count("Pending") == 0, what="Sent")
        [(_tok, nums)] = cloud_nums(cloud).items()
        assert nums == list(range(1, expected + 1))
        assert cloud.state()["counts"]["inserted"] == expected
        bibs = [r[0] for r in d.query("select bib from passings order by num_passing")]
        assert len(bibs) == len(set(bibs)) == expected
        assert d.query("pragma integrity_check") == [("ok",)]
    finally:
        await d.kill()


FAULTS: dict[str, dict[str, Any]] = {
    "offline": {"offline": True},  # switched on once the first passings are in, off again after the rest
    "500": {"error_rate": 0.4, "error_status": 500},
    "5xx with Retry-After": {"error_rate": 0.4, "error_status": 503, "retry_after": 0.2},
    "429": {"error_rate": 0.4, "error_status": 429, "retry_after": 0.1},
    "commit then drop": {"drop_after_commit": 0.5},
    "hang past the timeout": {"hang_rate": 0.3, "hang_s": 30.0},
    "slow": {"latency_ms": 300},
}
# The gateway's side of a fault: a request held by the cloud is given up after connect + read timeout; short
# ones keep that test to seconds (the uploader's behaviour does not depend on how long it waited).
GATEWAY: dict[str, dict[str, str]] = {
    "hang past the timeout": {
        "connect_timeout_s = 2.0": "connect_timeout_s = 0.5",
        "read_timeout_s = 3.0": "read_timeout_s = 1.0",
    }
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_each_cloud_fault_mode_still_delivers_exactly_once(tmp_path: Path, cloud: Emulator, fault: str) -> None:
    port = free_port()
    faults = dict(FAULTS[fault])
    offline = faults.pop("offline", False)
    cloud.set_faults(**faults)
    d = make(tmp_path, cloud, port, cloud={"batch_size": 7})  # several batches, so faults hit mid-run
    text = d.config.read_text()
    for was, now in GATEWAY.get(fault, {}).items():
        assert was in text
        text = text.replace(was, now)
    d.config.write_text(text)
    await d.start()
    try:
        for chunk in range(4):
            if offline and chunk == 1:
                # session made and first passings in: the outage hits a gateway in the middle of its work
                await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 10, what="first 10")
                cloud.set_offline(True)
            await send(port, csv_lines(10, start=chunk * 10))
            await asyncio.sleep(0.2)
        if offline:
            pending = "select count(*) from passings where state='Pending'"
            await until(lambda: d.query(pending)[0][0] == 30, what="30 held while offline")
            await asyncio.sleep(1.0)  # a few refused attempts (backoff cap 1 s)
            cloud.set_offline(False)
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 40, timeout=60, what="40 in cloud")
        await until(lambda: d.count("Sent") == 40, timeout=60, what="all Sent")
        [(_tok, nums)] = cloud_nums(cloud).items()
        assert nums == list(range(1, 41))
        state = cloud.state()
        assert state["counts"]["inserted"] == 40
        if "latency_ms" not in FAULTS[fault]:  # latency delays every answer; the others must have fired
            assert sum(state["faults_fired"].values()) > 0, "the fault never fired: the test proved nothing"
        if offline:
            # the uploader saw the outage and its end (first failure a warning, then the recovery)
            assert "cloud upload failed" in d.output() and "cloud upload recovered" in d.output()
    finally:
        await d.kill()


async def test_offline_cloud_and_an_emulator_restart_lose_nothing(tmp_path: Path, cloud: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, cloud, port)
    await d.start()
    try:
        await send(port, csv_lines(10))
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 10, what="first 10")
        cloud.set_offline(True)
        await send(port, csv_lines(10, start=10))
        await until(lambda: d.count("Pending") == 10, what="pend")
        cloud.set_offline(False)
        await cloud.stop()  # the cloud itself restarts (state persisted in its --db)
        await send(port, csv_lines(10, start=20))
        await cloud.start()
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 30, timeout=40, what="all 30")
        [(_tok, nums)] = cloud_nums(cloud).items()
        assert nums == list(range(1, 31))
    finally:
        await d.kill()


@pytest.mark.parametrize("follow", [False, True])
async def test_session_closed_in_the_cloud_holds_or_follows(tmp_path: Path, cloud: Emulator, follow: bool) -> None:
    from gateway.cloud.client import RufusClient
    from gateway.cloud.models import SessionCreate

    port = free_port()
    d = make(tmp_path, cloud, port, session={"follow_active_session": follow})
    await d.start()
    try:
        await send(port, csv_lines(5))
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 5, what="first 5")
        [first] = cloud_nums(cloud)
        deviceid = d.query("select value from meta where key='deviceid'")[0][0]
        async with RufusClient(cloud.base_url, KEY) as c:
            await c.close_session(first)  # the organiser closes it from the web app...
            if follow:
                created = await c.create_session(SessionCreate(deviceid, "after the break"))  # ...and opens another
                second = created.token_session
        await send(port, csv_lines(5, start=5))
        if follow:
            await until(lambda: len(cloud_nums(cloud).get(second, [])) == 5, timeout=30, what="moved")
            assert cloud_nums(cloud)[first] == [1, 2, 3, 4, 5]
            assert cloud_nums(cloud)[second] == [1, 2, 3, 4, 5]
            moved = d.query("select count(*) from passings where state='Moved' and token_session=?", first)[0][0]
            assert d.query("select count(*) from passings where token_session=? and state='Sent'", second)[0][0] == 5
            assert moved == 5  # the originals are kept, marked Moved, nothing deleted
        else:
            await until(lambda: d.count("Pending") == 5, what="held")
            await asyncio.sleep(1.5)
            assert cloud_nums(cloud)[first] == [1, 2, 3, 4, 5]
            assert d.count("Pending") == 5  # held, not dropped
            assert "closed" in d.output()
    finally:
        await d.kill()


async def test_mylaps_resends_after_a_kill_are_journaled_once_and_every_acked_read_reaches_the_cloud(
    tmp_path: Path, cloud: Emulator
) -> None:
    port = free_port()
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url=cloud.base_url,
        api_key=KEY,
        # the product's window: a simulated crossing's reads span a second or two of reader time
        readers=[{"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "mylaps", "dedup_window_s": 3.0}],
    )
    d = Daemon(cfg)
    # killed right after a journal commit, before the acks go out: the reader must send those again
    await d.start(failpoint="after_journal_commit:3")
    truth = tmp_path / "truth.jsonl"
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "simulate",
        "--format",
        "mylaps",
        "--to",
        f"tcp://127.0.0.1:{port}",
        "--runners",
        "40",
        "--speed",
        "600",
        "--seed",
        "3",
        "--truth",
        str(truth),
        "--ack-timeout",
        "30",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert await d.wait_exit(30) == -signal.SIGKILL, d.output()[-2000:]
        await d.start()
        out, err = await asyncio.wait_for(sim.communicate(), 90)
        assert sim.returncode == 0, out.decode() + err.decode()
        lines = [json.loads(x) for x in truth.read_text().splitlines()]
        sent = {x["seq"] for x in lines if x.get("type") == "read"}
        resent = [x for x in lines if x.get("type") == "read" and x.get("resend")]
        acked = {x["seq"] for x in lines if x.get("type") == "ack"}
        assert resent, "the kill left nothing unacknowledged: the test proved nothing"
        assert acked == sent  # every read the timer sent was acknowledged in the end
        rows = d.query("select seq from reads where link='mat'")
        assert sorted(r[0] for r in rows) == sorted(sent)  # each journaled exactly once
        chips = {r[0] for r in d.query("select chip from reads")}
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == len(chips), what="one per runner")
        [(_tok, nums)] = cloud_nums(cloud).items()
        assert nums == list(range(1, len(chips) + 1))
    finally:
        if sim.returncode is None:
            sim.kill()
            await sim.wait()
        await d.kill()


async def test_crew_commands_fail_fast_in_one_line_when_the_cloud_is_unreachable(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "gw.toml", base_url=f"http://127.0.0.1:{free_port()}/v0", api_key=KEY, readers=[])
    for args in (["device", "bind"], ["session", "new"]):
        code, out, err = await asyncio.wait_for(cli(*args, "--config", str(cfg)), 30)
        assert code == 2, out + err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "connection failed" in lines[0] and "Traceback" not in err


async def test_mark_and_void_without_a_running_daemon_use_the_database_directly(
    tmp_path: Path, enveloped: Emulator
) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    await send(port, csv_lines(2))
    await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 2, what="2 passings")
    assert await d.terminate() == 0
    code, out, err = await cli("mark", "555", "--config", str(d.config))
    assert code == 0 and "bib 555 -> num_passing 3" in out, out + err
    code, out, err = await cli("mark", "556", "--config", str(d.config))
    assert code == 0 and "bib 556 -> num_passing 4" in out, out + err
    code, out, err = await cli("mark", "--void", "4", "--config", str(d.config))
    assert code == 0 and "voided num_passing 4" in out, out + err
    code, out, err = await cli("mark", "--void", "1", "--config", str(d.config))  # a reader passing, Sent
    assert code == 1 and "not voided" in err
    await d.start()
    try:
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 3, what="the manual one sent")
        [(_tok, nums)] = cloud_nums(enveloped).items()
        assert nums == [1, 2, 3]  # 4 was voided: Voided locally, never sent
        assert d.query("select state, reason from passings where num_passing = 4") == [("Voided", "voided by operator")]
    finally:
        await d.kill()


async def test_reads_a_decoder_made_while_the_gateway_was_down_are_fetched_again(
    tmp_path: Path, enveloped: Emulator
) -> None:
    """RaceResult push mode sends new passings only: what the decoder recorded while the gateway was down
    is missing from the stream. The restarted gateway knows the last number it journaled, sees the jump,
    and asks for the missing range (`<first>:<count>`)."""
    from datetime import UTC, datetime, timedelta

    from gateway import formats
    from gateway.formats.base import ParseContext
    from gateway.model import Read

    fmt = formats.get("raceresult")
    rconv = fmt.reader_conversation(ParseContext(reader="box1"))
    t0 = datetime(2026, 5, 3, 9, 0, tzinfo=UTC)
    race = [Read(chip=f"{4000 + i}", bib=None, timestamp=t0 + timedelta(seconds=7 * i), rssi=60.0) for i in range(12)]
    encoded = [rconv.encode(r) for r in race]  # the decoder numbers them 1..12
    sessions: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await sessions.put((r, w))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url=enveloped.base_url,
        api_key=KEY,
        readers=[{"name": "box", "url": f"tcp://127.0.0.1:{port}", "format": "raceresult"}],
    )
    d = Daemon(cfg)
    try:
        await d.start()
        _r, w = await asyncio.wait_for(sessions.get(), 20)
        w.write(b"".join(encoded[:5]))  # 1..5 while the gateway is up
        await until(lambda: d.query("select count(*) from reads")[0][0] == 5, what="first 5")
        assert await d.terminate() == 0
        w.close()
        # 6..9 happen while it is down; after the restart the decoder pushes 10.. only
        await d.start()
        reader, w = await asyncio.wait_for(sessions.get(), 20)
        w.write(encoded[9])
        asked = b""
        async with asyncio.timeout(15):  # keepalives arrive too: bound the wait, not each read
            while b"6:4" not in asked:
                asked += await reader.read(4096)
        _acked, answer = rconv.on_bytes(asked)  # the decoder answers the re-fetch from its memory
        assert answer, "the decoder had nothing to send back"
        w.write(answer + b"".join(encoded[10:]))
        await until(lambda: d.query("select count(*) from reads")[0][0] == 12, what="all 12 journaled")
        assert sorted(r[0] for r in d.query("select seq from reads")) == list(range(1, 13))
        w.close()
    finally:
        await d.kill()
        server.close()
        await server.wait_closed()


async def test_session_new_show_close_through_the_running_daemon(tmp_path: Path, enveloped: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    try:
        await send(port, csv_lines(2))
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 2, what="2 passings")
        [first] = cloud_nums(enveloped)
        code, out, err = await cli("session", "new", "--alias", "wave 2", "--config", str(d.config))
        assert code == 0, out + err
        second = out.split()[-1]
        assert second != first and len(second) == 64
        await send(port, csv_lines(3, start=2))
        await until(lambda: len(cloud_nums(enveloped).get(second, [])) == 3, what="3 passings in the new session")
        assert cloud_nums(enveloped)[first] == [1, 2] and cloud_nums(enveloped)[second] == [1, 2, 3]
        code, out, err = await cli("session", "show", "--json", "--config", str(d.config))
        shown = {s["token_session"]: s for s in json.loads(out)}
        assert shown[second]["active"] and not shown[first]["active"] and shown[second]["sent"] == 3
        code, out, err = await cli("session", "close", "--config", str(d.config))
        assert code == 0 and out.strip() == f"closed session {second}", out + err
        assert enveloped.state()["sessions"][second]["active"] is False
    finally:
        await d.kill()


@pytest.mark.parametrize("check", [True, False], ids=["run --check", "run"])
@pytest.mark.parametrize("problem", ["missing", "bad row"])
async def test_a_bad_chip_map_is_a_config_error_naming_file_and_line(tmp_path: Path, check: bool, problem: str) -> None:
    chips = tmp_path / "chips.csv"
    if problem == "bad row":
        chips.write_text("chip,bib\nE2001,101\nE2002\n")
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url="http://127.0.0.1:9/v0",
        api_key=KEY,
        readers=[{"name": "mat", "url": "tcp-listen://127.0.0.1:0", "chip_map": "chips.csv"}],
    )
    # `--check` must catch what `run` would stop on: same exit, same one line naming the config key
    code, out, err = await cli("run", "--config", str(cfg), *(["--check"] if check else []))
    assert code == 78, out + err
    [line] = err.strip().splitlines()
    chip_line = next(i for i, x in enumerate(cfg.read_text().splitlines(), 1) if x.startswith("chip_map"))
    assert f"gw.toml:{chip_line}: [[reader]] #1 chip_map: " in line, line
    assert ("chips.csv:3: expected 2 fields" if problem == "bad row" else "No such file or directory") in line
    assert "Traceback" not in err and "ok" not in out


@pytest.mark.parametrize("point", ["before_event_loop", "before_outbox_open"])
async def test_sigterm_during_start_up_exits_zero_and_loses_nothing(tmp_path: Path, point: str) -> None:
    """systemd may stop the unit while it is still starting (a quick_check on a big database takes a while):
    that must be a clean stop (exit 0), not a death by the signal's default action."""
    port = free_port()
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url=f"http://127.0.0.1:{free_port()}/v0",
        api_key="",  # no cloud needed: only the journal matters here
        readers=[{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}],
    )
    d = Daemon(cfg)
    await d.start()
    try:
        await send(port, csv_lines(5))
        await until(lambda: d.query("select count(*) from reads")[0][0] == 5, what="5 reads journaled")
        assert await d.terminate() == 0
        d.env["RUFUS_STALL"] = f"{point}:3"
        await d.start(wait_ready=False)
        await until(lambda: f"stalled at {point}" in d.output(), timeout=15, what="the start-up stall")
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        assert await d.wait_exit(10) == 0, d.output()[-2000:]
        assert "Traceback" not in d.output()
        assert d.query("select count(*) from reads")[0][0] == 5
        assert d.query("pragma integrity_check") == [("ok",)]
    finally:
        await d.kill()


async def test_a_daemon_started_without_a_key_uploads_once_sighup_brings_one(tmp_path: Path, cloud: Emulator) -> None:
    port = free_port()
    readers = [{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}]
    cfg = write_config(tmp_path / "gw.toml", base_url=cloud.base_url, api_key="", readers=readers)
    d = Daemon(cfg)
    await d.start()
    try:
        await send(port, csv_lines(10))
        await until(lambda: d.query("select count(*) from reads")[0][0] == 10, what="reads journaled without a key")
        # a config that does not load is refused in one line naming file:line and key; the daemon carries on
        write_config(cfg, base_url=cloud.base_url, api_key=KEY, readers=readers, cloud={"batch_size": 0})
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        await until(
            lambda: len(d.events("reload refused: config invalid, keeping the running one")) == 1,
            what="the refusal",
        )
        [refused] = d.events("reload refused: config invalid, keeping the running one")
        line = next(i for i, x in enumerate(cfg.read_text().splitlines(), 1) if x.startswith("batch_size"))
        assert f"gw.toml:{line}: [cloud] batch_size: must be between 1 and 5000" in refused["error"]
        await asyncio.sleep(0.5)
        assert cloud_nums(cloud) == {} and d.proc.returncode is None
        write_config(cfg, base_url=cloud.base_url, api_key=KEY, readers=readers)
        d.proc.send_signal(signal.SIGHUP)
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 10, what="upload after SIGHUP")
        await until(lambda: d.count("Sent") == 10, what="Sent")
        assert next(iter(cloud_nums(cloud).values())) == list(range(1, 11))
        assert d.proc.returncode is None
        assert await d.terminate() == 0
    finally:
        await d.kill()
    assert KEY not in d.output()


async def test_sighup_switching_follow_active_session_on_releases_held_passings(
    tmp_path: Path, enveloped: Emulator
) -> None:
    from gateway.cloud.client import RufusClient
    from gateway.cloud.models import SessionCreate

    port = free_port()
    d = make(tmp_path, enveloped, port)  # follow_active_session off
    await d.start()
    try:
        await send(port, csv_lines(5))
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 5, what="first 5")
        [first] = cloud_nums(enveloped)
        deviceid = d.query("select value from meta where key='deviceid'")[0][0]
        async with RufusClient(enveloped.base_url, KEY) as c:
            await c.close_session(first)
            second = (await c.create_session(SessionCreate(deviceid, "after the break"))).token_session
        await send(port, csv_lines(5, start=5))
        await until(lambda: "set follow_active_session" in d.output(), what="the held-session alert")
        assert d.count("Pending") == 5
        # What the alert tells the crew to do, without a restart: follow on (and a smaller batch, applied
        # live too; [log] level needs a restart and says so).
        text = d.config.read_text()
        text = text.replace("[session]\n", "[session]\nfollow_active_session = true\n")
        text = text.replace("[cloud]\n", "[cloud]\nbatch_size = 2\n").replace('level = "debug"', 'level = "info"')
        d.config.write_text(text)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        await until(lambda: len(cloud_nums(enveloped).get(second, [])) == 5, timeout=30, what="moved and sent")
        assert cloud_nums(enveloped)[first] == [1, 2, 3, 4, 5]
        assert cloud_nums(enveloped)[second] == [1, 2, 3, 4, 5]
        posts = [r for r in enveloped.requests if r["method"] == "POST" and r["path"].startswith("/v0/passings")]
        to_second = [r for r in posts if isinstance(r.get("body"), dict) and r["body"].get("token_session") == second]
        assert to_second and max(len(r["body"]["passings_list"]) for r in to_second) <= 2
        [reloaded] = d.events("config reloaded")
        assert {"[session] follow_active_session", "[cloud] batch_size"} <= set(reloaded["applied"])
        [warned] = d.events("config reloaded, but these changes take effect only after a restart")
        assert warned["keys"] == ["[log] level"]
    finally:
        await d.kill()


def _crashing_config(tmp_path: Path) -> Path:
    # A capture file that is not there: the reader task raises once the daemon runs (not a config error: a
    # file:// link is opened by its task, like a serial device that may appear later).
    return write_config(
        tmp_path / "gw.toml",
        base_url="http://127.0.0.1:9/v0",
        api_key="",
        readers=[{"name": "mat", "url": f"file://{tmp_path}/missing.cap", "format": "csv"}],
    )


def test_a_crashed_task_is_one_json_log_line_with_its_cause_and_exit_70(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(_crashing_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 70, proc.stderr
    *log_lines, last = proc.stderr.strip().splitlines()
    events = [json.loads(x) for x in log_lines]  # stderr is not a terminal: every log line is JSON
    crashed = [e for e in events if e["event"] == "task crashed"]
    assert len(crashed) == 1, log_lines
    assert crashed[0]["task"] == "reader mat" and crashed[0]["level"] == "error"
    assert crashed[0]["error"].startswith("ReaderError: ") and "missing.cap" in crashed[0]["error"]
    assert last.startswith("rufus-gateway: ") and "missing.cap" in last
    assert "Traceback" not in proc.stderr


def test_log_lines_are_readable_not_json_on_a_terminal(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(_crashing_config(tmp_path))],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 70
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode(errors="replace"))
    lines = [x for x in text.replace("\r", "").splitlines() if x.strip()]
    crashed = [x for x in lines if "task crashed" in x]
    assert len(crashed) == 1 and "missing.cap" in crashed[0] and "reader mat" in crashed[0], text
    assert not any(x.lstrip().startswith("{") for x in lines), text  # no JSON on a terminal
    assert re.search(r"\berror\b", crashed[0]), crashed[0]  # the level is shown
