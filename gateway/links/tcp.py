"""TCP both ways: `tcp://host:port` (we connect to a reader) and `tcp-listen://host:port` (readers connect to us)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from gateway.backoff import Backoff
from gateway.errors import ReaderError
from gateway.links.base import LINK_ERRORS, ClientLink, Connection, Handler, Link, LinkState, log

READ_CHUNK = 65536
CONNECT_TIMEOUT_S = 10.0
# TCP keepalive: a reader whose cable was cut or that lost power sends no FIN, and a protocol without heartbeats
# (csv, ipico) would wait on the dead socket forever. The kernel probes after 10 s idle, every 5 s, 3 times:
# a dead peer is noticed in about 25 s, and the read fails so the link reconnects.
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3


def enable_keepalive(sock: Any) -> bool:
    """Turn on TCP keepalive with short timers where the platform has the options; True if it was enabled."""
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except (OSError, AttributeError):
        return False
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)  # Linux / macOS
    for option, value in (
        (idle, KEEPALIVE_IDLE_S),
        (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL_S),
        (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT),
    ):
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    return True


class StreamConnection(Connection):
    """A Connection over an asyncio stream pair (TCP sockets and serial ports alike)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str, state: LinkState) -> None:
        super().__init__(peer, state)
        self._reader = reader
        self._writer = writer

    async def _read(self) -> bytes:
        try:
            return await self._reader.read(READ_CHUNK)
        except (OSError, EOFError) as exc:
            raise ReaderError(f"{self.peer}: {exc.__class__.__name__}: {exc}") from exc
        except Exception as exc:  # the serial transport reports a vanished device as its own exception type
            raise ReaderError(f"{self.peer}: {exc.__class__.__name__}: {exc}") from exc

    def _write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ReaderError(f"{self.peer}: write on a closed connection")
        self._writer.write(data)

    def write_eof(self) -> bool:
        if self._writer.can_write_eof() and not self._writer.is_closing():
            try:
                self._writer.write_eof()
            except OSError:
                return False
            return True
        return False  # serial ports have no half-close

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise ReaderError(f"{self.peer}: {exc.__class__.__name__}: {exc}") from exc

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return str(info)


class TcpLink(ClientLink):
    """The gateway connects to a reader (RaceResult, Ultra, Ipico) and reconnects when it goes away."""

    def __init__(self, url: str, host: str, port: int, name: str | None = None, **kw: float) -> None:
        super().__init__(url, name, **kw)
        self.host = host
        self.port = port

    async def _open(self) -> Connection:
        # asyncio.timeout, not wait_for: on 3.11 a cancel that lands as the connect completes is swallowed by
        # wait_for (it returns the result, or raises the refusal), and a link being shut down reconnects forever.
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as exc:
            raise ReaderError(f"connect to {self.host}:{self.port} timed out") from exc
        enable_keepalive(writer.get_extra_info("socket"))
        return StreamConnection(reader, writer, _peer(writer), self.state)


class TcpListenLink(Link):
    """The gateway listens; readers (ChronoTrack, MYLAPS, simulators) connect, several at once."""

    def __init__(self, url: str, host: str, port: int, name: str | None = None, **kw: float) -> None:
        super().__init__(url, name, **kw)
        self.host = host
        self.port = port
        self.address: tuple[str, int] | None = None  # where we are bound (the real port when port 0 was asked)
        self.listening = asyncio.Event()

    async def run(self, handler: Handler) -> None:
        backoff = Backoff(self.backoff_base, self.backoff_cap)
        while True:
            failure: BaseException | None = None
            try:
                await self._serve(handler)
            except* LINK_ERRORS as group:  # the port is taken, the address is gone: try again later
                # except*: a bind error raised inside _serve's TaskGroup arrives wrapped in an ExceptionGroup
                failure = group.exceptions[0]
            if failure is not None:
                self.first_attempt.set()
                self.listening.clear()
                self.state.listening = None
                self._failed(failure)
                await asyncio.sleep(backoff.next_delay())

    async def _serve(self, handler: Handler) -> None:
        async with asyncio.TaskGroup() as tg:

            def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                enable_keepalive(writer.get_extra_info("socket"))
                conn = StreamConnection(reader, writer, _peer(writer), self.state)
                tg.create_task(self._one(conn, handler), name=f"link:{self.name}:{conn.peer}")

            server = await asyncio.start_server(on_client, self.host, self.port)
            try:
                sock = server.sockets[0].getsockname()
                self.address = (str(sock[0]), int(sock[1]))
                self.state.listening = f"{self.address[0]}:{self.address[1]}"
                self._streak.succeeded(link=self.name)
                self.listening.set()
                self.first_attempt.set()
                log.info("link listening", link=self.name, address=self.state.listening)
                await asyncio.Future()  # until cancelled; client tasks live in the task group
            finally:
                self.listening.clear()
                server.close()
                with contextlib.suppress(Exception):
                    await server.wait_closed()

    async def _one(self, conn: Connection, handler: Handler) -> None:
        state = self.state
        if state.accepted:
            state.reconnects += 1
        state.accepted += 1
        state.connections += 1
        state.set_connected(True)
        log.info("link connected", link=self.name, peer=conn.peer)
        try:
            await handler(conn)
            log.info("link peer closed", link=self.name, peer=conn.peer)
        except LINK_ERRORS as exc:
            state.last_error = f"{conn.peer}: {exc.__class__.__name__}: {exc}"
            log.warning("link connection broke", link=self.name, peer=conn.peer, error=state.last_error)
        finally:
            state.connections -= 1
            if state.connections == 0:
                state.set_connected(False)
            await conn.close()
