"""The crew's commands: `mark`, `session show|new|close`, `device bind|info`, `reconcile`.

One writer (invariant 8): a command that writes asks the running daemon through its control socket; only when
no daemon runs does it open the database itself (taking the same lock, so the two can never overlap).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway import config as config_mod
from gateway import control
from gateway.errors import CloudError, ConfigError, GatewayError

T = TypeVar("T")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The daemon's TOML config.",
)


def _settings(config_path: Path) -> config_mod.Settings:
    try:
        return config_mod.load(config_path)
    except ConfigError as exc:
        click.echo(f"rufus-gateway: config error: {exc}", err=True)
        sys.exit(config_mod.EX_CONFIG)


def _run(coro: Awaitable[T]) -> T:
    """Run one command's coroutine; every expected failure becomes one line on stderr and exit 2."""

    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except GatewayError as exc:
        from gateway.log import redact

        click.echo(f"rufus-gateway: {redact(str(exc))}", err=True)
        sys.exit(2)


def _client(settings: config_mod.Settings) -> Any:
    from gateway.service import make_client

    if not settings.cloud.api_key:
        raise ConfigError("[cloud] api_key: not set (or set RUFUS_API_KEY)", key="cloud.api_key")
    return make_client(settings.cloud)


@contextlib.asynccontextmanager
async def _store_and_client(settings: config_mod.Settings) -> AsyncIterator[tuple[Any, Any]]:
    """The database (taking the daemon's lock) and a cloud client, both closed whatever happens."""
    from gateway.store import Store

    client = _client(settings)  # first: a missing key fails before the database is touched
    try:
        outbox = await Store.open(settings.outbox.path)
        try:
            yield outbox, client
        finally:
            await outbox.close()
    finally:
        await client.close()


async def _via_daemon_or(
    settings: config_mod.Settings, route: str, body: dict[str, Any], direct: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    try:
        return await control.call(settings.control_socket, "POST", route, body)
    except control.DaemonNotRunning:
        return await direct()


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint="--time") from None
    if ts.tzinfo is None:
        raise click.BadParameter("give a zone: 2026-05-03T09:15:02+02:00 or ...Z", param_hint="--time")
    return ts.astimezone(UTC)


@click.command("mark")
@click.argument("bib", required=False)
@click.option("--time", "time_text", help="When the runner crossed (ISO 8601 with zone); default now.")
@click.option(
    "--void", "void_num", type=int, help="Void the manual passing with this num_passing (while Pending and never sent)."
)
@config_option
def mark_cmd(bib: str | None, time_text: str | None, void_num: int | None, config_path: Path) -> None:
    """Manual entry: a bib the mat missed, through the same journal and outbox (origin manual)."""
    settings = _settings(config_path)
    if void_num is not None:
        result = _run(
            _via_daemon_or(settings, "/void", {"num_passing": void_num}, lambda: _direct_void(settings, void_num))
        )
        if not result["voided"]:
            click.echo(f"num_passing {void_num} is not a Pending manual passing: not voided", err=True)
            sys.exit(1)
        click.echo(f"voided num_passing {void_num}")
        return
    if not bib:
        raise click.UsageError("give a BIB (or --void NUM)")
    when = _parse_time(time_text)
    body = {"bib": bib, "time": when.isoformat() if when else None}
    result = _run(_via_daemon_or(settings, "/mark", body, lambda: _direct_mark(settings, bib, when)))
    if result.get("num_passing") is None:
        click.echo(f"bib {bib} journaled; it gets its num_passing once a session is known")
    else:
        click.echo(f"bib {bib} -> num_passing {result['num_passing']} (session {result.get('token_session')})")


async def _direct_mark(settings: config_mod.Settings, bib: str, when: datetime | None) -> dict[str, Any]:
    from gateway.model import Read
    from gateway.pipeline import Pipeline
    from gateway.service import reader_rules, stamp_of
    from gateway.store import Store

    outbox = await Store.open(settings.outbox.path)
    try:
        ids = await outbox.journal(
            "manual", [Read(chip=None, bib=bib, timestamp=when or datetime.now(UTC), reader="manual")], origin="manual"
        )
        # the configured rules: this step may derive other readers' journaled backlog too
        await Pipeline(outbox, reader_rules(settings), stamp_of(settings)).step()
        row = await outbox.passing_of_read(ids[0]) if ids[0] is not None else None
        if row is not None:
            return {"num_passing": row.passing.num_passing, "token_session": row.token_session}
        session = await outbox.current_session()
        return {"num_passing": None, "token_session": session.token_session if session else None}
    finally:
        await outbox.close()


async def _direct_void(settings: config_mod.Settings, num: int) -> dict[str, Any]:
    from gateway.store import Store

    outbox = await Store.open(settings.outbox.path)
    try:
        session = await outbox.current_session()
        if session is None:
            raise GatewayError("no current session")
        return {"voided": await outbox.void(session.token_session, num)}
    finally:
        await outbox.close()


