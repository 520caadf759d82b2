"""The contract every reader format implements: framing, parsing, formatting and (sans-IO) conversations.

A format module is pure: bytes in, values out, bytes to send back. It never touches a socket, a file,
SQLite or the clock (the current time comes in through ParseContext). Links carry the bytes; the
service decides when a read is durable and only then asks the conversation for the acknowledgement.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import ClassVar, Literal

from gateway.model import Read

MAX_RECORD = 4096  # longest record a framer keeps; anything longer is rejected, never buffered whole


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What a parser needs besides the bytes."""

    tz: tzinfo = UTC  # the reader's zone, for protocols that send local times
    date: date | None = None  # the day to complete a time-of-day with; None: the day of `now` in `tz`
    now: datetime | None = None  # the gateway's clock (aware); None: datetime.now(UTC) at parse time
    reader: str | None = None  # id for reads whose protocol carries none (the link's name)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that is not a valid read. `reason` is one line, names the field and the byte offset."""

    reason: str
    raw: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record recognised as not being a read (heartbeat, status, comment, greeting): not an error."""

    kind: str
    raw: str


@dataclass(frozen=True, slots=True)
class ReaderHolds(Skipped):
    """A reader's answer saying how many reads it holds, numbered 1..count (RACE RESULT `PASSINGS;<n>;<file>`).

    Not a read, so a Skipped; the ingest compares `count` with the highest number it has journaled and asks
    for what is missing (reads lost just before a disconnect, with none after them to reveal the gap). A
    different `generation` (the decoder's file number) means the numbering restarted.
    """

    count: int = 0
    generation: str | None = None
    reader: str | None = None  # the reader id the numbers belong to, when the answer names it


ParseResult = Read | Rejected | Skipped


@dataclass(slots=True)
class Record:
    """One framed record. `offset` is the byte offset of its first byte in the stream (for messages)."""

    data: bytes
    offset: int
    oversize: bool = False  # longer than MAX_RECORD: `data` holds only the first bytes
    truncated: bool = False  # the stream ended (or broke) before its terminator


class Framer(ABC):
    """Splits a byte stream into records; survives any chunking (one byte at a time, random splits)."""

    @abstractmethod
    def feed(self, data: bytes) -> list[Record]:
        """Add bytes; return the records completed by them."""

    @abstractmethod
    def flush(self) -> list[Record]:
        """At EOF or disconnect: return an unterminated tail as a `truncated` record (or nothing)."""


class Conversation(ABC):
    """Gateway side of one connection: what to say on connect, what to answer, what to ack after commit."""

    #: what parsing needs besides the bytes; replaceable between records (`parse` sets each capture entry's
    #: arrival time as `now`, so a time without a date is completed with the day it was recorded)
    ctx: ParseContext

    #: seconds without any byte after which the link is considered dead (None: protocol has no heartbeat)
    silence_timeout: float | None = None

    def greeting(self) -> bytes:
        """Bytes to send as soon as the connection is up (a handshake, a push-mode request)."""
        return b""

    @abstractmethod
    def on_record(self, record: Record) -> tuple[list[ParseResult], bytes]:
        """Interpret one record: the results it carries, and bytes to answer at once (e.g. a pong)."""

    def ack(self, read: Read) -> bytes:
        """Bytes acknowledging `read`, sent only after it is durably journaled (b"" if the protocol has none)."""
        return b""

    def refetch(self, first_seq: int, count: int) -> bytes:
        """Bytes asking the reader to send again reads first_seq..first_seq+count-1 (b"" if unsupported)."""
        return b""

    def keepalive(self) -> bytes:
        """Bytes to send periodically so the reader knows we are alive (b"" if none)."""
        return b""

    def set_time(self, now: datetime) -> bytes:
        """Bytes setting the reader's clock to `now` (aware), sent after the greeting when the crew opted in
        (`[reader] set_time`); b"" if the protocol has no such command."""
        return b""

    def is_resend(self, read: Read) -> bool:
        """True if the reader marks `read` as sent again from its memory (an Ultra rewind): such a read says
        nothing about where the reader's numbering is now."""
        return False


class ReaderConversation(ABC):
    """Reader side of one connection (the simulator): how a timer of this make talks to a gateway."""

    @abstractmethod
    def greeting(self) -> bytes:
        """What the reader says first on a new connection (may be b"")."""

    @abstractmethod
    def encode(self, read: Read) -> bytes:
        """One read as the reader sends it, terminator included; assigns sequence numbers if the protocol has them."""

    def heartbeat(self) -> bytes:
        """A heartbeat/status record (b"" if the protocol has none)."""
        return b""

    def on_bytes(self, data: bytes) -> tuple[list[Read], bytes]:
        """Bytes from the gateway: reads it acknowledged, and bytes to answer (e.g. a rewind's re-sends)."""
        return [], b""

    @property
    def needs_ack(self) -> bool:
        """True if this protocol re-sends reads the gateway did not acknowledge."""
        return False

    @property
    def ready(self) -> bool:
        """True once the gateway's side of the handshake has arrived on this connection (push mode asked for,
        `start` said): before that a real reader sends no read. Protocols without a handshake: always."""
        return True

    def connection_started(self) -> None:
        """A new connection: a handshake done on the previous one no longer counts."""
        return None

    def take_resent(self) -> list[Read]:
        """The reads sent again from memory (answers to a re-fetch or rewind) since the last call, for the
        truth file; [] for protocols that cannot be asked."""
        return []


class Format(ABC):
    """One reader line format. Implementations are stateless; state lives in framers and conversations."""

    name: ClassVar[str]
    default_port: ClassVar[int | None] = None
    #: who opens the connection at a real finish line: the gateway ("connect"), the reader ("listen"), either
    gateway_role: ClassVar[Literal["connect", "listen", "either"]] = "either"
    description: ClassVar[str] = ""

    @abstractmethod
    def framer(self) -> Framer: ...

    @abstractmethod
    def parse(self, record: bytes, ctx: ParseContext) -> ParseResult:
        """Never raises on any input: malformed bytes come back as Rejected with a reason."""

    @abstractmethod
    def format(self, read: Read, ctx: ParseContext) -> bytes:
        """The read as this reader would send it, terminator included (the simulator's side)."""

    def conversation(self, ctx: ParseContext) -> Conversation:
        """Gateway side of a new connection; default: no handshake, no acks."""
        return _PlainConversation(self, ctx)

    def reader_conversation(self, ctx: ParseContext) -> ReaderConversation:
        """Reader side of a new connection; default: just the formatted lines."""
        return _PlainReader(self, ctx)


@dataclass(slots=True)
class _PlainConversation(Conversation):
    fmt: Format
    ctx: ParseContext

    def on_record(self, record: Record) -> tuple[list[ParseResult], bytes]:
        return [parse_record(self.fmt, record, self.ctx)], b""


@dataclass(slots=True)
class _PlainReader(ReaderConversation):
    fmt: Format
    ctx: ParseContext
    sent: int = field(default=0)

    def greeting(self) -> bytes:
        return b""

    def encode(self, read: Read) -> bytes:
        self.sent += 1
        return self.fmt.format(read, self.ctx)


def parse_record(fmt: Format, record: Record, ctx: ParseContext) -> ParseResult:
    """Parse a framed record, turning framing problems into rejections that say where they happened."""
    if record.oversize:
        raw = record.data.decode("utf-8", errors="replace")
        return Rejected(f"record at byte {record.offset} longer than {MAX_RECORD} bytes", raw[:200])
    if record.truncated:
        raw = record.data.decode("utf-8", errors="replace")
        return Rejected(f"record at byte {record.offset} cut off before its terminator", raw)
    return fmt.parse(record.data, ctx)  # the raw text of a good record is the format's to decode, once
