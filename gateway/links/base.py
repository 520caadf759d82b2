"""What every link shares: the live byte pipe (Connection), the visible state, and the reconnect loop.

Links move bytes and nothing else: they know no format, no SQLite, no HTTP. A handler (the ingest, the
simulator, the recorder) gets one Connection at a time and returns when it is done with it or it broke;
the link then reconnects forever with capped full-jitter backoff, quiet after the first warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from gateway.backoff import Backoff, Streak
from gateway.errors import ReaderError
from gateway.log import get_logger

log = get_logger("gateway.links")

#: a connection that lived at least this long (or carried bytes) resets the backoff: a reader that accepts
#: and drops at once must not be hammered, one that worked for a while is retried promptly.
HEALTHY_AFTER_S = 5.0

# Errors that mean "this connection (or attempt) is broken", as opposed to a bug or a full disk.
LINK_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, ReaderError, ConnectionError, TimeoutError)


@dataclass
class LinkState:
    """Plain attributes the status page and the metrics read."""

    connected: bool = False
    since: float = 0.0  # time.time() when `connected` last changed (or the link was created)
    last_byte_at: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    reconnects: int = 0  # connections opened after the first one
    connections: int = 0  # open right now (a listener can hold several)
    accepted: int = 0  # connections opened in total
    last_error: str | None = None
    listening: str | None = None  # host:port a listener is bound to

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def set_connected(self, value: bool) -> None:
        if value != self.connected:
            self.connected = value
            self.since = time.time()


Handler = Callable[["Connection"], Awaitable[None]]


class Connection(ABC):
    """One live byte pipe. `read()` returns b"" at EOF; a broken pipe raises ReaderError."""

    def __init__(self, peer: str, state: LinkState) -> None:
        self.peer = peer
        self._state = state

    async def read(self) -> bytes:
        data = await self._read()
        if data:
            self._state.bytes_in += len(data)
            self._state.last_byte_at = time.time()
        return data

    def write(self, data: bytes) -> None:
        if data:
            self._state.bytes_out += len(data)
            self._write(data)

    async def drain(self) -> None:
        """Wait until the written bytes are handed to the OS (flow control for fast senders)."""
        return None  # pipes without flow control (files) are always drained

    def write_eof(self) -> bool:
        """Half-close: we are done sending but still read (a no-op where impossible, e.g. serial).

        Closing a socket that still has unread incoming bytes sends a RST, and a RST makes the peer
        discard what it has not read yet; a half-close lets it read everything and hang up first.
        Returns True if the half-close happened (the peer will see EOF and can hang up).
        """
        return False

    @abstractmethod
    async def _read(self) -> bytes: ...

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


class Link(ABC):
    """A named source (or destination) of bytes that keeps itself connected."""

    def __init__(
        self, url: str, name: str | None = None, *, backoff_base: float = 0.5, backoff_cap: float = 30.0
    ) -> None:
        self.url = url
        self.name = name or url
        self.state = LinkState(since=time.time())
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._streak = Streak(f"link {self.name}", log)
        # Set once the link has made its first attempt (a listener bound or refused its port, a connect or an
        # open succeeded or failed): the daemon says it is ready only after that, so a reader told to connect
        # to a gateway that says ready is not refused by a listener still being set up.
        self.first_attempt = asyncio.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.url}>"

    @abstractmethod
    async def run(self, handler: Handler) -> None:
        """Forever (file links: once): open, hand each connection to `handler`, reconnect when it ends."""

    def _failed(self, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{error.__class__.__name__}: {error}"
        self.state.last_error = text
        self._streak.failed(text, link=self.name, url=self.url)


class ClientLink(Link):
    """A link the gateway opens itself (TCP connect, a serial device): one connection at a time."""

    @abstractmethod
    async def _open(self) -> Connection:
        """Open one connection; raise an OSError/ReaderError when the other end is not there."""

    async def run(self, handler: Handler) -> None:
        backoff = Backoff(self.backoff_base, self.backoff_cap)
        first = True
        while True:
            try:
                conn = await self._open()
            except LINK_ERRORS as exc:
                self.first_attempt.set()
                self._failed(exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            self.first_attempt.set()
            if not first:
                self.state.reconnects += 1
            first = False
            self._streak.succeeded(link=self.name)
            self.state.accepted += 1
            self.state.connections = 1
            self.state.set_connected(True)
            log.info("link connected", link=self.name, peer=conn.peer)
            opened = time.monotonic()
            bytes_before = self.state.bytes_in
            try:
                await handler(conn)
                reason = "closed by peer"
            except LINK_ERRORS as exc:
                reason = f"{exc.__class__.__name__}: {exc}"
            finally:
                self.state.connections = 0
                self.state.set_connected(False)
                with contextlib.suppress(Exception):
                    await conn.close()
            if time.monotonic() - opened >= HEALTHY_AFTER_S or self.state.bytes_in > bytes_before:
                backoff.reset()
            self._failed(reason)
            await asyncio.sleep(backoff.next_delay())
