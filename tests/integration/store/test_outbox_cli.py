"""`rufus-gateway outbox ...` as the crew runs it: output, exit codes, read-only while the daemon holds the lock."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import cli
from gateway.outbox_cli import PASSING_FIELDS
from gateway.store import NewPassing, Store
from tests.fixtures.outbox import T0, read_at
from tests.fixtures.surface import gateway_over
from tests.fixtures.wait import until

STATS_KEYS = ["pending", "sent", "rejected", "reads", "oldest_pending_age_s", "token_session"]


async def _fill(db: Path) -> None:
    box = await Store.open(db)
    try:
        await box.set_current_session("tok-A", alias="race", deviceid="dev-1", created_by_us=True)
        await box.journal("mat", [read_at(i, f"C{i}") for i in range(4)])
        await box.add_passings(
            "tok-A",
            [
                NewPassing(timestamp=T0 + timedelta(seconds=i), bib=str(100 + i), chip=f"C{i}", timezone="CET")
                for i in range(5)
            ],
        )
        await box.mark_sent("tok-A", [1])
        await box.mark_rejected("tok-A", 2, "bib 101: unknown")
    finally:
        await box.close()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["outbox", *args])
    return result.exit_code, result.stdout, result.stderr


async def test_stats_json_exact_keys_while_the_daemon_holds_the_lock(db_path: Path) -> None:
    await _fill(db_path)
    daemon = await Store.open(db_path)  # the running daemon: holds the lock
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "outbox",
            "stats",
            "--db",
            str(db_path),
            "--json",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await daemon.close()
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert list(data) == STATS_KEYS
    assert {k: data[k] for k in ("pending", "sent", "rejected", "reads", "token_session")} == {
        "pending": 3,
        "sent": 1,
        "rejected": 1,
        "reads": 4,
        "token_session": "tok-A",
    }
    assert isinstance(data["oldest_pending_age_s"], float) and 0 <= data["oldest_pending_age_s"] < 600


def test_stats_json_on_an_empty_database(db_path: Path) -> None:
    asyncio.run(_open_close(db_path))
    code, out, _ = _invoke("stats", "--db", str(db_path), "--json")
    assert code == 0
    assert json.loads(out) == {
        "pending": 0,
        "sent": 0,
        "rejected": 0,
        "reads": 0,
        "oldest_pending_age_s": None,
        "token_session": None,
    }


async def _open_close(db: Path) -> None:
    box = await Store.open(db)
    await box.close()


def test_stats_human_and_via_config(db_path: Path, tmp_path: Path) -> None:
    asyncio.run(_fill(db_path))
    conf = tmp_path / "gw.toml"
    conf.write_text(f'[outbox]\npath = "{db_path.name}"\n')
    code, out, _ = _invoke("stats", "--config", str(conf))
    assert code == 0
    assert "pending:        3" in out and "session:        tok-A" in out and "reads:          4" in out
    code, _, err = _invoke("stats", "--config", str(conf), "--db", str(db_path))
    assert code == 2 and "not both" in err


def test_list_shows_newest_with_state_and_reason(db_path: Path) -> None:
    asyncio.run(_fill(db_path))
    code, out, _ = _invoke("list", "--db", str(db_path))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 6 and lines[0].split()[:3] == ["num", "state", "bib"]
    assert "Rejected" in lines[2] and "bib 101: unknown" in lines[2]
    code, out, _ = _invoke("list", "--db", str(db_path), "--state", "Pending", "--limit", "2", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["num_passing"] for r in rows] == [4, 5] and {r["state"] for r in rows} == {"Pending"}
    code, _, err = _invoke("list", "--db", str(db_path), "--state", "Lost")
    assert code == 2 and "Lost" in err


def test_export_csv_and_json(db_path: Path, tmp_path: Path) -> None:
    asyncio.run(_fill(db_path))
    code, out, _ = _invoke("export", "--db", str(db_path))
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == list(PASSING_FIELDS)
    assert [r[1] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert rows[1][0] == "tok-A" and rows[1][2] == "2024-05-01T09:00:00.000Z" and rows[1][11] == "Sent"
    target = tmp_path / "reads.json"
    code, _, err = _invoke("export", "--db", str(db_path), "--table", "reads", "--format", "json", "--out", str(target))
    assert code == 0 and "4 reads rows" in err
    reads = json.loads(target.read_text())
    assert [r["chip"] for r in reads] == ["C0", "C1", "C2", "C3"]
    assert reads[0]["reader_ts"] == "2024-05-01T09:00:00.000Z"


def test_check_ok_then_corrupt(db_path: Path) -> None:
    asyncio.run(_fill(db_path))
    code, out, _ = _invoke("check", "--db", str(db_path))
    assert code == 0 and out.strip().endswith(": ok")
    db_path.write_bytes(b"garbage" * 1000)
    code, _, err = _invoke("check", "--db", str(db_path))
    assert code == 1 and str(db_path) in err and "Traceback" not in err


def test_prune_refuses_while_the_daemon_runs_then_prunes(db_path: Path) -> None:
    asyncio.run(_fill(db_path))

    async def while_locked() -> tuple[int, str, str]:
        daemon = await Store.open(db_path)
        try:
            return await asyncio.to_thread(_invoke, "prune", "--db", str(db_path), "--older-than", "0")
        finally:
            await daemon.close()

    code, _, err = asyncio.run(while_locked())
    assert code == 2
    assert "in use by another rufus-gateway" in err and "stop the daemon" in err
    assert len(err.strip().splitlines()) == 1
    code, out, _ = _invoke("prune", "--db", str(db_path), "--older-than", "0")
    assert code == 0 and "pruned 1 Sent passings" in out
    code, out, _ = _invoke("stats", "--db", str(db_path), "--json")
    assert json.loads(out)["sent"] == 0 and json.loads(out)["pending"] == 3
    code, _, err = _invoke("prune", "--db", str(db_path))
    assert code == 2 and "--older-than" in err


def test_missing_database_and_missing_option(tmp_path: Path) -> None:
    code, _, err = _invoke("stats", "--db", str(tmp_path / "nope.db"))
    assert code == 2 and err.strip() == f"rufus-gateway: database {tmp_path / 'nope.db'} does not exist"
    assert not (tmp_path / "nope.db").exists()  # a look never creates a database
    code, _, err = _invoke("stats")
    assert code == 2 and "--db" in err


def test_requeue_directly_when_no_daemon_runs(db_path: Path) -> None:
    asyncio.run(_fill(db_path))  # 1 Sent, 2 Rejected, 3..5 Pending
    code, out, _ = _invoke("requeue", "--db", str(db_path), "1", "3")
    assert code == 0 and out.startswith("requeued 1 of 2 passing(s)")
    code, out, _ = _invoke("list", "--db", str(db_path), "--state", "Pending", "--json")
    assert [json.loads(line)["num_passing"] for line in out.splitlines()] == [1, 3, 4, 5]


async def test_requeue_goes_through_the_running_daemon(db_path: Path) -> None:

    from gateway.control import ControlServer

    await _fill(db_path)
    daemon_box = await Store.open(db_path)  # the daemon holds the lock: a direct write would be refused
    server = ControlServer(gateway_over(daemon_box, db_path.parent), str(db_path.with_suffix(".ctl")))
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: db_path.with_suffix(".ctl").exists(), 10, "the control socket")
        code, out, err = await asyncio.to_thread(_invoke, "requeue", "--db", str(db_path), "1")
        assert code == 0, err
        assert out.startswith("requeued 1 of 1")
        assert [r.passing.num_passing for r in await daemon_box.pending("tok-A", 10)] == [1, 3, 4, 5]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await daemon_box.close()
