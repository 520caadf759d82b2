"""`rufus-gateway parse`: JSON reads on stdout, `LINE_NO: reason` on stderr, exit codes 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import cli

KEYS = ["bib", "chip", "timestamp", "antenna", "rssi", "reader", "seq", "seen", "counters"]


def _run(args: list[str], stdin: bytes | None = None) -> tuple[int, list[dict[str, object]], list[str]]:
    result = CliRunner().invoke(cli, ["parse", *args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    reads = [json.loads(line) for line in result.stdout.splitlines()]
    return result.exit_code, reads, result.stderr.splitlines()


def test_clean_capture_exits_0_with_every_key(tmp_path: Path) -> None:
    capture = tmp_path / "finish.csv"
    capture.write_bytes(b"# finish line\r\n17,E2000017,2026-05-17T09:15:02.5+02:00,2,-61.5\r\n,E2003412,09:15:03\r\n")
    code, reads, errors = _run(["--format", "csv", "--tz", "Europe/Berlin", "--date", "2026-05-17", str(capture)])
    assert code == 0 and errors == []
    assert [list(r) for r in reads] == [KEYS, KEYS]
    assert reads[0] == {
        "bib": "17", "chip": "E2000017", "timestamp": "2026-05-17T07:15:02.500Z",
        "antenna": 2, "rssi": -61.5, "reader": None, "seq": None, "seen": None, "counters": None,
    }  # fmt: skip
    assert reads[1]["bib"] is None and reads[1]["timestamp"] == "2026-05-17T07:15:03.000Z"


def test_rejections_go_to_stderr_with_physical_line_numbers_and_exit_1() -> None:
    data = (
        b"1,A,2026-05-17T09:15:02Z\n\n# note\n,,2026-05-17T09:15:02Z\r\nnoise\r2,B,2026-05-17T09:15:04Z\n3,C,2026-05-1"
    )
    code, reads, errors = _run(["--format", "csv", "-"], stdin=data)
    assert code == 1
    assert [r["bib"] for r in reads] == ["1", "2"]
    assert errors == [
        "4: bib and chip both empty at byte 0 (one of them is needed)",
        "5: chip: missing at byte 5 (want bib,chip,timestamp[,antenna[,rssi]])",
        "7: record at byte 88 cut off before its terminator",
    ]


def test_raceresult_capture_with_status_lines_is_clean() -> None:
    data = (
        b"SETPROTOCOL;3.2\r\n#P;17;1234;0000-00-00;11:15:02.123;0;1A;4F;;0;;;;;;;;D-5012;1;2;5012\r\n"
        b"GETSTATUS;2026-05-17;11:15:00.000;1;00011001;1;1;1;49.7,8.2;1;100;10;10;0;0;;;;;0;1;1;1;0;\r\n"
    )
    code, reads, errors = _run(["--format", "raceresult", "--tz", "Europe/Berlin", "--date", "2026-05-17"], data)
    assert (code, errors) == (0, [])
    assert reads == [
        {"bib": None, "chip": "1234", "timestamp": "2026-05-17T09:15:02.123Z", "antenna": 2, "rssi": 79.0,
         "reader": "D-5012", "seq": 17, "seen": None, "counters": None}
    ]  # fmt: skip


def test_usage_and_file_errors_exit_2_in_one_line(tmp_path: Path) -> None:
    for args, message in [
        (["--format", "nope"], "unknown format 'nope'"),
        (["--format", "csv", "--tz", "Mars/Olympus"], "--tz 'Mars/Olympus': not an IANA time zone"),
        (["--format", "csv", "--date", "17.05.2026"], "--date '17.05.2026': not YYYY-MM-DD"),
        (["--format", "csv", str(tmp_path / "missing.csv")], "missing.csv: No such file or directory"),
        (["--format", "csv", str(tmp_path)], "Is a directory"),
    ]:
        code, reads, errors = _run(args, stdin=b"")
        assert code == 2, args
        assert reads == []
        assert len(errors) == 1 and message in errors[0], errors


def test_real_command_line_no_traceback(tmp_path: Path) -> None:
    capture = tmp_path / "c.csv"
    capture.write_bytes(b"1,A,2026-05-17T09:15:02Z\nbroken\n")
    exe = [sys.executable, "-m", "gateway.cli", "parse", "--format", "csv", str(capture)]
    proc = subprocess.run(exe, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["chip"] == "A"
    assert proc.stderr.decode().splitlines() == [
        "2: chip: missing at byte 6 (want bib,chip,timestamp[,antenna[,rssi]])"
    ]
    missing = subprocess.run([*exe[:-1], str(tmp_path / "nope")], capture_output=True, timeout=30, check=False)
    assert missing.returncode == 2 and b"Traceback" not in missing.stderr
    assert len(missing.stderr.decode().splitlines()) == 1


def test_mylaps_rejections_are_numbered_by_record() -> None:
    data = (
        b"Finish@Pong@$\r\n"
        b"Finish@Passing@t=13:11:30.904|c=0000041|d=260517|b=41@t=13:12:21.830|c=0000039|d=260517|b=39@7@$\r\n"
        b"Finish@Passing@t=25:00:00.000|c=X1@8@$\r\n"
    )
    code, reads, errors = _run(["--format", "mylaps", "--tz", "Europe/Berlin"], data)
    assert code == 1
    assert [(r["chip"], r["bib"], r["seq"], r["reader"]) for r in reads] == [
        ("0000041", "41", None, "Finish"),
        ("0000039", "39", None, "Finish"),
    ]
    assert errors == ["3: t '25:00:00.000' at byte 17: hour must be in 0..23"]


def test_a_record_capture_is_parsed_as_the_bytes_the_reader_sent(tmp_path: Path) -> None:
    import io
    from datetime import UTC, datetime

    from gateway.capture import CaptureWriter

    text = io.StringIO()
    writer = CaptureWriter(text, format="ultra", source="test")
    at = datetime(2026, 5, 17, 9, 0, tzinfo=UTC)
    writer.write(b"Connected,0\nV=25.0000\n", at)  # two capture lines
    writer.write(b"0,058003,1463476502,482,1,-63,0,2,1,0,0,29\n0,05800", at)  # a read, then half a line...
    writer.write(b"4,1463476503,0,1,-60,0,2,1,0,0,30\n0,bad,x\n", at)  # ...completed in the next entry
    capture = tmp_path / "ultra.cap"
    capture.write_text(text.getvalue() + "2026-05-17T09:00:00.000Z no tab here\n")
    code, reads, errors = _run(["--format", "ultra", str(capture)])
    assert code == 1
    assert [(r["chip"], r["seq"], r["timestamp"]) for r in reads] == [
        ("058003", 29, "2026-05-17T09:15:02.482Z"),
        ("058004", 30, "2026-05-17T09:15:03.000Z"),
    ]
    lines = text.getvalue().splitlines()
    bad_line = next(i for i, line in enumerate(lines, start=1) if "0,bad,x" in line)
    assert errors == [
        f"{bad_line}: chip read ends at byte 7 after 3 fields, want 9 to 12",
        f"{len(lines) + 1}: damaged capture line: no tab between arrival time and data",
    ]


def test_line_numbers_survive_any_chunking_of_cr_lf() -> None:
    from gateway.formats.cli import LineIndex

    data = b"a\r\nb\rc\n\r\nd\re"
    whole, bytewise = LineIndex(), LineIndex()
    whole.feed(data)
    for i in range(len(data)):
        bytewise.feed(data[i : i + 1])
    for offset, line in [(0, 1), (3, 2), (5, 3), (9, 5), (11, 6)]:
        assert whole.line_of(offset) == bytewise.line_of(offset) == line, offset


def test_formats_and_parse_do_not_import_the_network_or_database_stack() -> None:
    code = (
        "import sys, gateway.formats.cli\n"
        "from gateway import formats\n"
        "[formats.get(n) for n in formats.names()]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'aiosqlite', 'serial')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=True)
    assert proc.stdout.strip() == b"[]"
