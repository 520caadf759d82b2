"""IPICO: real reader lines of both frame lengths through `rufus-gateway parse`, I/Q kept as counters (not
RSSI), and the simulator's counters looking like a reader's."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway import formats
from gateway.formats.base import ParseContext
from gateway.formats.ipico import checksum
from gateway.model import Read

CAPTURE = Path(__file__).parents[2] / "data" / "captures" / "ipico-mixed.txt"
CTX = ParseContext(tz=UTC, now=datetime(2026, 3, 7, 14, tzinfo=UTC))


def _parse_cli(path: Path) -> subprocess.CompletedProcess[bytes]:
    exe = [sys.executable, "-m", "gateway.cli", "parse", "--format", "ipico", "--tz", "UTC", str(path)]
    return subprocess.run(exe, capture_output=True, timeout=60, check=False)


def test_parse_reads_a_capture_mixing_36_and_42_character_frames() -> None:
    proc = _parse_cli(CAPTURE)
    assert (proc.returncode, proc.stderr) == (0, b"")
    reads = [json.loads(line) for line in proc.stdout.splitlines()]
    got = [(r["chip"], r["timestamp"], r["counters"], r["seen"], r["rssi"]) for r in reads]
    assert got == [
        ("058000123b32", "2026-03-07T13:48:50.500Z", [0, 1], None, None),
        ("058000121838", "2026-03-07T13:48:51.360Z", [0, 1], None, None),
        ("058000128608", "2026-03-07T13:48:51.950Z", [0, 1], None, None),
        ("058000120e38", "2026-03-07T13:48:52.030Z", [0, 1], None, None),
        ("058000123b32", "2026-03-07T13:48:50.500Z", [0, 255], None, None),  # 00ff: not rssi 255
        # ab00000222 (a control frame) is skipped, not a rejection
        ("000000012345", "2001-12-30T18:45:59.390Z", [10, 42], "first", None),  # 42 characters, flags 80
        ("058000120e38", "2026-03-07T13:56:01.540Z", [0, 14], None, None),
        # real TTO frames (fsls-event-tto.pcapng): first-seen in first/last-seen mode, flags 00 in event mode
        ("058000123b32", "2026-03-08T12:22:02.470Z", [0, 1], "first", None),
        ("058000128608", "2026-03-08T12:22:53.160Z", [0, 1], None, None),
        ("000000012345", "2001-12-30T18:45:59.390Z", [10, 42], "last", None),  # flags 40
        ("000000012345", "2001-12-30T18:45:59.390Z", [10, 42], None, None),  # ff: tamper only
        ("000000012345", "2001-12-30T18:45:59.390Z", [10, 42], "last", None),  # 44: flags 00 + LS
    ]
    assert {r["reader"] for r in reads} == {"00", "40"}


def test_parse_names_the_line_of_a_broken_frame_of_either_length(tmp_path: Path) -> None:
    capture = tmp_path / "ipico.txt"
    good = CAPTURE.read_bytes()
    # the TTO line with the short frame's checksum position, and a real line with a flipped hundredths digit
    capture.write_bytes(
        good + b"aa400000000123450a2a01123018455927120080a7\r\naa00058000123b3200012603071348503377\r\n"
    )
    proc = _parse_cli(capture)
    assert proc.returncode == 1
    assert len(proc.stdout.splitlines()) == 12  # every good read still printed
    assert proc.stderr.decode().splitlines() == [
        "14: checksum 'a7' at byte 40: computed 'd2'",
        "15: checksum '77' at byte 34: computed '78'",
    ]


def test_checksum_is_the_published_rule_on_every_real_line() -> None:
    for line in CAPTURE.read_text().splitlines():
        if len(line) == 36:
            assert checksum(line) == line[34:36], line
        elif len(line) >= 42:
            assert checksum(line, 40) == line[40:42], line


def test_the_flags_bytes_a_real_reader_sends_give_first_last_or_none() -> None:
    # fsls-event-tto.pcapng: in first/last-seen mode (0505) the TTO bytes read 060080, 070080 (first seen)
    # and 060060, 080060 (the delayed report: 0x60, last-seen plus a bit 5 the spec does not name); in
    # event mode (0305) 0c0000, 0d0000. Each is put on the capture's first-seen frame, checksum redone.
    real = "aa00058000123b3200012603081222022f060080cd"
    seen = {}
    for tto in ("060080", "070080", "060060", "080060", "0c0000", "0d0000"):
        body = real[:34] + tto
        read = formats.get("ipico").parse((body + checksum(body, 40)).encode(), CTX)
        assert isinstance(read, Read), read
        seen[tto] = read.seen
    assert seen == {
        "060080": "first",
        "070080": "first",
        "060060": "last",
        "080060": "last",
        "0c0000": None,
        "0d0000": None,
    }


def test_simulated_reads_carry_reader_like_counters_and_no_rssi() -> None:
    fmt = formats.get("ipico")
    t = datetime(2026, 5, 17, 9, 15, 2, 120000, tzinfo=UTC)
    counters = []
    for rssi in (-75.0, -60.0, -48.0, -41.0, -30.0, -20.0, None):
        line = fmt.format(Read(chip="058001e50001", bib=None, timestamp=t, rssi=rssi), CTX)
        back = fmt.parse(line.rstrip(b"\r\n"), CTX)
        assert isinstance(back, Read) and back.rssi is None
        assert back.counters is not None
        counters.append(back.counters)
    # like the reader's own download: I 00, Q 1 for most reads, up to 4 for a tag that passed close
    assert counters == [(0, 1), (0, 1), (0, 2), (0, 3), (0, 4), (0, 4), (0, 1)]
    kept = fmt.format(Read(chip="058001e50001", bib=None, timestamp=t, counters=(0, 255)), CTX)
    assert kept.startswith(b"aa00058001e5000100ff")  # a replayed read's own counters go out unchanged
