"""`file://path`: read a capture once (a plain byte dump, or a `record` capture with arrival times).

Bytes the conversation would send back (greetings, acks) go nowhere: there is no reader to hear them.
Arrival times are not waited for here; `replay` is the command that honours the original spacing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from gateway.capture import is_capture, read_capture
from gateway.errors import ReaderError
from gateway.links.base import Connection, Handler, Link, LinkState

CHUNK = 65536


def iter_chunks(path: Path) -> Iterator[bytes]:
    """The stream a file holds: a capture's entries unescaped, or a plain file's bytes as they are."""
    try:
        capture = is_capture(path)
    except OSError as exc:
        raise ReaderError(f"{path}: {exc.strerror or exc}") from exc
    if capture:
        _header, entries = read_capture(path)
        for entry in entries:
            yield entry.data
        return
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
    except OSError as exc:
        raise ReaderError(f"{path}: {exc.strerror or exc}") from exc


class FileConnection(Connection):
    def __init__(self, path: Path, state: LinkState) -> None:
        super().__init__(str(path), state)
        self._chunks = iter_chunks(path)
        self.discarded = 0  # bytes a conversation tried to send back

    async def _read(self) -> bytes:
        await asyncio.sleep(0)  # a big file must not starve the loop
        return next(self._chunks, b"")

    def _write(self, data: bytes) -> None:
        self.discarded += len(data)

    async def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class FileLink(Link):
    def __init__(self, url: str, path: Path, name: str | None = None, **kw: float) -> None:
        super().__init__(url, name, **kw)
        self.path = path

    async def run(self, handler: Handler) -> None:
        """Once through the file, then return (a capture has no reconnect)."""
        self.first_attempt.set()
        if not self.path.is_file():
            raise ReaderError(f"{self.url}: no such file {self.path}")
        conn = FileConnection(self.path, self.state)
        self.state.accepted += 1
        self.state.connections = 1
        self.state.set_connected(True)
        try:
            await handler(conn)
        finally:
            self.state.connections = 0
            self.state.set_connected(False)
            await conn.close()
