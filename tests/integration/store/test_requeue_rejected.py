"""`outbox requeue --rejected`: what the cloud refused goes back to Pending (same numbers), voids stay voided."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from click.testing import CliRunner

from gateway.cli import cli
from gateway.control import ControlServer
from gateway.store import NewPassing, Store
from tests.fixtures.outbox import T0
from tests.fixtures.surface import gateway_over
from tests.fixtures.wait import until


async def _fill(db: Path) -> None:
    """tok-A: 1 Sent, 2 Rejected by the cloud, 3 voided by the operator, 4 Pending; tok-B (older, closed): 1
    Rejected by the cloud."""
    box = await Store.open(db)
    try:
        await box.add_passings("tok-B", [NewPassing(timestamp=T0, bib="900")])
        await box.mark_rejected("tok-B", 1, "Invalid passing")
        await box.set_current_session("tok-A", alias="race", deviceid="dev-1", created_by_us=True)
        await box.add_passings(
            "tok-A",
            [
                NewPassing(
                    timestamp=T0 + timedelta(seconds=i), bib=str(100 + i), origin="manual" if i == 3 else "reader"
                )
                for i in range(1, 5)
            ],
        )
        await box.mark_sent("tok-A", [1])
        await box.mark_rejected("tok-A", 2, "Invalid passing")
        assert await box.void("tok-A", 3)
    finally:
        await box.close()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["outbox", *args])
    return result.exit_code, result.stdout, result.stderr


def _states(db: Path) -> dict[tuple[str, int], tuple[str, str | None]]:
    code, out, _ = _invoke("list", "--db", str(db), "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    return {(r["token_session"], r["num_passing"]): (r["state"], r["reason"]) for r in rows}


def test_requeue_rejected_directly_when_no_daemon_runs(db_path: Path) -> None:
    asyncio.run(_fill(db_path))
    code, out, err = _invoke("requeue", "--db", str(db_path), "--rejected")
    assert code == 0, err
    assert out.strip() == "requeued 2 Rejected passing(s) (voided ones stay voided)"
    states = _states(db_path)
    assert states[("tok-A", 2)] == ("Pending", "requeued after: Invalid passing")  # same number, reason kept
    assert states[("tok-B", 1)] == ("Pending", "requeued after: Invalid passing")  # older sessions too
    assert states[("tok-A", 3)] == ("Voided", "voided by operator")
    assert states[("tok-A", 1)][0] == "Sent" and states[("tok-A", 4)][0] == "Pending"


def test_requeue_rejected_of_one_session_and_usage_errors(db_path: Path) -> None:
    asyncio.run(_fill(db_path))
    code, out, _ = _invoke("requeue", "--db", str(db_path), "--rejected", "--session", "tok-B")
    assert code == 0 and out.startswith("requeued 1 Rejected")
    assert _states(db_path)[("tok-A", 2)][0] == "Rejected"
    code, _, err = _invoke("requeue", "--db", str(db_path), "--rejected", "2")
    assert code == 2 and "not both" in err
    code, _, err = _invoke("requeue", "--db", str(db_path))
    assert code == 2 and "--rejected" in err


async def test_requeue_rejected_goes_through_the_running_daemon_and_wakes_the_uploader(db_path: Path) -> None:
    await _fill(db_path)
    daemon_box = await Store.open(db_path)  # the daemon holds the lock: a direct write would be refused
    woken: list[bool] = []
    uploader = SimpleNamespace(retry_now=lambda: woken.append(True), notify=lambda: None)
    server = ControlServer(
        gateway_over(daemon_box, db_path.parent, uploader=uploader), str(db_path.with_suffix(".ctl"))
    )
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: db_path.with_suffix(".ctl").exists(), 10, "the control socket")
        code, out, err = await asyncio.to_thread(_invoke, "requeue", "--db", str(db_path), "--rejected")
        assert code == 0, err
        assert out.startswith("requeued 2 Rejected")
        assert woken == [True]
        assert [r.passing.num_passing for r in await daemon_box.pending("tok-A", 10)] == [2, 4]
        assert [r.passing.num_passing for r in await daemon_box.pending("tok-B", 10)] == [1]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await daemon_box.close()
