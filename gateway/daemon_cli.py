"""`rufus-gateway run`: the daemon, as systemd starts it (Type=notify)."""

from __future__ import annotations

import asyncio
import errno
import signal
import sqlite3
import sys
from pathlib import Path

import click

from gateway import config as config_mod
from gateway import failpoints
from gateway import log as log_mod
from gateway.errors import ConfigError, DatabaseCorruptError, GatewayError, StorageError

EX_SOFTWARE = 70
EX_CANTCREAT = 73  # read-only, locked or otherwise unusable database: a restart cannot fix it
EX_IOERR = 74  # a damaged page met while running: the restart (systemd restarts on it) moves the file aside
EX_TEMPFAIL = 75  # the disk is full: a restart can, once space is freed (systemd restarts on it)
SQLITE_FULL = 13


@click.command("run")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="TOML config (see config/gateway.example.toml).",
)
@click.option("--check", is_flag=True, help="Validate the config and exit (0 = valid, 78 = invalid).")
def run_cmd(config_path: Path, check: bool) -> None:
    """Run the gateway daemon: read, journal, derive passings, upload; until SIGTERM.

    `--check` refuses everything `run` would refuse at start-up (exit 78, one line naming file:line and key)."""
    if not check:
        _defer_signals()
    try:
        settings = config_mod.load(config_path)
        config_mod.check_for_run(settings)
    except ConfigError as exc:
        click.echo(f"rufus-gateway: config error: {exc}", err=True)
        sys.exit(config_mod.EX_CONFIG)
    if check:
        click.echo(f"{config_path}: ok ({len(settings.readers)} reader(s), outbox {settings.outbox.path})")
        folder = Path(settings.outbox.path).parent
        if not folder.is_dir():  # writable where it will be made (check_for_run), but worth a word to the crew
            click.echo(f"{config_path}: note: [outbox] path: {folder} does not exist yet; run will create it")
        return
    log_mod.configure(settings.log_level)
    from gateway.service import Gateway  # late: `run --check` must not need the whole stack

    failpoints.stall_sync("before_event_loop")
    try:
        asyncio.run(Gateway(settings, stop_requested=lambda: _early_stop).run())
    except KeyboardInterrupt:
        return
    except Exception as raised:  # the one place every failure becomes a line and an exit code
        cause = _first_leaf(raised)
        message = log_mod.redact(str(cause))
        if isinstance(cause, ConfigError):
            click.echo(f"rufus-gateway: config error: {message}", err=True)
            sys.exit(config_mod.EX_CONFIG)
        if isinstance(cause, DatabaseCorruptError):
            click.echo(f"rufus-gateway: database error: {message}", err=True)
            sys.exit(EX_IOERR)
        if isinstance(cause, StorageError):
            click.echo(f"rufus-gateway: database error: {message}", err=True)
            sys.exit(EX_TEMPFAIL if disk_full(cause) else EX_CANTCREAT)
        if isinstance(cause, GatewayError):
            click.echo(f"rufus-gateway: {message}", err=True)
        else:
            click.echo(f"rufus-gateway: internal error: {cause.__class__.__name__}: {message}", err=True)
        sys.exit(EX_SOFTWARE)


_early_stop = False


def _defer_signals() -> None:
    """Until the event loop installs its own handlers, a SIGTERM/SIGINT is remembered rather than fatal, and a
    SIGHUP (a reload) ignored: the config is being read anyway. With the default action, systemd stopping the
    unit during start-up (a slow quick_check on a big database) would count as a failure (killed by signal)."""

    def remember(_signum: int, _frame: object) -> None:
        global _early_stop
        _early_stop = True

    signal.signal(signal.SIGTERM, remember)
    signal.signal(signal.SIGINT, remember)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _first_leaf(exc: BaseException) -> BaseException:
    """TaskGroup wraps a crashed task's exception in groups; the operator wants the cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def disk_full(exc: BaseException) -> bool:
    """Whether a storage failure comes down to a full disk (SQLITE_FULL, ENOSPC). The outbox raises its
    StorageError `from None` to keep the operator's line short; the SQLite error it replaced is still its
    __context__, so it is looked for there, and in the message as a last resort."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, sqlite3.Error) and (getattr(cur, "sqlite_errorcode", 0) & 0xFF) == SQLITE_FULL:
            return True
        if isinstance(cur, OSError) and cur.errno == errno.ENOSPC:
            return True
        if "database or disk is full" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