@click.group("session")
def session_group() -> None:
    """Show, start or close the RUFUS session passings are uploaded into."""


@session_group.command("show")
@config_option
@click.option("--json", "as_json", is_flag=True)
def session_show(config_path: Path, as_json: bool) -> None:
    """The current session and the history (read from the database; safe while the daemon runs)."""
    settings = _settings(config_path)

    async def show() -> list[dict[str, Any]]:
        from gateway.store import Store

        outbox = await Store.open(settings.outbox.path, lock=False, read_only=True)
        try:
            out = []
            for rec in await outbox.sessions():
                counts = {
                    state: len(await outbox.rows(rec.token_session, state)) for state in ("Pending", "Sent", "Rejected")
                }
                out.append(
                    {
                        "token_session": rec.token_session,
                        "alias": rec.alias,
                        "active": rec.active,
                        "created_by_us": rec.created_by_us,
                        "floor": rec.floor,
                        "created_at": rec.created_at.isoformat(),
                        **{k.lower(): v for k, v in counts.items()},
                    }
                )
            return out
        finally:
            await outbox.close()

    rows = _run(show())
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no session yet")
        return
    for r in rows:
        mark = "*" if r["active"] else " "
        click.echo(
            f"{mark} {r['token_session']}  {r['alias'] or '-'}  pending={r['pending']} sent={r['sent']} "
            f"rejected={r['rejected']}  since {r['created_at']}"
        )


@session_group.command("new")
@config_option
@click.option("--alias", help="Alias of the new session (default: [session] alias).")
def session_new(config_path: Path, alias: str | None) -> None:
    """Start a new session in the cloud (closing the device's other one) and number new passings in it."""
    settings = _settings(config_path)

    async def direct() -> dict[str, Any]:
        from gateway import lifecycle

        async with _store_and_client(settings) as (outbox, client):
            ls = lifecycle.LifecycleSettings.from_settings(settings, patient=False)
            deviceid = await lifecycle.resolve_device(outbox, client, ls)
            rec = await lifecycle.new_session(outbox, client, alias or settings.session.alias, deviceid)
            return {"token_session": rec.token_session}

    result = _run(_via_daemon_or(settings, "/session/new", {"alias": alias or settings.session.alias}, direct))
    click.echo(f"new session {result['token_session']}")


@session_group.command("close")
@config_option
def session_close(config_path: Path) -> None:
    """Close the current session in the cloud (it stays readable; it takes no more passings)."""
    settings = _settings(config_path)

    async def direct() -> dict[str, Any]:
        from gateway import lifecycle

        async with _store_and_client(settings) as (outbox, client):
            rec = await outbox.current_session()
            if rec is None:
                raise GatewayError("no current session")
            await lifecycle.close_session(outbox, client, rec.token_session)
            return {"closed": rec.token_session}

    result = _run(_via_daemon_or(settings, "/session/close", {}, direct))
    click.echo(f"closed session {result['closed']}")


@click.group("device")
def device_group() -> None:
    """Bind this gateway as a device in the cloud, or show what the cloud knows of it."""


@device_group.command("bind")
@config_option
def device_bind(config_path: Path) -> None:
    """Bind ([device] serial_number, model, type...) and store the deviceid; a configured or stored deviceid
    is kept. Through the running daemon when there is one."""
    settings = _settings(config_path)

    async def direct() -> dict[str, Any]:
        from gateway import lifecycle

        async with _store_and_client(settings) as (outbox, client):
            deviceid = await lifecycle.resolve_device(
                outbox, client, lifecycle.LifecycleSettings.from_settings(settings, patient=False)
            )
            if deviceid is None:
                raise ConfigError("[device] serial_number and model: both needed to bind a device", key="device")
            return {"deviceid": deviceid}

    d = settings.device
    body = {
        "deviceid": d.deviceid,
        "serial_number": d.serial_number,
        "model": d.model,
        "alias": d.alias,
        "firmware": d.firmware,
        "type": d.type,
    }
    result = _run(_via_daemon_or(settings, "/device/bind", body, direct))
    click.echo(f"deviceid {result['deviceid']}")


@device_group.command("info")
@config_option
def device_info(config_path: Path) -> None:
    """What the cloud holds for this device."""
    settings = _settings(config_path)

    async def info() -> dict[str, Any]:
        from dataclasses import asdict

        from gateway.store import Store

        deviceid = settings.device.deviceid
        if deviceid is None:
            outbox = await Store.open(settings.outbox.path, lock=False, read_only=True)
            try:
                deviceid = await outbox.get_meta("deviceid")
            finally:
                await outbox.close()
        if deviceid is None:
            raise GatewayError("no deviceid configured or stored: run `rufus-gateway device bind` first")
        client = _client(settings)
        try:
            return asdict(await client.device_info(deviceid))
        finally:
            await client.close()

    click.echo(json.dumps(_run(info()), default=str, indent=2))


