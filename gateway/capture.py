"""The capture file `record` writes and `replay` and `file://` read: raw bytes with their arrival times.

    # rufus-gateway capture v1 format=csv from=tcp://10.0.0.5:3601 started=2026-11-22T09:00:00.000Z
    2026-11-22T09:00:01.250Z<TAB>1234,,2026-11-22T09:00:01.200Z,1,-52\r\n

One entry per line: the arrival time (UTC, ms), a tab, the bytes escaped (backslash escapes for `\\`, tab,
CR, LF and any non-printable byte as \\xNN), so the file is readable and any byte survives. Bytes are split
after each LF so a line-based reader's capture reads one record per line; concatenating the entries gives
back the stream exactly.

A leaf: it knows bytes, timestamps and this file layout, nothing of links, formats or SQLite, so the file://
link, the `parse` command, the simulator and `record`/`replay` (gateway/recorder.py) all read or write it
without importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from gateway.errors import ReaderError
from gateway.model import format_ts, parse_ts

MAGIC = "# rufus-gateway capture v1"

_ESC = {0x5C: "\\\\", 0x09: "\\t", 0x0D: "\\r", 0x0A: "\\n"}
_UNESC_RE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[\\trn])")


def escape(data: bytes) -> str:
    out = []
    for b in data:
        if b in _ESC:
            out.append(_ESC[b])
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def unescape(text: str) -> bytes:
    raw = text.encode("ascii")  # escape() writes ASCII only; anything else is a damaged file

    def sub(m: re.Match[bytes]) -> bytes:
        g = m.group(1)
        if g[:1] == b"x":
            return bytes([int(g[1:], 16)])
        return {b"\\": b"\\", b"t": b"\t", b"r": b"\r", b"n": b"\n"}[g]

    return _UNESC_RE.sub(sub, raw)


def split_lines(data: bytes) -> list[bytes]:
    """Split after each LF (keeping it), so one capture line holds one line-based record."""
    parts = data.split(b"\n")
    pieces = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        pieces.append(parts[-1])
    return pieces


@dataclass(frozen=True, slots=True)
class Entry:
    arrival: datetime
    data: bytes


@dataclass(frozen=True, slots=True)
class Header:
    fields: dict[str, str]


class CaptureWriter:
    """Appends entries and flushes each one, so a capture cut short by Ctrl-C or a power cut is still usable."""

    def __init__(self, stream: IO[str], **header: str) -> None:
        self._stream = stream
        fields = " ".join(f"{k}={v}" for k, v in header.items() if v)
        stream.write(f"{MAGIC} {fields}\n".rstrip(" \n") + "\n")
        stream.flush()
        self.entries = 0
        self.bytes = 0

    def write(self, data: bytes, arrival: datetime | None = None) -> None:
        when = format_ts(arrival or datetime.now(UTC))
        for piece in split_lines(data):
            self._stream.write(f"{when}\t{escape(piece)}\n")
            self.entries += 1
            self.bytes += len(piece)
        self._stream.flush()


def is_capture(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(MAGIC)) == MAGIC.encode()


def read_capture(path: Path) -> tuple[Header, Iterator[Entry]]:
    """Parse a capture; a damaged line raises ReaderError naming file:line."""
    try:
        f = path.open("rb")
        first = f.readline().decode("ascii", errors="replace")
    except OSError as exc:
        raise ReaderError(f"{path}: cannot read capture: {exc.strerror or exc}") from exc
    if not first.startswith(MAGIC):
        f.close()
        raise ReaderError(f"{path}:1: not a rufus-gateway capture (expected {MAGIC!r})")
    fields = dict(kv.split("=", 1) for kv in first[len(MAGIC) :].split() if "=" in kv)

    def entries() -> Iterator[Entry]:
        with f:
            for lineno, raw in enumerate(f, start=2):
                try:
                    line = raw.decode("ascii").rstrip("\n")
                    if not line or line.startswith("#"):
                        continue
                    when, tab, text = line.partition("\t")
                    if not tab:
                        raise ValueError("no tab between arrival time and data")
                    entry = Entry(parse_ts(when), unescape(text))
                except ValueError as exc:  # UnicodeDecodeError is a ValueError too
                    raise ReaderError(f"{path}:{lineno}: bad capture line: {exc}") from None
                yield entry

    return Header(fields), entries()
