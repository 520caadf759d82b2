"""`parse` of a `record` capture completes times without a date (no GPS) with the day each line ARRIVED,
not with the day the capture is parsed: a capture from last Sunday parsed today keeps Sunday's date."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from gateway import formats
from gateway.capture import CaptureWriter
from gateway.cli import cli
from gateway.formats.base import ParseContext
from gateway.formats.cli import run_parse

BERLIN = ZoneInfo("Europe/Berlin")
RECORDED = datetime(2026, 5, 17, 9, 15, 2, 400_000, tzinfo=UTC)  # 11:15 in Berlin
# RACE RESULT without a GPS fix: date 0000-00-00, the decoder's local time of day
NO_GPS = b"#P;18;1235;0000-00-00;11:15:02.123;0;3;1F;;0;;;;;;;;D-5012;1;1;5012\r\n"
# and one recorded just after midnight, of a passing just before it
MIDNIGHT = b"#P;19;1236;0000-00-00;23:59:58.500;0;3;1F;;0;;;;;;;;D-5012;1;1;5012\r\n"


def _capture(path: Path) -> None:
    with path.open("w", encoding="ascii") as f:
        out = CaptureWriter(f, format="raceresult", source="tcp://10.0.0.5:3601")
        out.write(NO_GPS, RECORDED)
        out.write(MIDNIGHT, datetime(2026, 5, 17, 22, 0, 1, tzinfo=UTC))  # 00:00:01 on the 18th in Berlin


def test_run_parse_uses_each_entrys_arrival_as_now(tmp_path: Path) -> None:
    cap = tmp_path / "race.cap"
    _capture(cap)
    out, err = io.StringIO(), io.StringIO()
    frozen = ParseContext(tz=BERLIN, now=RECORDED + timedelta(days=1))  # the clock says: a day later
    with cap.open("rb") as stream:
        assert run_parse(formats.get("raceresult"), frozen, stream, out, err) == 0, err.getvalue()
    stamps = [json.loads(line)["timestamp"] for line in out.getvalue().splitlines()]
    assert stamps == ["2026-05-17T09:15:02.123Z", "2026-05-17T21:59:58.500Z"]


def test_parse_command_gives_the_captures_date_not_todays(tmp_path: Path) -> None:
    cap = tmp_path / "race.cap"
    _capture(cap)
    result = CliRunner().invoke(cli, ["parse", "--format", "raceresult", "--tz", "Europe/Berlin", str(cap)])
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["timestamp"] for x in result.stdout.splitlines()] == [
        "2026-05-17T09:15:02.123Z",
        "2026-05-17T21:59:58.500Z",
    ]
    # an explicit --date still wins
    result = CliRunner().invoke(
        cli, ["parse", "--format", "raceresult", "--tz", "Europe/Berlin", "--date", "2026-06-01", str(cap)]
    )
    assert json.loads(result.stdout.splitlines()[0])["timestamp"] == "2026-06-01T09:15:02.123Z"
