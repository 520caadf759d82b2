"""Fuzzing every parser and the config loader: whatever comes in, only the project's own typed errors, each
with a one-line message, ever come out (and parsers, by contract, never raise at all)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import config as config_mod
from gateway import formats
from gateway.errors import GatewayError
from gateway.formats.base import MAX_RECORD, ParseContext, Record, Rejected, Skipped, parse_record
from gateway.model import Read

pytestmark = pytest.mark.chaos

FORMATS = formats.names()
CTX = ParseContext(
    tz=ZoneInfo("Europe/Madrid"), reader="fuzz", now=datetime(2026, 11, 22, 10, tzinfo=UTC), date=date(2026, 11, 22)
)
EXAMPLE = (Path(__file__).resolve().parents[2] / "config" / "gateway.example.toml").read_text()
# derandomize: CI sees the same examples every run (a finding is reproducible, never a flake); run with
# HYPOTHESIS_SEED or a larger max_examples locally to search further.
FUZZ = settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and "\r" not in text


def _line_noise() -> st.SearchStrategy[bytes]:
    # Mostly line-shaped input with separators and digits, sometimes anything at all.
    alphabet = st.sampled_from(list(b"0123456789;,:.-+#@$TZ\t \r\nABCDEFabcdef\x00\xff\x80"))
    shaped = st.lists(alphabet, max_size=200).map(bytes)
    return st.one_of(shaped, st.binary(max_size=300))


def _sample_lines(name: str) -> list[bytes]:
    """Real lines of the format (from its own formatter), for mutation."""
    fmt = formats.get(name)
    out = []
    for i, chip in enumerate(("SIM0001", "058000000012", "ABC1234")):
        read = Read(
            chip=chip,
            bib=str(i + 1),
            timestamp=datetime(2026, 11, 22, 9, 30, 1, 250000, tzinfo=UTC),
            antenna=1,
            rssi=60.0,
            reader="box1",
            seq=i + 1,
        )
        try:
            out.append(fmt.format(read, CTX))
        except (ValueError, GatewayError):
            continue  # a chip this protocol cannot carry
    return out


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    lines = _sample_lines(name)
    if not lines:
        return draw(_line_noise())
    data = bytearray(draw(st.sampled_from(lines)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 5))]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 10))]
    return bytes(data)


def _check_result(result: object) -> None:
    assert isinstance(result, Read | Rejected | Skipped), result
    if isinstance(result, Rejected):
        assert one_line(result.reason), result
    if isinstance(result, Read):
        assert result.timestamp.tzinfo is not None and result.timestamp.microsecond % 1000 == 0


@pytest.mark.parametrize("name", FORMATS)
@FUZZ
@given(data=st.data())
def test_parse_never_raises(name: str, data: st.DataObject) -> None:
    record = data.draw(st.one_of(_line_noise(), mutated(name)))
    fmt = formats.get(name)
    _check_result(fmt.parse(record.rstrip(b"\r\n"), CTX))


@pytest.mark.parametrize("name", FORMATS)
@FUZZ
@given(chunks=st.lists(st.one_of(_line_noise(), st.binary(min_size=MAX_RECORD, max_size=MAX_RECORD + 50)), max_size=5))
def test_framer_and_conversation_survive_any_stream(name: str, chunks: list[bytes]) -> None:
    """Bytes as a link delivers them: framed, then interpreted by the gateway side of the conversation."""
    fmt = formats.get(name)
    framer = fmt.framer()
    conv = fmt.conversation(CTX)
    fed = 0
    for chunk in chunks:
        for record in framer.feed(chunk):
            assert isinstance(record, Record) and 0 <= record.offset <= fed + len(chunk)
            assert len(record.data) <= MAX_RECORD
            results, reply = conv.on_record(record)
            assert isinstance(reply, bytes)
            for result in results:
                _check_result(result)
                if isinstance(result, Read):
                    assert isinstance(conv.ack(result), bytes)
        fed += len(chunk)
    for record in framer.flush():
        _check_result(parse_record(fmt, record, CTX))


# -- the config loader ------------------------------------------------------------------------------------
KNOWN: dict[str, list[str]] = {
    "cloud": ["base_url", "api_key", "api_key_header", "batch_size", "linger_s", "connect_timeout_s",
              "read_timeout_s", "backoff_cap_s"],
    "device": ["deviceid", "serial_number", "model", "alias", "firmware"],
    "session": ["token_session", "alias", "timezone", "latitude", "longitude", "follow_active_session"],
    "reader": ["name", "url", "format", "tz", "dedup_window_s", "dedup_mode", "finished_window_s", "chip_map",
               "chip_last_n", "ipico_seen"],
    "outbox": ["path"],
    "status": ["listen", "token"],
    "log": ["level"],
}  # fmt: skip


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string (\uXXXX escapes included)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return toml_str(str(v))


scalars = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.sampled_from(["", "UTC", "Europe/Madrid", "../../etc/passwd", "/etc/localtime",
                                           "tcp-listen://0.0.0.0:3097", "serial:///dev/ttyUSB0", "csv", "mylaps",
                                           "http://x", "https://api.runonrufus.com/v0", "ror-0123456789abcdef0123",
                                           "A" * 64, "first", "strongest", "debug", "127.0.0.1:0", "chips.csv"]),
)  # fmt: skip
values = st.one_of(scalars, st.lists(scalars, max_size=3))


@st.composite
def toml_docs(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for section in draw(st.lists(st.sampled_from([*KNOWN, "extra"]), max_size=6)):
        header = f"[[{section}]]" if section == "reader" else f"[{section}]"
        lines.append(draw(st.sampled_from([header, header, f"{section} = 3"])))
        keys = [*KNOWN.get(section, []), "bogus"]
        for _ in range(draw(st.integers(0, 6))):
            key = draw(st.one_of(st.sampled_from(keys), st.text(min_size=1, max_size=12)))
            lines.append(f"{toml_str(key)} = {toml_value(draw(values))}")
    return "\n".join(lines) + "\n"


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    lines = EXAMPLE.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "garble", "value"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "garble":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))] + draw(st.text(max_size=10))
        elif "=" in lines[i] and not lines[i].lstrip().startswith("#"):
            lines[i] = lines[i].split("=", 1)[0] + "= " + toml_value(draw(values))
        if not lines:
            break
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=st.one_of(toml_docs(), mutated_example(), st.text(max_size=200)))
def test_config_loader_raises_only_one_line_config_errors(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        env = {"RUFUS_API_KEY": "ror-0123456789abcdef0123"} if len(text) % 2 else {}
        cwd = os.getcwd()
        try:
            config_mod.load(path, environ=env)
        except config_mod.ConfigError as exc:
            assert one_line(str(exc)), repr(str(exc))
            assert "ror-0123456789abcdef0123" not in str(exc), "a config error echoed the API key"
        finally:
            assert os.getcwd() == cwd


def test_config_error_for_a_key_with_a_newline_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[cloud]\n"batch\\nsize" = 1\n')
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.load(path, environ={})
    assert one_line(str(caught.value)), repr(str(caught.value))


# -- the chip map ---------------------------------------------------------------------------------------------
def _chip_map_lines() -> st.SearchStrategy[str]:
    cell = st.one_of(
        st.sampled_from(["chip", "bib", "E2000017", "0000123", "  42 ", '"7"', '"a,b"', '"unterminated', "#x", ""]),
        st.text(max_size=12),
    )
    line = st.lists(cell, max_size=4).map(",".join)
    return st.lists(line, max_size=8).map(lambda ls: "\n".join(ls))


@FUZZ
@given(
    content=st.one_of(_chip_map_lines().map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=200)),
    bom=st.booleans(),
    last_n=st.one_of(st.none(), st.integers(-2, 30)),
)
def test_chip_map_loader_raises_only_one_line_config_errors(content: bytes, bom: bool, last_n: int | None) -> None:
    from gateway.chipmap import ChipMap

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chips.csv"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + content)
        try:
            chips = ChipMap.load(path, last_n=last_n)
        except config_mod.ConfigError as exc:
            assert one_line(str(exc)), repr(str(exc))
            return
        for chip in ("E2000017", "", "0", "x" * 40):
            assert chips.lookup(chip) is None or isinstance(chips.lookup(chip), str)


def test_chip_map_with_a_huge_field_is_a_config_error(tmp_path: Path) -> None:
    """A damaged file (a binary blob with no newline) must be a ConfigError, not the csv module's own error."""
    from gateway.chipmap import ChipMap

    path = tmp_path / "chips.csv"
    path.write_text("chip,bib\n" + "E" * 200_000 + ",17\n")
    with pytest.raises(config_mod.ConfigError) as caught:
        ChipMap.load(path)
    assert one_line(str(caught.value)) and f"{path}:2: " in str(caught.value), str(caught.value)


