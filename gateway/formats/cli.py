"""`rufus-gateway parse`: run a capture through a format, one JSON object per read.

How a crew checks a capture from a new reader: reads on stdout (every key, null when absent), each
rejected record on stderr as `LINE_NO: reason` (for `$`-framed MYLAPS, the record number), skipped
heartbeats and status lines silent. A capture written by `record` (or the simulator) is recognised by
its first line and parsed as the bytes the reader sent, each entry with its arrival time as the clock (a
time without a date gets the day it was recorded); its rejections carry the capture's line.
Exit 0 when everything parsed, 1 when something was rejected, 2 on a usage or file error.
Imports nothing heavier than click.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import sys
from collections.abc import Iterator
from datetime import date
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from gateway import formats
from gateway.capture import MAGIC, unescape
from gateway.errors import ReaderError
from gateway.formats.base import Format, ParseContext, Record, Rejected
from gateway.model import Read, format_ts, parse_ts

CHUNK = 65536
# formats whose records are not lines: a rejection is numbered by record, not by line
_RECORD_NUMBERED = {"mylaps"}


class UsageProblem(click.ClickException):
    """A one-line error (no usage dump) with the usage exit code."""

    exit_code = 2


def read_json(read: Read) -> str:
    obj: dict[str, Any] = {
        "bib": read.bib,
        "chip": read.chip,
        "timestamp": format_ts(read.timestamp),
        "antenna": read.antenna,
        "rssi": read.rssi,
        "reader": read.reader,
        "seq": read.seq,
        "seen": read.seen,
        "counters": list(read.counters) if read.counters is not None else None,
    }
    return json.dumps(obj, ensure_ascii=False)


class LineIndex:
    """Where lines end in a byte stream (LF, CRLF or a lone CR), so a record offset maps to a line number."""

    def __init__(self) -> None:
        self._ends: list[int] = []  # stream offsets of the byte ending each line
        self._pos = 0
        self._cr_pending = False  # a CR at the end of the last chunk: CRLF or a lone CR, decided next chunk

    def feed(self, data: bytes) -> None:
        for i, byte in enumerate(data):
            offset = self._pos + i
            if self._cr_pending:
                self._cr_pending = False
                if byte != 0x0A:
                    self._ends.append(offset - 1)
            if byte == 0x0A:
                self._ends.append(offset)
            elif byte == 0x0D:
                self._cr_pending = True
        self._pos += len(data)

    def line_of(self, offset: int) -> int:
        return bisect.bisect_left(self._ends, offset) + 1


def run_parse(fmt: Format, ctx: ParseContext, stream: IO[bytes], out: IO[str], err: IO[str]) -> int:
    """Parse everything in `stream` (raw reader bytes, or a `record` capture); returns the exit code."""
    framer = fmt.framer()
    conv = fmt.conversation(ctx)
    index = LineIndex()
    by_record = fmt.name in _RECORD_NUMBERED
    numbered = 0
    rejected = 0
    # a capture: stream offset where each entry starts -> the capture file's line number, for messages
    entry_starts: list[int] = []
    entry_lines: list[int] = []

    def where(record: Record) -> int:
        if by_record:
            return numbered
        if entry_starts:
            return entry_lines[bisect.bisect_right(entry_starts, record.offset) - 1]
        return index.line_of(record.offset)

    def emit(records: list[Record]) -> None:
        nonlocal numbered, rejected
        for record in records:
            numbered += 1
            results, _answer = conv.on_record(record)
            for result in results:
                if isinstance(result, Read):
                    out.write(read_json(result) + "\n")
                    conv.ack(result)  # printed is "taken" here; lets an acking protocol forget the read
                elif isinstance(result, Rejected):
                    rejected += 1
                    err.write(f"{where(record)}: {result.reason}\n")

    head = stream.read(len(MAGIC))
    if head == MAGIC.encode():
        # `record`/simulator captures hold escaped bytes with arrival times: parse the bytes the reader sent
        stream_pos = 0
        for line_no, line in enumerate(_lines(head, stream), start=1):
            if line_no == 1 or not line.strip() or line.startswith(b"#"):
                continue
            when, tab, text = line.rstrip(b"\r\n").partition(b"\t")
            try:
                if not tab:
                    raise ValueError("no tab between arrival time and data")
                data = unescape(text.decode("ascii"))
                arrival = parse_ts(when.decode("ascii"))
            except (ValueError, UnicodeDecodeError) as exc:
                rejected += 1
                err.write(f"{line_no}: damaged capture line: {exc}\n")
                continue
            # A reader without a date (no GPS) is completed with the day the capture was RECORDED, not today's:
            # each entry's arrival time is the parse's `now` (an explicit --date still wins).
            conv.ctx = dataclasses.replace(ctx, now=arrival)
            entry_starts.append(stream_pos)
            entry_lines.append(line_no)
            stream_pos += len(data)
            emit(framer.feed(data))
    else:
        chunk = head
        while chunk:
            if not by_record:
                index.feed(chunk)
            emit(framer.feed(chunk))
            chunk = stream.read(CHUNK)
    emit(framer.flush())
    return 1 if rejected else 0


def _lines(head: bytes, stream: IO[bytes]) -> Iterator[bytes]:
    """Lines of a capture whose first bytes were already read."""
    first = head + stream.readline()
    yield first
    yield from stream


@click.command("parse")
@click.option("--format", "fmt_name", required=True, metavar="F", help=f"reader format: {', '.join(formats.names())}")
@click.option(
    "--tz", "tz_name", default="UTC", show_default=True, metavar="ZONE", help="the reader's IANA zone, for local times"
)
@click.option("--date", "day", default=None, metavar="YYYY-MM-DD", help="the day for times without a date")
@click.option("--reader", default=None, metavar="NAME", help="reader id for protocols that carry none")
@click.argument("file", default="-", metavar="[FILE|-]")
def parse_cmd(fmt_name: str, tz_name: str, day: str | None, reader: str | None, file: str) -> None:
    """Parse a reader capture (raw bytes, or a file from `record`): one JSON object per read on stdout,
    each rejected record on stderr as LINE_NO: reason. Exit 0 all parsed, 1 some rejected, 2 usage/file error."""
    try:
        fmt = formats.get(fmt_name)
    except ReaderError as exc:
        raise UsageProblem(str(exc)) from None
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageProblem(f"--tz {tz_name!r}: not an IANA time zone (e.g. Europe/Berlin)") from None
    the_day: date | None = None
    if day is not None:
        try:
            the_day = date.fromisoformat(day)
        except ValueError:
            raise UsageProblem(f"--date {day!r}: not YYYY-MM-DD") from None
    ctx = ParseContext(tz=tz, date=the_day, reader=reader)
    out, err = sys.stdout, sys.stderr
    if file == "-":
        code = run_parse(fmt, ctx, sys.stdin.buffer, out, err)
    else:
        try:
            stream = open(file, "rb")  # closed by the with below; an open error must become one line
        except OSError as exc:
            raise UsageProblem(f"{file}: {exc.strerror or exc}") from None
        with stream:
            try:
                code = run_parse(fmt, ctx, stream, out, err)
            except OSError as exc:  # e.g. a directory, or the disk went away mid-read
                raise UsageProblem(f"{file}: {exc.strerror or exc}") from None
    out.flush()
    click.get_current_context().exit(code)
