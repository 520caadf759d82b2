"""The systemd unit restarts what a restart can fix and nothing else, and its retries are bounded.

The exit codes are the daemon's (gateway/daemon_cli.py): 78 bad config and 73 unusable database are final;
75 (disk full) and 70 (a task crashed) are restarted. A full disk must not leave the gateway down for good.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import daemon_cli

pytestmark = pytest.mark.chaos

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "rufus-gateway.service"


def sections(text: str) -> dict[str, dict[str, str]]:
    """The unit as {section: {key: value}} (later assignments win, as in systemd; comments dropped)."""
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = out.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"not a key=value line: {raw!r}"
        key, value = line.split("=", 1)
        current[key.strip()] = value.strip()
    return out


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_disk_full_is_restarted_unusable_database_and_bad_config_are_not() -> None:
    unit = sections(UNIT.read_text())
    service = unit["Service"]
    assert service["Restart"] in ("on-failure", "always")
    prevented = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevented == {78, 73}
    assert daemon_cli.EX_TEMPFAIL == 75 and daemon_cli.EX_CANTCREAT == 73
    assert daemon_cli.EX_TEMPFAIL not in prevented and daemon_cli.EX_SOFTWARE not in prevented


def test_restarts_are_paced_and_bounded() -> None:
    unit = sections(UNIT.read_text())
    # systemd reads the start limit in [Unit] only; in [Service] it ignores it (a warning in the journal)
    assert "StartLimitIntervalSec" not in unit["Service"] and "StartLimitBurst" not in unit["Service"]
    restart_s = seconds(unit["Service"]["RestartSec"])
    interval_s = seconds(unit["Unit"]["StartLimitIntervalSec"])
    burst = int(unit["Unit"]["StartLimitBurst"])
    assert 1 <= restart_s <= 30, "not a hammering loop, not a long gap in the middle of a race"
    assert burst * restart_s <= interval_s, "the limit must be reachable, or the retries never stop"
    assert burst * restart_s >= 300, "the crew gets at least 5 minutes to free space before systemd gives up"


def installed_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at this venv's console script, as an install would leave it: verify
    checks that the command exists and is executable, and /opt/rufus-gateway is not there on a test machine."""
    script = Path(sys.executable).parent / "rufus-gateway"
    assert script.exists(), f"the console script is not installed at {script}"
    text = UNIT.read_text()
    assert "ExecStart=/opt/rufus-gateway/.venv/bin/rufus-gateway " in text
    target = tmp_path / UNIT.name
    target.write_text(text.replace("ExecStart=/opt/rufus-gateway/.venv/bin/rufus-gateway ", f"ExecStart={script} "))
    return target


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_every_key(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )
    # Any complaint at all (an unknown key, a bad value, a command that is not there) fails the test.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_starts_with_no_network_and_no_clock_sync() -> None:
    """A Pi in a field with no 4G must take reads at once: no ordering on network-online.target (it waits
    for wait-online's timeout) or time-sync.target (with time-wait-sync, a sync that never comes)."""
    unit = sections(UNIT.read_text())
    for key in ("After", "Wants", "Requires", "BindsTo", "Requisite"):
        targets = unit["Unit"].get(key, "").split()
        assert "network-online.target" not in targets and "time-sync.target" not in targets, (key, targets)
    service = unit["Service"]
    # What stays: systemd is told when we are ready and that we make progress; the sandbox stays shut.
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert 10 <= seconds(service["WatchdogSec"]) <= 120
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectHome"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["ReadWritePaths"] == "/var/lib/rufus-gateway"


def test_a_full_database_is_told_apart_from_an_unusable_one(tmp_path: Path) -> None:
    import sqlite3

    from gateway.errors import StorageError

    con = sqlite3.connect(tmp_path / "small.db")
    try:
        con.execute("CREATE TABLE t (x BLOB)")
        con.execute("PRAGMA max_page_count = 8")  # what a full SD card looks like to SQLite
        with pytest.raises(sqlite3.OperationalError) as full:
            for _ in range(100):
                con.execute("INSERT INTO t VALUES (zeroblob(4000))")
    finally:
        con.close()

    def wrapped(cause: BaseException, message: str) -> StorageError:
        try:
            try:
                raise cause
            except BaseException:
                raise StorageError(message) from None  # how the outbox words it: the cause only in __context__
        except StorageError as exc:
            return exc

    assert daemon_cli.disk_full(wrapped(full.value, "database gw.db: commit failed: disk I/O"))
    assert daemon_cli.disk_full(wrapped(OSError(28, "No space left on device"), "cannot create lock file"))
    assert not daemon_cli.disk_full(
        wrapped(sqlite3.OperationalError("attempt to write a readonly database"), "database gw.db is open read-only")
    )
    assert not daemon_cli.disk_full(StorageError("database gw.db is in use by another rufus-gateway (pid 1)"))