# -- the cloud's answers ----------------------------------------------------------------------------------------
KEY = "ror-" + "f00d" * 5
_CLOUD_KEYS = ["body", "result", "description", "token_session", "deviceid", "inserted_count", "duplicate_count",
               "pagination", "has_more", "num_passing", "timestamp", "bib", "chip", "active", "first", "last",
               "passings", "sessions", "alias", "model", "serial_number", "latitude", "longitude", "duration",
               "creation_date"]  # fmt: skip
_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20),
    st.sampled_from(["2026-11-22T10:00:00.000Z", "2026-13-40T99:99:99Z", "", "true", "Session not found or closed",
                     "line one\nline two", KEY]),
)  # fmt: skip
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(_CLOUD_KEYS), st.text(max_size=6)),
                                                     inner, max_size=6)),
    max_leaves=20,
)  # fmt: skip


def _body() -> st.SearchStrategy[bytes]:
    def dump(value: Any) -> bytes:
        return json.dumps(value).encode()

    return st.one_of(_json.map(dump), _json.map(lambda v: dump({"body": v})), st.binary(max_size=60))


class _FakeResponse:
    def __init__(self, status: int, raw: bytes, headers: dict[str, str]) -> None:
        self.status, self._raw, self.headers = status, raw, headers

    async def read(self) -> bytes:
        return self._raw

    async def __aenter__(self) -> _FakeResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _FakeHttp:
    """Stands in for aiohttp's session: every request gets the drawn answer; after a few, an empty page (a
    server that always says "more" is not what is fuzzed here)."""

    closed = False

    def __init__(self, status: int, raw: bytes, headers: dict[str, str]) -> None:
        self.answer = (status, raw, headers)
        self.calls = 0

    def request(self, *_args: Any, **_kw: Any) -> _FakeResponse:
        self.calls += 1
        if self.calls > 3:
            return _FakeResponse(200, b'{"result": []}', {})
        return _FakeResponse(*self.answer)

    async def close(self) -> None:
        return None


