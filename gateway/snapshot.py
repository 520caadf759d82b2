"""What the local surfaces (the control socket, the status page and /metrics) may see of the running gateway
and ask of it: one `Live` snapshot of its in-memory figures, the outbox figures (a query), and crew commands.

Defined below `service`, so `service` imports `control` and `status` and they never import it back: they hold
a `Surface` (the running `Gateway` is one) and never reach into its writer, pipeline, uploader or outbox.
A snapshot is a copy: a surface that keeps one cannot change, nor be changed by, the gateway it came from.
"""

from __future__ import annotations

import copy as copy_mod
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.errors import GatewayError
from gateway.guards import ClockStatus, DiskStatus
from gateway.ingest import ReaderCounters
from gateway.links.base import LinkState
from gateway.store import OutboxStats
from gateway.uploader import UploaderStatus

T = TypeVar("T")
F = TypeVar("F", "JournalFigures", "PipelineFigures")

# The crew's commands, one name each: the control socket's routes and the status page's /manual and /void
COMMANDS = ("mark", "void", "requeue", "prune", "session_new", "session_close", "device_bind")


class NotReady(GatewayError):
    """A command came before the gateway opened its outbox and pipeline (or after it closed them)."""

    def __init__(self) -> None:
        super().__init__("the gateway is not running yet: try again in a moment")


@dataclass(frozen=True)
class JournalFigures:
    committed: int
    duplicates: int
    rejected: int
    batches: int
    last_commit_at: float | None
    alive: bool


@dataclass(frozen=True)
class PipelineFigures:
    passings_created: int
    reads_processed: int
    reads_suppressed: int
    reads_dropped_seen: int
    open_windows: int
    unmapped_chips: frozenset[str]


@dataclass(frozen=True)
class ReaderFigures:
    name: str
    format: str
    url: str  # as configured: a surface shows it through status.server.safe_url
    link: LinkState | None  # None before its link was opened
    counters: ReaderCounters | None


@dataclass(frozen=True)
class Live:
    """The gateway's in-memory figures at one instant. Cheap: taken on every look (4 a second while a phone
    listens), no query."""

    phase: str  # starting, running, stopping, stopped
    started_at: float
    deviceid: str | None
    token_session: str | None
    alerts: tuple[str, ...]  # the gateway's and the uploader's, oldest first
    watchdog_at: float | None
    readers: tuple[ReaderFigures, ...]
    journal: JournalFigures | None  # None until the outbox is open
    pipeline: PipelineFigures | None
    uploader: UploaderStatus | None  # None without an API key
    clock: ClockStatus
    disk: DiskStatus
    timezone: str | None  # [session] timezone: how a clock time typed on the phone is read

    @property
    def healthy(self) -> bool:
        """Running, and its journal writer takes reads."""
        return self.phase == "running" and self.journal is not None and self.journal.alive


@dataclass(frozen=True)
class OutboxFigures:
    """What takes a query: the outbox counts, the session's alias, and whether every read is derived."""

    stats: OutboxStats
    session_alias: str | None
    caught_up: bool  # the pipeline has derived every journaled read


class Surface(Protocol):
    """The narrow protocol the local surfaces hold instead of the `Gateway` itself."""

    def live(self) -> Live:
        """A copy of the in-memory figures now."""
        ...

    async def outbox_figures(self) -> OutboxFigures | None:
        """The outbox figures now; None before the outbox is open. May raise while the database is busy."""
        ...

    async def command(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Run one of COMMANDS with its JSON body. GatewayError (NotReady among them) when it cannot be done;
        KeyError, ValueError or TypeError for a malformed body."""
        ...


def read_off(cls: type[F], source: object) -> F:
    """A figures dataclass filled from the same-named attributes of `source` (a set becomes a frozenset)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = getattr(source, f.name)
        values[f.name] = frozenset(value) if isinstance(value, set) else value
    return cls(**values)


def copy(obj: T) -> T:
    """A deep copy of a plain-attribute object (counters, link state, uploader status, guard status): a
    snapshot must not move when the gateway counts on, nor share a dict the gateway fills."""
    return copy_mod.deepcopy(obj)
