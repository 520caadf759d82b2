"""`reconcile` answers "is everything in the cloud?" truthfully: every local session, every state that is not
in the cloud, and a Sent passing counts only if the cloud holds the same bib AND timestamp at its number."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.cloud.client import RufusClient
from gateway.emulator import Emulator
from tests.e2e.support import KEY, cli, cloud_nums, csv_lines, make, send, until
from tests.fixtures.daemon import free_port


async def test_a_rejected_passing_is_not_in_the_cloud(tmp_path: Path, cloud: Emulator) -> None:
    port = free_port()
    cloud.set_faults(reject_bib="113")
    d = make(tmp_path, cloud, port)
    await d.start()
    try:
        await send(port, csv_lines(30))
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 29, what="29 good passings")
        await until(lambda: d.count("Rejected") == 1, what="poison")
        [(num, reason)] = d.query("select num_passing, reason from passings where state='Rejected'")
        code, out, err = await cli("reconcile", "--config", str(d.config))
        assert code == 1, out + err
        assert "yes" not in out
        assert "1 passing(s) Rejected by the cloud" in out
        assert f"num_passing {num}, bib 113: {reason}" in out
        # the organiser fixes the participant list; the crew sends it again; now the answer is yes
        cloud.set_faults(reject_bib=None)
        code, out, err = await cli("outbox", "requeue", "--rejected", "--config", str(d.config))
        assert code == 0 and out.startswith("requeued 1 Rejected"), out + err
        await until(lambda: sum(len(v) for v in cloud_nums(cloud).values()) == 30, what="all 30 in the cloud")
        await until(lambda: d.query("select count(*) from passings where state != 'Sent'")[0][0] == 0, what="Sent")
        code, out, err = await cli("reconcile", "--config", str(d.config))
        assert code == 0 and out.startswith("yes: all 30 passings"), out + err
    finally:
        await d.kill()


async def test_passings_held_in_an_older_closed_session_are_not_in_the_cloud(
    tmp_path: Path, enveloped: Emulator
) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)  # follow_active_session off: a closed session's passings are held
    await d.start()
    try:
        await send(port, csv_lines(3))
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 3, what="first 3")
        [first] = cloud_nums(enveloped)
        async with RufusClient(enveloped.base_url, KEY) as c:
            await c.close_session(first)  # the organiser closes it from the web app
        await send(port, csv_lines(2, start=3))
        await until(lambda: d.count("Pending") == 2, what="held")
        code, out, err = await cli("session", "new", "--config", str(d.config))
        assert code == 0, out + err
        second = out.split()[-1]
        await send(port, csv_lines(2, start=5))
        await until(lambda: cloud_nums(enveloped).get(second) == [1, 2], what="2 in the new session")
        await until(
            lambda: d.query("select count(*) from passings where token_session=? and state='Sent'", second)[0][0] == 2,
            what="new session Sent",
        )
        code, out, err = await cli("reconcile", "--config", str(d.config))
        assert code == 1, out + err
        assert f"no: session {first}: 2 passing(s) still Pending: 4 (bib 103), 5 (bib 104)" in out
        assert second not in out and "yes" not in out  # the new session itself is complete
        code, out, err = await cli("reconcile", "--session", second, "--config", str(d.config))
        assert code == 0 and out.startswith(f"yes: all 2 passings of session {second}"), out + err
    finally:
        await d.kill()


async def test_the_same_bib_at_another_time_is_not_our_passing(tmp_path: Path, enveloped: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    try:
        await send(port, csv_lines(3))
        await until(lambda: d.count("Sent") == 3, what="3 Sent")
    finally:
        assert await d.terminate() == 0
    # the cloud's copy of passing 2 changed time (an edit in the web app, a restore gone wrong): same bib
    await enveloped.stop()
    cloud_db = sqlite3.connect(str(tmp_path / "cloud.db"))
    cloud_db.execute("update passings set timestamp = '2026-05-03T11:11:11.111Z' where num_passing = 2")
    cloud_db.commit()
    cloud_db.close()
    await enveloped.start()
    code, out, err = await cli("reconcile", "--config", str(d.config))
    assert code == 1, out + err
    assert "1 passing(s) marked Sent are not in the cloud (requeued): 2" in out
    assert d.query("select num_passing, state from passings where state != 'Sent'") == [(2, "Pending")]


async def test_passings_sent_without_verification_are_named_and_checked(tmp_path: Path, enveloped: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    try:
        await send(port, csv_lines(3))
        await until(lambda: d.count("Sent") == 3, what="3 Sent")
    finally:
        assert await d.terminate() == 0
    # as a WRITE-only key leaves them: Sent on the 2xx's word, duplicates it could not read back
    db = sqlite3.connect(str(d.db))
    db.execute("update passings set reason = 'duplicate, not verified: key cannot read' where num_passing > 1")
    db.commit()
    db.close()
    code, out, err = await cli("reconcile", "--config", str(d.config))
    assert code == 0, out + err
    [token] = cloud_nums(enveloped)
    assert f"note: session {token}: 2 passing(s) marked Sent without being verified" in out
    assert out.splitlines()[-1].startswith("yes: all 3 passings")
