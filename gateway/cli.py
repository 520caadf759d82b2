"""The `rufus-gateway` command. Subcommands live beside the code they drive and load lazily, so
`rufus-gateway parse` does not import aiohttp and a broken area cannot break every command."""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any

import click

from gateway import __version__

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "run": "gateway.daemon_cli:run_cmd",
    "demo": "gateway.demo:demo_cmd",
    "mark": "gateway.crew_cli:mark_cmd",
    "session": "gateway.crew_cli:session_group",
    "device": "gateway.crew_cli:device_group",
    "reconcile": "gateway.crew_cli:reconcile_cmd",
    "outbox": "gateway.outbox_cli:outbox_group",
    "emulator": "gateway.emulator.cli:emulator_cmd",
    "parse": "gateway.formats.cli:parse_cmd",
    "simulate": "gateway.simulator.cli:simulate_cmd",
    "record": "gateway.recorder:record_cmd",
    "replay": "gateway.recorder:replay_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            command: click.Command = getattr(import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rufus-gateway")
def cli() -> None:
    """Finish-line gateway: timing reader -> SQLite outbox -> RUFUS Cloud, nothing lost, nothing doubled."""
    # Logs go to stderr so a command's stdout stays its output (JSON a script can read); `run` and `demo`
    # reconfigure with their own level and destination.
    from gateway import log

    log.configure("warning", stream=sys.stderr)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="rufus-gateway")


if __name__ == "__main__":
    main()
