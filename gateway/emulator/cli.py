"""`rufus-gateway emulator`: run the RUFUS Cloud emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from gateway.emulator.config import ApiKey, EmulatorConfig, Faults
from gateway.emulator.server import Emulator
from gateway.log import configure


def _keys(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[ApiKey]:
    keys = []
    for spec in values:
        try:
            keys.append(ApiKey.parse(spec))
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return keys


def _faults(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Faults:
    try:
        return Faults.parse(value or "")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API and admin ports listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="API port (0 picks a free one); the API is served under /v0.",
)
@click.option(
    "--db",
    "db",
    default=None,
    type=click.Path(dir_okay=False),
    help="Persist devices, sessions and passings in this SQLite file  [default: in memory]",
)
@click.option(
    "--dialect",
    default="enveloped",
    show_default=True,
    type=click.Choice(["enveloped", "bare"]),
    help='Response shape: {"body": ...} as in the OpenAPI, or bare as in the prose pages.',
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    callback=_keys,
    metavar="KEY:READ|WRITE|READ_WRITE[:unbind]",
    help="An accepted key with its access type (repeatable)  [default: a generated READ_WRITE:unbind "
    "demo key, printed at start]",
)
@click.option(
    "--admin-port",
    default=8081,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the admin endpoint (GET /state, POST /faults, POST /reset).",
)
@click.option(
    "--admin-token",
    default=None,
    envvar="RUFUS_EMULATOR_ADMIN_TOKEN",
    help="Token the admin endpoint requires (also $RUFUS_EMULATOR_ADMIN_TOKEN)  [default: generated, printed at start]",
)
@click.option(
    "--faults",
    "faults",
    default="",
    callback=_faults,
    metavar="SPEC",
    help="Faults at start, e.g. error_rate=0.1,error_status=503,retry_after=1,latency_ms=50,"
    "drop_after_commit=0.05,hang_rate=0.01,reject_bib=13,offline=false  [default: none]",
)
@click.option("--seed", default=None, type=int, help="Seed for the fault dice, to replay a run  [default: random]")
@click.option(
    "--bind-requires-type/--bind-type-optional",
    default=False,
    show_default=True,
    help="Whether POST /devices requires `type` (400 naming it when missing), as one vendor page says; "
    "the OpenAPI leaves it optional.",
)
def emulator_cmd(
    host: str,
    port: int,
    db: str | None,
    dialect: str,
    api_keys: list[ApiKey],
    admin_port: int,
    admin_token: str | None,
    faults: Faults,
    seed: int | None,
    bind_requires_type: bool,
) -> None:
    """Run a local RUFUS Cloud (all v0 endpoints) for rehearsals and tests, until Ctrl-C or SIGTERM."""
    configure("info", stream=sys.stderr)  # stdout carries only the banner, which scripts parse
    config = EmulatorConfig(
        host=host, port=port, admin_port=admin_port, admin_token=admin_token, db=db,
        dialect="bare" if dialect == "bare" else "enveloped", api_keys=api_keys, faults=faults, seed=seed,
        bind_requires_type=bind_requires_type,
    )  # fmt: skip
    emulator = Emulator(config)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await emulator.start()
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}: {exc.strerror or exc}") from None
        try:
            _banner(emulator)
            await stop.wait()
        finally:
            await emulator.stop()

    asyncio.run(serve())
    click.echo("emulator stopped", err=True)


def _banner(emulator: Emulator) -> None:
    lines = [
        f"RUFUS Cloud emulator ({emulator.dialect} dialect"
        + (", bind requires type)" if emulator.config.bind_requires_type else ")"),
        f"api: {emulator.base_url}",
        f"page: {emulator.page_url}",
        f"admin: {emulator.admin_url}",
    ]
    if emulator.generated_admin_token:
        lines.append(f"admin token: {emulator.admin_token}")
    if emulator.generated_key:
        lines.append(f"demo key: {emulator.api_key} (READ_WRITE, unbind)")
    else:
        lines.append("keys: " + ", ".join(f"{k.access}{':unbind' if k.unbind else ''}" for k in emulator.keys))
    faults = {k: v for k, v in emulator.faults.as_dict().items() if v != getattr(Faults(), k)}
    if faults:
        lines.append("faults: " + ",".join(f"{k}={v}" for k, v in faults.items()))
    lines.append("ready: Ctrl-C or SIGTERM stops it")  # scripts wait for this line
    click.echo("\n".join(lines))
    sys.stdout.flush()
