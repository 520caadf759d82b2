"""open_link's URL mapping and its one-line errors; file:// and the capture format."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway import formats
from gateway.capture import CaptureWriter, escape, read_capture, unescape
from gateway.errors import ReaderError
from gateway.formats.base import ParseContext
from gateway.ingest import ReaderCounters, run_reader
from gateway.links import open_link
from gateway.links.file import FileLink
from gateway.links.serial import SerialLink
from gateway.links.tcp import TcpLink, TcpListenLink
from gateway.model import Read
from tests.fixtures.links import MemorySink

CSV = formats.get("csv")
CTX = ParseContext(reader="test")


@pytest.mark.parametrize(
    ("url", "kind", "what"),
    [
        ("tcp://10.0.0.5:3601", TcpLink, ("10.0.0.5", 3601)),
        ("tcp-listen://0.0.0.0:3097", TcpListenLink, ("0.0.0.0", 3097)),
        ("serial:///dev/ttyUSB0?baudrate=115200", SerialLink, ("/dev/ttyUSB0", 115200)),
        ("/dev/serial/by-id/usb-FTDI-if00", SerialLink, ("/dev/serial/by-id/usb-FTDI-if00", 9600)),
        ("file:///var/cap/race.cap", FileLink, Path("/var/cap/race.cap")),
    ],
)
def test_open_link_maps_urls(url: str, kind: type, what: object) -> None:
    link = open_link(url, name="finish")
    assert isinstance(link, kind)
    assert link.name == "finish"
    if isinstance(link, TcpLink | TcpListenLink):
        assert (link.host, link.port) == what
    elif isinstance(link, SerialLink):
        assert (link.device, link.baudrate) == what
    elif isinstance(link, FileLink):
        assert link.path == what


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("udp://1.2.3.4:5", "unknown scheme udp://"),
        ("10.0.0.5:3601", "unknown scheme"),
        ("tcp://10.0.0.5", "missing port"),
        ("tcp://:3601", "missing host"),
        ("tcp://host:99999", "port must be between 1 and 65535, got 99999"),
        ("tcp://host:x", "port must be a number, got 'x'"),
        ("serial:///dev/ttyUSB0?baudrate=fast", "baudrate must be a number, got 'fast'"),
        ("serial:///dev/ttyUSB0?speed=9600", "unknown option 'speed'"),
        ("serial:///dev/ttyUSB0?baudrate=11520", "baudrate 11520 is not a standard rate"),
        ("serial://", "missing path"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ReaderError) as err:
        open_link(url)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_credentials_never_appear_in_the_url_or_errors() -> None:
    link = open_link("tcp://admin:hunter22@10.0.0.5:3601")
    assert "hunter22" not in link.url and "hunter22" not in repr(link)
    for bad in ("tcp://admin:hunter22@10.0.0.5", "tcp://admin:hunter22@10.0.0.5:x", "tcp://admin:hunter22@[::1:1"):
        with pytest.raises(ReaderError) as err:
            open_link(bad)
        assert "hunter22" not in str(err.value), bad


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("tcp://admin:hunter22@10.0.0.5:x", "reader URL 'tcp://10.0.0.5:x': port must be a number, got 'x'"),
        (
            "tcp://admin:hunter22@10.0.0.5:99999",
            "reader URL 'tcp://10.0.0.5:99999': port must be between 1 and 65535, got 99999",
        ),
    ],
)
def test_a_bad_port_behind_credentials_is_still_called_a_bad_port(url: str, message: str) -> None:
    with pytest.raises(ReaderError) as err:
        open_link(url)
    assert str(err.value) == message


def test_serial_line_options_reach_the_port() -> None:
    link = open_link("serial:///dev/ttyUSB0?baudrate=19200&bytesize=7&parity=e&stopbits=1.5")
    assert isinstance(link, SerialLink)
    assert (link.device, link.baudrate) == ("/dev/ttyUSB0", 19200)
    assert link.serial_options == {"bytesize": 7, "parity": "E", "stopbits": 1.5}


def test_escape_round_trips_every_byte() -> None:
    data = bytes(range(256)) * 2
    text = escape(data)
    assert text.isascii() and "\n" not in text and "\t" not in text
    assert unescape(text) == data


def _reads(n: int) -> list[Read]:
    t0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    return [Read(chip=f"C{i}", bib=str(i), timestamp=t0 + timedelta(seconds=i)) for i in range(n)]


async def _ingest(url: str) -> tuple[MemorySink, ReaderCounters]:
    sink = MemorySink()
    counters = ReaderCounters()
    await asyncio.wait_for(run_reader(open_link(url, name="cap"), CSV, CTX, sink, counters), 5)
    return sink, counters


async def test_file_link_reads_a_plain_file_once(tmp_path: Path) -> None:
    reads = _reads(5)
    path = tmp_path / "plain.csv"
    path.write_bytes(b"# exported from a laptop\n" + b"".join(CSV.format(r, CTX) for r in reads) + b"7,C7,2026-11")
    sink, counters = await _ingest(f"file://{path}")  # returns: a file is read once
    assert [(r.bib, r.timestamp) for r in sink.reads] == [(r.bib, r.timestamp) for r in reads]
    assert counters.skipped == 1
    assert [x[3] for x in sink.rejects] == ["7,C7,2026-11"]  # the cut-off last line is kept, not lost


async def test_file_link_reads_a_record_capture(tmp_path: Path) -> None:
    reads = _reads(4)
    path = tmp_path / "race.cap"
    with path.open("w", encoding="ascii") as f:
        cap = CaptureWriter(f, format="csv", source="tcp://10.0.0.5:3601")
        stream = b"".join(CSV.format(r, CTX) for r in reads)
        cap.write(stream[:30])  # a chunk boundary mid-line, as a socket delivers it
        cap.write(stream[30:])
    header, entries = read_capture(path)
    assert header.fields["format"] == "csv"
    assert b"".join(e.data for e in entries) == stream
    sink, _ = await _ingest(f"file://{path}")
    assert [r.bib for r in sink.reads] == ["0", "1", "2", "3"]


async def test_file_link_missing_file_is_a_reader_error(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="no such file"):
        await _ingest(f"file://{tmp_path}/nope.cap")


def test_damaged_capture_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.cap"
    path.write_text("# rufus-gateway capture v1 format=csv\n2026-11-22T08:00:00.000Z\tok\\n\nyesterday\tx\n")
    _header, entries = read_capture(path)
    with pytest.raises(ReaderError, match=r"bad\.cap:3: bad capture line"):
        list(entries)


def test_non_ascii_in_a_capture_is_a_damaged_line(tmp_path: Path) -> None:
    path = tmp_path / "utf.cap"
    path.write_bytes(b"# rufus-gateway capture v1 format=csv\n2026-11-22T08:00:00.000Z\t\xc3\xa9\n")
    _header, entries = read_capture(path)
    with pytest.raises(ReaderError, match=r"utf\.cap:2: bad capture line"):
        list(entries)