@FUZZ
@given(
    status=st.one_of(st.sampled_from([200, 201, 204, 302, 400, 401, 403, 404, 409, 413, 429, 500, 503]),
                     st.integers(100, 599)),
    raw=_body(),
    retry_after=st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["1", "-5", "1e400", "nan",
                                                                           "Wed, 21 Oct 2015 07:28:00 GMT"])),
    op=st.sampled_from(["bind", "unbind", "devices", "device", "create", "close", "sessions", "active", "session",
                        "insert", "passings", "device_passings", "max"]),
)  # fmt: skip
def test_cloud_answers_raise_only_one_line_cloud_errors(
    status: int, raw: bytes, retry_after: str | None, op: str
) -> None:
    import asyncio

    from gateway.cloud.client import RufusClient
    from gateway.cloud.models import DeviceBind, SessionCreate
    from gateway.errors import CloudError
    from gateway.model import Passing

    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    passing = Passing(num_passing=1, bib="7", chip="E2000017",
                      timestamp=datetime(2026, 11, 22, 10, tzinfo=UTC))  # fmt: skip
    calls = {
        "bind": lambda c: c.bind_device(DeviceBind(model="One4All", serial_number="S1")),
        "unbind": lambda c: c.unbind_device("D1"),
        "devices": lambda c: c.list_devices(),
        "device": lambda c: c.device_info("D1"),
        "create": lambda c: c.create_session(SessionCreate(deviceid="D1")),
        "close": lambda c: c.close_session("T" * 64),
        "sessions": lambda c: c.device_sessions("D1"),
        "active": lambda c: c.active_session("D1"),
        "session": lambda c: c.session_info("T" * 64),
        "insert": lambda c: c.insert_passings("T" * 64, [passing]),
        "passings": lambda c: c.session_passings("T" * 64, first=1, last=9),
        "device_passings": lambda c: c.device_passings("D1"),
        "max": lambda c: c.max_num_passing("T" * 64),
    }

    async def one() -> None:
        client = RufusClient("https://cloud.invalid/v0", KEY)
        client._session = _FakeHttp(status, raw, headers)  # type: ignore[assignment]
        try:
            await calls[op](client)
        except CloudError as exc:
            assert one_line(str(exc)), repr(str(exc))
            assert KEY not in str(exc), "a cloud error echoed the API key"
            if exc.description is not None:
                assert KEY not in exc.description
        finally:
            await client.close()

    asyncio.run(one())


@FUZZ
@given(
    when=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999000)),
    offset_min=st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    zone=st.sampled_from(["Z", "offset", "local"]),
)
def test_csv_timestamps_at_the_ends_of_the_calendar(when: datetime, offset_min: int, zone: str) -> None:
    """A date that exists but leaves datetime's range once in UTC (9999-12-31T23:00-05:00) is a rejection,
    not an OverflowError; and whatever is taken is stored in a form the gateway reads back (year 1 too)."""
    from gateway.model import format_ts, parse_ts

    sign, off = ("-" if offset_min < 0 else "+"), abs(offset_min)
    suffix = {"Z": "Z", "offset": f"{sign}{off // 60:02d}:{off % 60:02d}", "local": ""}[zone]
    stamp = f"{when.year:04d}-{when:%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}{suffix}"
    result = formats.get("csv").parse(f"1,CHIP,{stamp}".encode(), CTX)
    _check_result(result)
    if isinstance(result, Read):
        stored = format_ts(result.timestamp)
        assert parse_ts(stored) == result.timestamp == datetime.fromisoformat(stored), stored


