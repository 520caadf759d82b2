"""The crew's writing commands succeeding through a running daemon (invariant 8): `mark --void` of a manual
passing no request has carried, and `reconcile` requeuing what the cloud lost while the daemon uploads."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from gateway.emulator import Emulator
from tests.e2e.support import KEY, cli, cloud_nums, csv_lines, make, send, until
from tests.fixtures.daemon import Daemon, free_port

WRONG = "ror-ffffffffffffffffffff"


def _carried(emu: Emulator) -> list[int]:
    """Every num_passing any POST /passings request carried, whatever the cloud answered."""
    return [
        p["num_passing"]
        for r in emu.requests
        if r["method"] == "POST" and isinstance(r.get("body"), dict)
        for p in r["body"].get("passings_list", [])
    ]


async def _reload_with_key(d: Daemon, old: str, new: str) -> None:
    before = len(d.events("config reloaded"))
    d.config.write_text(d.config.read_text().replace(old, new))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    await until(lambda: len(d.events("config reloaded")) > before, what="config reloaded")


async def test_void_through_the_running_daemon_and_the_passing_never_reaches_the_cloud(
    tmp_path: Path, enveloped: Emulator
) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    try:
        await send(port, csv_lines(2))
        await until(lambda: d.count("Sent") == 2, what="2 Sent")
        # The key is revoked mid-race: the next passing is refused (401) and the uploader stops, so a manual
        # passing numbered now is carried by no request: still voidable.
        await _reload_with_key(d, KEY, WRONG)
        await send(port, csv_lines(1, start=2))
        await until(lambda: "the cloud refused the API key" in d.output(), what="uploads stopped on the 401")
        code, out, err = await cli("mark", "777", "--config", str(d.config))
        assert code == 0 and "bib 777 -> num_passing 4" in out, out + err
        assert d.query("select state, attempts, origin from passings where num_passing=4") == [("Pending", 0, "manual")]
        code, out, err = await cli("mark", "--void", "4", "--config", str(d.config))
        assert code == 0 and out.strip() == "voided num_passing 4", out + err
        # the daemon did it (the one writer): its own log says so; the command could not have taken the lock
        [voided] = d.events("manual passing voided")
        assert voided["num_passing"] == 4
        assert d.query("select state, reason, attempts from passings where num_passing=4") == [
            ("Voided", "voided by operator", 0)
        ]
        # the key is fixed: everything else flows, the voided one never goes
        await _reload_with_key(d, WRONG, KEY)
        await until(lambda: d.count("Pending") == 0, what="sent")
        code, out, err = await cli("mark", "778", "--config", str(d.config))
        assert code == 0 and "bib 778 -> num_passing 5" in out, out + err
        await until(lambda: d.query("select state from passings where num_passing=5") == [("Sent",)], what="5 Sent")
        [(_tok, nums)] = cloud_nums(enveloped).items()
        assert nums == [1, 2, 3, 5]
        assert 4 not in _carried(enveloped)  # no request ever carried it, not even the refused ones
        assert _carried(enveloped).count(3) == 2  # refused with the wrong key, then sent with the fixed one
        assert d.proc is not None and d.proc.returncode is None
    finally:
        await d.kill()
    assert WRONG not in d.output() and KEY not in d.output()


async def test_reconcile_requeues_through_the_running_daemon_then_says_yes(tmp_path: Path, enveloped: Emulator) -> None:
    port = free_port()
    d = make(tmp_path, enveloped, port)
    await d.start()
    try:
        await send(port, csv_lines(5))
        await until(lambda: d.count("Sent") == 5, what="5 Sent")
        [token] = cloud_nums(enveloped)
        inserted = enveloped.state()["counts"]["inserted"]
        assert inserted == 5
        # the cloud loses passings 2 and 4 while the gateway runs (deleted in the web app, a bad restore)
        assert enveloped.store is not None
        enveloped.store.db.execute("delete from passings where num_passing in (2, 4)")
        assert cloud_nums(enveloped) == {token: [1, 3, 5]}
        code, out, err = await cli("reconcile", "--config", str(d.config))
        assert code == 1, out + err
        assert out.splitlines()[0] == (
            f"no: session {token}: 2 passing(s) marked Sent are not in the cloud (requeued): 2, 4"
        )
        assert "yes" not in out
        # requeued by the daemon (the one writer), which sends them again at once
        [requeued] = d.events("passings requeued")
        assert requeued["count"] == 2 and requeued["token_session"] == token
        await until(lambda: cloud_nums(enveloped) == {token: [1, 2, 3, 4, 5]}, what="2 and 4 back in the cloud")
        await until(lambda: d.query("select count(*) from passings where state != 'Sent'")[0][0] == 0, what="Sent")
        # each lost passing went back exactly once (after its first upload), nothing else was re-sent
        assert sorted(_carried(enveloped)) == [1, 2, 2, 3, 4, 4, 5]
        assert enveloped.state()["counts"]["inserted"] == inserted + 2
        code, out, err = await cli("reconcile", "--config", str(d.config))
        assert code == 0 and out.strip() == f"yes: all 5 passings of session {token} are in the cloud", out + err
        # read-only, straight from the database while the daemon runs: exactly the documented keys
        code, out, err = await cli("outbox", "stats", "--config", str(d.config), "--json")
        assert code == 0, out + err
        stats = json.loads(out)
        assert list(stats) == ["pending", "sent", "rejected", "reads", "oldest_pending_age_s", "token_session"]
        assert stats == {
            "pending": 0,
            "sent": 5,
            "rejected": 0,
            "reads": 5,
            "oldest_pending_age_s": None,
            "token_session": token,
        }
        assert sorted(_carried(enveloped)) == [1, 2, 2, 3, 4, 4, 5]  # the second reconcile requeued nothing
        assert d.proc is not None and d.proc.returncode is None
    finally:
        await d.kill()