@click.command("reconcile")
@config_option
@click.option("--session", "token", help="Only this session (default: every local session with passings).")
def reconcile_cmd(config_path: Path, token: str | None) -> None:
    """End of race: is everything in the cloud? Looks at every local session holding passings (an older,
    closed one included): reads each back from the cloud and compares bib and timestamp with every local
    Sent, requeuing what is missing; lists what is still Pending and what the cloud Rejected (not voided by
    the operator). Exit 0 = yes; exit 1 = a list of what is not."""
    settings = _settings(config_path)
    report = _run(_reconcile(settings, token))
    problems = False
    for s in report:
        tok = s["token_session"]
        if s["missing"]:
            problems = True
            click.echo(
                f"no: session {tok}: {len(s['missing'])} passing(s) marked Sent are not in the cloud "
                "(requeued): " + ", ".join(map(str, s["missing"]))
            )
        if s["pending"]:
            problems = True
            shown = ", ".join(f"{n} (bib {b})" for n, b in s["pending"][:50])
            click.echo(
                f"no: session {tok}: {len(s['pending'])} passing(s) still Pending: {shown}"
                + (" ..." if len(s["pending"]) > 50 else "")
            )
        if s["rejected"]:
            problems = True
            click.echo(
                f"no: session {tok}: {len(s['rejected'])} passing(s) Rejected by the cloud, not in it "
                "(after fixing them: rufus-gateway outbox requeue --rejected):"
            )
            for n, b, reason in s["rejected"]:
                click.echo(f"  num_passing {n}, bib {b}: {reason or 'no reason given'}")
        if s["unverified"]:
            click.echo(
                f"note: session {tok}: {s['unverified']} passing(s) marked Sent without being verified "
                "(the key could not read) are now checked against the cloud"
            )
    if problems:
        sys.exit(1)
    total = sum(s["sent"] for s in report)
    tokens = [s["token_session"] for s in report]
    if len(tokens) == 1:
        click.echo(f"yes: all {total} passings of session {tokens[0]} are in the cloud")
    elif tokens:
        click.echo(f"yes: all {total} passings of {len(tokens)} sessions are in the cloud: " + ", ".join(tokens))
    else:
        click.echo("yes: no passings to check")


async def _reconcile(settings: config_mod.Settings, only: str | None) -> list[dict[str, Any]]:
    """Per local session with passings: what is Sent but not in the cloud (then requeued), still Pending,
    Rejected (a Voided passing is the crew's own decision, not a refusal to report)."""
    from gateway import verification
    from gateway.store import Store

    outbox = await Store.open(settings.outbox.path, lock=False, read_only=True)
    try:
        tokens = [only] if only else [s.token_session for s in await outbox.sessions()]
        local = {tok: await outbox.rows(tok) for tok in tokens}
    finally:
        await outbox.close()
    report: list[dict[str, Any]] = []
    client: Any = None
    try:
        for tok, rows in local.items():
            sent = [r for r in rows if r.state == "Sent"]
            pending = [r for r in rows if r.state == "Pending"]
            rejected = [r for r in rows if r.state == "Rejected"]
            if not (sent or pending or rejected):
                continue  # nothing of ours left in it (moved, voided or pruned)
            unverified = sum(1 for r in sent if verification.unverified(r))
            missing: list[int] = []
            if sent:
                client = client or _client(settings)
                try:
                    # The uploader's own comparison: what "in the cloud" means cannot differ between the two.
                    missing = (await verification.read_back(client, tok, sent)).not_ours
                except CloudError as exc:
                    tail = f" ({unverified} passing(s) there were marked Sent without verification)"
                    tail = tail if unverified else ""
                    raise GatewayError(f"cannot read session {tok} back from the cloud: {exc}{tail}") from None
                if missing:
                    await _requeue(settings, tok, missing)
            report.append(
                {
                    "token_session": tok,
                    "sent": len(sent),
                    "missing": missing,
                    "pending": [(r.passing.num_passing, r.passing.bib) for r in pending],
                    "rejected": [(r.passing.num_passing, r.passing.bib, r.reason) for r in rejected],
                    "unverified": unverified,
                }
            )
    finally:
        if client is not None:
            await client.close()
    return report


async def _requeue(settings: config_mod.Settings, token: str, nums: list[int]) -> None:
    from gateway.store import Store

    async def direct() -> dict[str, Any]:
        box = await Store.open(settings.outbox.path)
        try:
            return {"requeued": await box.requeue(token, nums)}
        finally:
            await box.close()

    await _via_daemon_or(settings, "/requeue", {"token_session": token, "nums": nums}, direct)