# -- the capture file: `record` writes it; `replay`, `parse` and file:// read it with read_capture ------------
CAPTURE_AT = datetime(2026, 11, 22, 9, 0, 1, 250000, tzinfo=UTC)


def _capture_files() -> st.SearchStrategy[bytes]:
    """A header (right, wrong, cut, absent) and lines shaped like entries: a stamp that is right, nearly right or
    anything; a tab or not; the data escaped, half-escaped or raw; LF, CRLF or nothing at the end."""
    from gateway.capture import MAGIC, escape

    magic = MAGIC.encode()
    header = st.sampled_from([
        magic + b" format=csv from=tcp://10.0.0.5:3601 started=2026-11-22T09:00:00.000Z\n", magic + b"\n", magic,
        magic + b" =x y= a=b=c\xff\n", b"\xef\xbb\xbf" + magic + b"\n", magic[:-3] + b"\n", b"", b"#\n",
    ])  # fmt: skip
    stamp = st.one_of(
        st.sampled_from(["2026-11-22T09:00:01.250Z", "2026-13-01T00:00:00.000Z", "0000-01-01T00:00:00.000Z",
                         "2026-02-30T09:00:01.250Z", "9999-12-31T23:59:59.999Z", "2026-11-22T09:00:01Z",
                         "2026-11-22T09:00:01.250+01:00", ""]),
        st.text(max_size=24),
    ).map(lambda t: t.encode("utf-8", "surrogatepass"))  # fmt: skip
    data = st.one_of(
        st.binary(max_size=40).map(lambda b: escape(b).encode()),
        st.sampled_from([b"\\x", b"\\xZZ", b"\\", b"\\q", b"\\x0", b"\\\\\\"]),
        st.binary(max_size=40),
    )
    entry = st.tuples(stamp, st.sampled_from([b"\t", b"", b" ", b"\t\t"]), data,
                      st.sampled_from([b"\n", b"\r\n", b""])).map(b"".join)  # fmt: skip
    line = st.one_of(entry, st.sampled_from([b"\n", b"# a comment\n", b"\x00\xff\n", b"\r\n"]))
    return st.tuples(header, st.lists(line, max_size=8).map(b"".join)).map(b"".join)


@st.composite
def _damaged_capture(draw: st.DrawFn) -> bytes:
    """A capture exactly as `record` writes it, then a few bytes flipped, inserted, deleted or repeated."""
    import io

    from gateway.capture import CaptureWriter

    out = io.StringIO()
    writer = CaptureWriter(out, format="csv", started="2026-11-22T09:00:00.000Z")
    for chunk in draw(st.lists(st.binary(max_size=40), min_size=1, max_size=4)):
        writer.write(chunk, CAPTURE_AT)
    data = bytearray(out.getvalue().encode("ascii"))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 5))]
        else:
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 10))]
        if not data:
            break
    return bytes(data)


@FUZZ
@given(content=st.one_of(_capture_files(), _damaged_capture(), st.binary(max_size=300)))
def test_capture_reader_raises_only_one_line_reader_errors(content: bytes) -> None:
    """Whatever bytes a capture file holds, reading it (header and every entry) yields well-formed entries or
    raises ReaderError, one line naming the file (and the line, for an entry); nothing else escapes."""
    from gateway.capture import read_capture
    from gateway.errors import ReaderError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "race.capture"
        path.write_bytes(content)
        try:
            header, entries = read_capture(path)
            got = list(entries)
        except ReaderError as exc:
            assert one_line(str(exc)), repr(str(exc))
            assert str(exc).startswith(f"{path}:"), str(exc)
            return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in header.fields.items())
    for entry in got:
        assert entry.arrival.tzinfo is not None and entry.arrival.microsecond % 1000 == 0
        assert isinstance(entry.data, bytes)


@FUZZ
@given(chunks=st.lists(st.binary(max_size=80), max_size=6))
def test_capture_reader_gives_back_what_record_wrote(chunks: list[bytes]) -> None:
    """The other half of the contract: a capture as `record` writes it is read back byte for byte."""
    import io

    from gateway.capture import CaptureWriter, read_capture

    out = io.StringIO()
    writer = CaptureWriter(out, format="mylaps", **{"from": "tcp://10.0.0.5:3097"})
    for chunk in chunks:
        writer.write(chunk, CAPTURE_AT)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "race.capture"
        path.write_text(out.getvalue(), encoding="ascii")
        header, entries = read_capture(path)
        got = list(entries)
    assert header.fields == {"format": "mylaps", "from": "tcp://10.0.0.5:3097"}
    assert b"".join(e.data for e in got) == b"".join(chunks) and len(got) == writer.entries
    assert all(e.arrival == CAPTURE_AT for e in got)
