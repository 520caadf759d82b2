"""`rufus-gateway outbox stats|list|export|check|prune`: look into the gateway's database.

stats, list, export and check only read: they open the database read-only and without the lock, so they work
while the daemon runs (WAL lets a reader see the last committed state). prune and requeue write: while the
daemon runs they go through its control endpoint, otherwise they take the lock themselves (invariant 8).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.errors import ConfigError, GatewayError, StorageError
from gateway.store import STATES, OutboxRow, Store

T = TypeVar("T")

EXIT_STORAGE = 2  # the database could not be opened or written (missing, locked, unreadable)
PASSING_FIELDS = (
    "token_session",
    "num_passing",
    "timestamp",
    "bib",
    "chip",
    "participant_id",
    "timezone",
    "latitude",
    "longitude",
    "gender",
    "status",
    "state",
    "reason",
    "attempts",
    "sent_at",
    "origin",
    "read_id",
    "created_at",
)


def _db_path(db: Path | None, config: Path | None) -> Path:
    """The one place that decides which database a command looks at: --db, else the config's [outbox] path."""
    if db is not None and config is not None:
        raise click.UsageError("give either --db or --config, not both")
    if db is not None:
        return db
    if config is not None:
        from gateway import config as config_mod

        try:
            return Path(config_mod.load(config).outbox.path)
        except ConfigError as exc:
            click.echo(f"rufus-gateway: config error: {exc}", err=True)
            sys.exit(config_mod.EX_CONFIG)
    raise click.UsageError("give --db PATH (the gateway's database) or --config FILE")


def _source(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The daemon's TOML config ([outbox] path).",
    )(f)
    f = click.option(
        "--db", "db", type=click.Path(dir_okay=False, path_type=Path), help="The gateway's database file."
    )(f)
    return f


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Every expected failure is one line on stderr, never a traceback."""
    try:
        return asyncio.run(work())
    except GatewayError as exc:
        from gateway.log import redact

        click.echo(f"rufus-gateway: {redact(str(exc))}", err=True)
        sys.exit(EXIT_STORAGE)


async def _read(path: Path, fn: Callable[[Store], Awaitable[T]]) -> T:
    box = await Store.open(path, lock=False, read_only=True)
    try:
        return await fn(box)
    finally:
        await box.close()


def _passing_dict(row: OutboxRow) -> dict[str, Any]:
    p = row.passing
    return {
        "token_session": row.token_session,
        "num_passing": p.num_passing,
        "timestamp": _iso(p.timestamp),
        "bib": p.bib,
        "chip": p.chip,
        "participant_id": p.participant_id,
        "timezone": p.timezone,
        "latitude": p.latitude,
        "longitude": p.longitude,
        "gender": p.gender,
        "status": p.status,
        "state": row.state,
        "reason": row.reason,
        "attempts": row.attempts,
        "sent_at": _iso(row.sent_at) if row.sent_at else None,
        "origin": row.origin,
        "read_id": row.read_id,
        "created_at": _iso(row.created_at),
    }


def _iso(dt: Any) -> str:
    from gateway.model import format_ts

    return format_ts(dt)


@click.group("outbox")
def outbox_group() -> None:
    """Look into the gateway's database: counts, passings, exports, integrity, retention."""


@outbox_group.command("stats")
@_source
@click.option("--json", "as_json", is_flag=True, help="One JSON object with exactly the documented keys.")
def stats_cmd(db: Path | None, config: Path | None, as_json: bool) -> None:
    """Pending / Sent / Rejected passings, journaled reads, age of the oldest Pending, current session."""
    path = _db_path(db, config)
    st = _run(lambda: _read(path, lambda box: box.stats()))
    data = {
        "pending": st.pending,
        "sent": st.sent,
        "rejected": st.rejected,
        "reads": st.reads,
        "oldest_pending_age_s": st.oldest_pending_age_s,
        "token_session": st.token_session,
    }
    if as_json:
        click.echo(json.dumps(data))
        return
    age = "-" if st.oldest_pending_age_s is None else f"{st.oldest_pending_age_s:.1f} s"
    click.echo(f"session:        {st.token_session or '(none)'}")
    click.echo(f"reads:          {st.reads}")
    click.echo(f"pending:        {st.pending}")
    click.echo(f"sent:           {st.sent}")
    click.echo(f"rejected:       {st.rejected}")
    click.echo(f"oldest pending: {age}")


