"""Under systemd the log goes to the journal as structured entries (native protocol, one datagram each), so
`journalctl -u rufus-gateway READER=finish` picks out one reader's lines; never with a secret in any field.
The test binds its own datagram socket where journald's would be and reads exactly what was sent."""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import log


def parse_entry(data: bytes) -> dict[str, str]:
    """The native protocol read back the way journald reads it."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            i = nl + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            assert data[nl + 9 + size : nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields[name.decode()] = value.decode()
    return fields


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    sock.settimeout(5)
    try:
        yield sock
    finally:
        sock.close()
        log.configure("info", stream=io.StringIO(), json=True)  # leave no logger pointing at a closed socket


def test_entries_carry_reader_fields_and_no_secret(journald: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "ror-" + "7c" * 10
    log.register_secret(key)
    stderr = os.fstat(sys.stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{stderr.st_dev}:{stderr.st_ino}")
    assert log.under_journald()
    log.configure("info", journal_socket=journald.getsockname())
    logger = log.get_logger("gateway.ingest")
    logger.warning("reader silent: dropping the connection", link="finish", peer="192.0.2.7:3097", silence_s=30.0)
    logger.error("upload failed", error=f"401 for key {key}", api_key=key, status=401)
    logger.info("multi-line", note="one\ntwo")
    first = parse_entry(journald.recv(65536))
    assert first == {
        "MESSAGE": "reader silent: dropping the connection link=finish peer=192.0.2.7:3097 silence_s=30.0",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "rufus-gateway",
        "LINK": "finish",
        "PEER": "192.0.2.7:3097",
        "SILENCE_S": "30.0",
        "READER": "finish",
        "LOGGER": "gateway.ingest",
    }
    second = journald.recv(65536)
    assert key.encode() not in second
    fields = parse_entry(second)
    assert fields["PRIORITY"] == "3" and fields["STATUS"] == "401"
    assert fields["ERROR"] == "401 for key ***" and fields["API_KEY"] == "***"
    assert fields["MESSAGE"] == "upload failed error=401 for key *** api_key=*** status=401"
    third = parse_entry(journald.recv(65536))
    assert third["NOTE"] == "one\ntwo"  # a value with a newline goes length-prefixed, whole


def test_an_entry_too_big_for_a_datagram_goes_in_a_memfd(journald: socket.socket) -> None:
    log.configure("info", journal=True, journal_socket=journald.getsockname())
    journald.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    big = "x" * 400_000  # above the datagram limit (net.core.wmem_max)
    log.get_logger("t").info("big", blob=big)
    data, fds, _flags, _addr = socket.recv_fds(journald, 16, 1)
    assert data == b"" and len(fds) == 1
    with os.fdopen(fds[0], "rb") as f:
        f.seek(0)  # journald maps the whole memfd; the offset is where the writer left it
        fields = parse_entry(f.read())
    assert fields["BLOB"] == big and fields["SYSLOG_IDENTIFIER"] == "rufus-gateway"


def test_a_stderr_that_is_not_the_journal_stream_keeps_writing_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # inherited, but stderr is something else now
    assert not log.under_journald()
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert not log.under_journald()


def test_the_daemon_logs_to_the_journal_when_its_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    """The real command under a journal stream: its start-up lines arrive as entries, not on stderr."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    sock.settimeout(20)
    err = tmp_path / "stderr"
    code = (
        "import os, sys\n"
        "from gateway import log\n"
        "st = os.fstat(2)\n"
        "os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
        f"log.JOURNAL_SOCKET = {str(tmp_path / 'journal.sock')!r}\n"
        "log.configure('info')\n"
        "log.get_logger('gateway.service').info('gateway running', readers=['finish'])\n"
    )
    try:
        with err.open("wb") as f:
            subprocess.run([sys.executable, "-c", code], stderr=f, check=True, timeout=60)
        fields = parse_entry(sock.recv(65536))
    finally:
        sock.close()
    assert fields["MESSAGE"] == 'gateway running readers=["finish"]' and fields["READERS"] == '["finish"]'
    assert err.read_text() == ""
