"""README's first command: `rufus-gateway demo` must run on embedded defaults and prove its own result."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path


async def test_demo_runs_a_race_through_an_outage_and_every_check_holds(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--duration",
        "8",
        "--runners",
        "40",
        "--workdir",
        str(work),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 120)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, out + err
    assert "All checks passed: nothing lost, nothing doubled." in out
    assert "FAIL" not in out and "Traceback" not in out + err
    for check in (
        "reads the timer sent = reads journaled",
        "passings in the cloud = passings derived",
        "num_passing in the cloud is exactly 1..N",
    ):
        assert check in out
    # What the summary claims, checked independently on the files it kept.
    gw = sqlite3.connect(work / "outbox.db")
    cloud = sqlite3.connect(work / "cloud.db")
    try:
        sent = [r[0] for r in gw.execute("select num_passing from passings where state='Sent' order by 1")]
        held = [r[0] for r in cloud.execute("select num_passing from passings order by 1")]
        reads = gw.execute("select count(*) from reads").fetchone()[0]
    finally:
        gw.close()
        cloud.close()
    assert sent == held == list(range(1, len(held) + 1)) and len(held) > 0
    truth = [json.loads(line) for line in (work / "truth.jsonl").read_text().splitlines()]
    sent = {t["seq"] for t in truth if t.get("type") == "read"}
    assert reads == len(sent) > 0
    # the outage really happened and was ridden out
    log = (work / "gateway.log").read_text()
    assert '"level": "warning"' in log and "recovered" in log