@outbox_group.command("list")
@_source
@click.option("--state", type=click.Choice(STATES), help="Only passings in this state.")
@click.option("--session", "token_session", help="Only this token_session.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="The newest N passings.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_cmd(
    db: Path | None, config: Path | None, state: str | None, token_session: str | None, limit: int, as_json: bool
) -> None:
    """The newest passings (oldest of them first), with state and reason."""
    path = _db_path(db, config)
    rows = _run(lambda: _read(path, lambda box: box.rows(token_session, state, limit, newest_first=True)))
    rows.reverse()
    if as_json:
        for row in rows:
            click.echo(json.dumps(_passing_dict(row)))
        return
    if not rows:
        click.echo("no passings")
        return
    click.echo(
        f"{'num':>6}  {'state':<8}  {'bib':<8}  {'timestamp':<24}  {'chip':<16}  {'try':>3}  "
        f"{'origin':<6}  session / reason"
    )
    for row in rows:
        p = row.passing
        tail = row.token_session + (f"  {row.reason}" if row.reason else "")
        click.echo(
            f"{p.num_passing:>6}  {row.state:<8}  {p.bib:<8}  {_iso(p.timestamp):<24}  {p.chip or '':<16}  "
            f"{row.attempts:>3}  {row.origin:<6}  {tail}"
        )


@outbox_group.command("export")
@_source
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option(
    "--table",
    type=click.Choice(["passings", "reads", "rejected_lines", "sessions"]),
    default="passings",
    show_default=True,
    help="What to export.",
)
@click.option("--state", type=click.Choice(STATES), help="passings: only this state.")
@click.option("--session", "token_session", help="passings: only this token_session.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def export_cmd(
    db: Path | None,
    config: Path | None,
    fmt: str,
    table: str,
    state: str | None,
    token_session: str | None,
    out: Path | None,
) -> None:
    """Everything stored, as CSV or JSON (the database holds no secret: the API key lives only in the config)."""
    path = _db_path(db, config)

    async def fetch(box: Store) -> tuple[list[str], list[list[Any]]]:
        if table == "passings":
            records = [_passing_dict(r) for r in await box.rows(token_session, state)]
            return list(PASSING_FIELDS), [[rec[k] for k in PASSING_FIELDS] for rec in records]
        cols, rows = await box.export_table(table)
        return cols, [list(r) for r in rows]

    cols, rows = _run(lambda: _read(path, fetch))
    buf = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows(["" if v is None else v for v in r] for r in rows)
    else:
        json.dump([dict(zip(cols, r, strict=True)) for r in rows], buf, indent=1)
        buf.write("\n")
    if out is None:
        click.echo(buf.getvalue(), nl=False)
    else:
        try:
            out.write_text(buf.getvalue(), encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {out}: {exc.strerror}") from None
        click.echo(f"{len(rows)} {table} rows written to {out}", err=True)


@outbox_group.command("check")
@_source
def check_cmd(db: Path | None, config: Path | None) -> None:
    """Full integrity check of the database: exit 0 when sound, 1 with the problems listed."""
    path = _db_path(db, config)

    async def check() -> list[str]:
        box = await Store.open(path, lock=False, read_only=True, quick_check=False)
        try:
            return await box.integrity_check()
        finally:
            await box.close()

    try:
        problems = asyncio.run(check())
    except StorageError as exc:
        if "does not exist" in str(exc):
            click.echo(f"rufus-gateway: {exc}", err=True)
            sys.exit(EXIT_STORAGE)
        problems = [str(exc)]
    if problems == ["ok"]:
        click.echo(f"{path}: ok")
        return
    for p in problems[:50]:
        click.echo(f"{path}: {p}", err=True)
    sys.exit(1)


@outbox_group.command("prune")
@_source
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    required=True,
    help="Delete Sent passings sent more than DAYS ago (reads and other states are kept).",
)
def prune_cmd(db: Path | None, config: Path | None, days: float) -> None:
    """Explicit retention: delete Sent passings older than DAYS (through the running daemon if there is one)."""
    path = _db_path(db, config)
    from gateway import log as log_mod

    log_mod.configure(json=False)

    from gateway import control

    async def direct() -> int:
        if not path.exists():
            raise StorageError(f"database {path} does not exist")
        try:
            box = await Store.open(path)
        except StorageError as exc:
            if "in use by another" in str(exc):
                raise StorageError(
                    f"{exc} and its control endpoint does not answer: prune writes, stop the daemon first"
                ) from None
            raise
        try:
            return await box.prune_sent(days * 86400.0)
        finally:
            await box.close()

    async def prune() -> int:
        try:
            answer = await control.call(_control_socket(path), "POST", "/prune", {"older_than_s": days * 86400.0})
        except control.DaemonNotRunning:
            return await direct()
        return int(answer["pruned"])

    deleted = _run(prune)
    click.echo(f"pruned {deleted} Sent passings sent more than {days:g} days ago from {path}")


def _control_socket(path: Path) -> str:
    """The daemon's control endpoint for this database (the same rule as Settings.control_socket)."""
    return str(path.with_suffix(".ctl"))


@outbox_group.command("requeue")
@_source
@click.argument("nums", nargs=-1, type=click.IntRange(min=1))
@click.option("--session", "token_session", help="The session the numbers belong to (default: the current one).")
@click.option(
    "--rejected",
    is_flag=True,
    help="Instead of NUMS: every Rejected passing not voided by the operator goes back to Pending "
    "(all sessions, or --session's), keeping its num_passing.",
)
def requeue_cmd(
    db: Path | None, config: Path | None, nums: tuple[int, ...], token_session: str | None, rejected: bool
) -> None:
    """Send these Sent passings again (Sent -> Pending, same num_passing; the cloud dedups), or with
    --rejected the passings the cloud refused (after it was fixed, or after a refusal that was the cloud's).

    Goes through the running daemon's control socket; opens the database itself only when no daemon runs."""
    if rejected == bool(nums):
        raise click.UsageError("give NUMS (Sent passings to send again) or --rejected, not both")
    path = _db_path(db, config)
    from gateway import control

    async def direct() -> dict[str, Any]:
        if not path.exists():
            raise StorageError(f"database {path} does not exist")
        box = await Store.open(path)
        try:
            if rejected:
                return {"requeued": await box.requeue_rejected(token_session)}
            token = token_session
            if token is None:
                current = await box.current_session()
                if current is None:
                    raise GatewayError("no current session: give --session TOKEN")
                token = current.token_session
            return {"requeued": await box.requeue(token, list(nums)), "token_session": token}
        finally:
            await box.close()

    async def requeue() -> dict[str, Any]:
        body: dict[str, Any] = {"rejected": True} if rejected else {"nums": list(nums)}
        if token_session:
            body["token_session"] = token_session
        try:
            return await control.call(_control_socket(path), "POST", "/requeue", body)
        except control.DaemonNotRunning:
            return await direct()

    result = _run(requeue)
    n = int(result["requeued"])
    if rejected:
        click.echo(f"requeued {n} Rejected passing(s) (voided ones stay voided)")
        return
    click.echo(
        f"requeued {n} of {len(nums)} passing(s)"
        + ("" if n == len(nums) else " (the others are not Sent: Pending already, Rejected, Moved or unknown)")
    )
