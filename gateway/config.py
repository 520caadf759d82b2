"""TOML file + environment -> frozen, validated settings.

Every error is one line naming the file, the line and the key (`gateway.toml:12: [cloud] batch_size: ...`),
raised as ConfigError; the daemon turns it into exit code 78 (EX_CONFIG) so systemd does not crash-loop
on a typo. The API key is never echoed back, even when it is the bad value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import ConfigError

EX_CONFIG = 78
DEFAULT_BASE_URL = "https://api.runonrufus.com/v0"
# Sent as `type` with every bind: one vendor page version requires it, the other accepts it.
DEFAULT_DEVICE_TYPE = "One4All"
_HEX64 = re.compile(r"^[0-9A-F]{64}$")
_KEY_RE = re.compile(r"^ror-[0-9a-f]{20}$")
SECRET_KEYS = {("cloud", "api_key"), ("status", "token")}


@dataclass(frozen=True)
class CloudSettings:
    base_url: str = DEFAULT_BASE_URL
    api_key: str = field(default="", repr=False)
    api_key_header: str = "api_key"
    batch_size: int = 500
    linger_s: float = 0.1
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    backoff_cap_s: float = 60.0


@dataclass(frozen=True)
class DeviceSettings:
    deviceid: str | None = None
    serial_number: str | None = None
    model: str | None = None
    alias: str | None = None
    firmware: str | None = None
    type: str = DEFAULT_DEVICE_TYPE


@dataclass(frozen=True)
class SessionSettings:
    token_session: str | None = None
    alias: str | None = None
    timezone: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    follow_active_session: bool = False


# The choices of two [reader] keys, here once: the loader checks them, and so does pipeline.ReaderRules for
# rules built in code (tests, the demo).
DEDUP_MODES = ("first", "strongest")
IPICO_SEEN = ("both", "first", "last")


def choices_text(choices: tuple[str, ...]) -> str:
    """'first or strongest', 'both, first or last'."""
    return ", ".join(choices[:-1]) + " or " + choices[-1]


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda v: None if v in choices else f"must be {choices_text(choices)}"


@dataclass(frozen=True)
class ReaderSettings:
    name: str
    url: str
    format: str = "csv"
    tz: str = "UTC"
    dedup_window_s: float = 3.0
    dedup_mode: str = "first"
    finished_window_s: float | None = None
    chip_map: str | None = None
    chip_last_n: int | None = None
    silence_s: float | None = None  # None: the protocol's own silence timeout (csv and ipico have none)
    set_time: bool = False  # send the gateway's clock to the reader on connect (RaceResult, Ultra)
    ipico_seen: str = "both"  # an IPICO in first/last-seen mode: which of the two reads make passings


@dataclass(frozen=True)
class OutboxSettings:
    path: str = "rufus-gateway.db"
    min_free_mb: float = 200.0  # below this much free space on the database's filesystem, every surface warns


@dataclass(frozen=True)
class ClockSettings:
    hold_uploads_until_synced: bool = False
    max_skew_s: float = 2.0  # reader clock vs the gateway's, beyond which a reader is warned about


@dataclass(frozen=True)
class StatusSettings:
    listen: str | None = "127.0.0.1:8088"
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    cloud: CloudSettings = CloudSettings()
    device: DeviceSettings = DeviceSettings()
    session: SessionSettings = SessionSettings()
    readers: tuple[ReaderSettings, ...] = ()
    outbox: OutboxSettings = OutboxSettings()
    status: StatusSettings = StatusSettings()
    clock: ClockSettings = ClockSettings()
    log_level: str = "info"
    source: str = "<defaults>"
    outbox_where: str = ""  # `file:line` of [outbox] path, for a message about the directory found later

    @property
    def control_socket(self) -> str:
        """The daemon's local control endpoint (a unix socket beside the database: local by construction)."""
        return str(Path(self.outbox.path).with_suffix(".ctl"))


T = TypeVar("T")


UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, one of them the terminating NUL


class _Loader:
    def __init__(self, data: Mapping[str, Any], path: str, text: str) -> None:
        self.data = data
        self.path = path
        self.lines = text.splitlines()

    def where(self, table: str, key: str | None = None, index: int | None = None) -> str:
        """`file:line` of `key` inside `[table]` (or the index-th `[[table]]`), best effort."""
        current: str | None = None
        seen = -1
        for no, line in enumerate(self.lines, 1):
            s = line.strip()
            m = re.match(r"^\[\[\s*([\w.-]+)\s*\]\]", s) or re.match(r"^\[\s*([\w.-]+)\s*\]", s)
            if m:
                current = m.group(1)
                if current == table:
                    seen += 1
                    if key is None and (index is None or index == seen):
                        return f"{self.path}:{no}"
                continue
            if key is not None and current == table and (index is None or index == seen):
                if re.match(rf"^{re.escape(key)}\s*=", s) or re.match(rf'^"{re.escape(key)}"\s*=', s):
                    return f"{self.path}:{no}"
        return self.path

    def fail(self, table: str, key: str, problem: str, index: int | None = None) -> ConfigError:
        label = f"[[{table}]] #{index + 1}" if index is not None else f"[{table}]"
        shown = _show(key)
        return ConfigError(f"{self.where(table, key, index)}: {label} {shown}: {problem}", key=f"{table}.{shown}")

    def table(self, name: str, allowed: set[str]) -> Mapping[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.where(name)}: [{name}] must be a table", key=name)
        self.unknown(name, value, allowed)
        return value

    def unknown(self, name: str, value: Mapping[str, Any], allowed: set[str], index: int | None = None) -> None:
        for key in value:
            if key not in allowed:
                raise self.fail(name, key, f"unknown key (known: {', '.join(sorted(allowed))})", index)

    def get(
        self,
        tbl: Mapping[str, Any],
        table: str,
        key: str,
        kind: Callable[[Any], T],
        default: T,
        index: int | None = None,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        if key not in tbl:
            return default
        raw = tbl[key]
        secret = (table, key) in SECRET_KEYS
        try:
            value = kind(raw)
        except (TypeError, ValueError) as exc:
            shown = "(hidden)" if secret else repr(raw)
            raise self.fail(table, key, f"{exc}, got {shown}", index) from None
        if check is not None and (problem := check(value)):
            raise self.fail(table, key, problem, index)
        return value


def _show(name: str) -> str:
    """A key as written, or quoted when it holds characters that would break a one-line message."""
    return name if name.isprintable() else repr(name)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("must be a string")
    return v


def _opt_str(v: Any) -> str | None:
    return _str(v) or None


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("must be true or false")
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("must be an integer")
    return v


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError("must be a number")
    return float(v)


def _opt_float(v: Any) -> float | None:
    return _float(v)


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}, got {v}"


def _format_name(v: str) -> str | None:
    from gateway import formats  # the registry only: parsers themselves load when a reader starts

    known = formats.names()
    return None if v in known else f"unknown format {v!r} (known: {', '.join(known)})"


def _silence(v: float) -> str | None:
    if v == 0 or 1 <= v <= 3600:
        return None
    return f"must be 0 (the protocol's own) or between 1 and 3600 seconds, got {v:g}"


def _nonempty(v: str) -> str | None:
    return None if v else "must not be empty"


def _hex64(v: str | None) -> str | None:
    return None if v is None or _HEX64.match(v) else "must be 64 uppercase hex characters"


def _zone(v: str) -> str | None:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown IANA time zone {v!r} (e.g. Europe/Paris, UTC)"
    return None


def _http_url(v: str) -> str | None:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"must be an http(s) URL, got {v!r}"
    return None


def _reader_url(v: str) -> str | None:
    # The very parse open_link uses, so `run --check` refuses exactly what `run` would.
    from gateway.links import BadLinkURL, parse_url

    try:
        parse_url(v)
    except BadLinkURL as exc:
        return f"{exc.url!r}: {exc.problem}"
    return None


def _listen(v: str | None) -> str | None:
    if v is None:
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit():
        return f"must be HOST:PORT (e.g. 127.0.0.1:8088), got {v!r}"
    if not 0 <= int(port) <= 65535:
        return f"port must be between 0 and 65535, got {int(port)}"
    return None


def check_for_run(settings: Settings) -> None:
    """What the daemon needs beyond a valid file, checked by `run` and `run --check` alike (ConfigError if not):
    a reader, a control socket path a unix socket can have, and (for a database not there yet) an outbox directory
    that exists or can be created, and is writable. Not part of `load`: the
    crew commands read the same file without readers, or on a machine where the database lives elsewhere."""
    if not settings.readers:
        raise ConfigError(
            f"{settings.source}: [[reader]]: none configured, the gateway would read nothing "
            '(e.g. [[reader]] url = "tcp-listen://0.0.0.0:3097")',
            key="reader",
        )
    db = Path(settings.outbox.path)
    ld = settings.outbox_where or settings.source
    ctl = os.fsencode(settings.control_socket)
    if len(ctl) > UNIX_PATH_MAX:
        raise ConfigError(
            f"{ld}: [outbox] path: the control socket beside it ({settings.control_socket}) would be {len(ctl)} "
            f"bytes, over the {UNIX_PATH_MAX} a unix socket path may have: choose a shorter outbox path",
            key="outbox.path",
        )
    if db.exists():
        return  # an existing database's own troubles (read-only, corrupt) are the database layer's to name
    target = db.parent
    while not target.exists() and target != target.parent:
        target = target.parent  # `run` creates the missing directories: what matters is the first that exists
    if not target.is_dir():
        problem = f"{db.parent}: {target} is not a directory"
    elif not os.access(target, os.W_OK | os.X_OK):
        missing = "" if target == db.parent else f" (does not exist, and cannot be created in {target})"
        problem = f"{db.parent}: directory not writable{missing}"
    else:
        return
    raise ConfigError(f"{ld}: [outbox] path: {problem}", key="outbox.path")


def _check_chip_map(ld: _Loader, reader: ReaderSettings, index: int | None) -> None:
    """Read the chip map now, so that a missing file or a bad row fails `run --check` (and a SIGHUP reload)
    with the config's file:line and key, rather than the daemon at start with only the CSV's name."""
    from gateway.chipmap import ChipMap  # pure CSV parsing: no database, no network

    assert reader.chip_map is not None
    try:
        ChipMap.load(reader.chip_map, last_n=reader.chip_last_n)
    except ConfigError as exc:
        raise ld.fail("reader", "chip_map", str(exc), index) from None


def load(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate a config file (None: embedded defaults). `RUFUS_API_KEY` overrides the key."""
    env = os.environ if environ is None else environ
    if path is None:
        data: dict[str, Any] = {}
        text = ""
        shown = "<defaults>"
    else:
        shown = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{shown}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{shown}: cannot read config file: {exc.__class__.__name__}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
            where = f"{shown}:{m.group(1)}" if m else shown
            reason = re.sub(r"\s*\(at line.*\)", "", str(exc))
            raise ConfigError(f"{where}: TOML syntax error: {reason}") from None
    ld = _Loader(data, shown, text)
    allowed_top = {"cloud", "device", "session", "reader", "outbox", "status", "clock", "log"}
    for key in data:
        if key not in allowed_top:
            known = ", ".join(sorted(allowed_top))
            raise ConfigError(f"{ld.where(key)}: unknown table [{_show(key)}] (known: {known})")

    c = ld.table("cloud", {f.name for f in CloudSettings.__dataclass_fields__.values()})
    d = CloudSettings()
    api_key = ld.get(c, "cloud", "api_key", _str, d.api_key)
    if env.get("RUFUS_API_KEY"):
        api_key = env["RUFUS_API_KEY"]
    if api_key and not _KEY_RE.match(api_key):
        # Shape only: the value itself is never printed.
        where = "RUFUS_API_KEY" if env.get("RUFUS_API_KEY") else ld.where("cloud", "api_key")
        raise ConfigError(f"{where}: [cloud] api_key: must look like ror- + 20 hex characters", key="cloud.api_key")
    cloud = CloudSettings(
        base_url=ld.get(c, "cloud", "base_url", _str, d.base_url, check=_http_url).rstrip("/"),
        api_key=api_key,
        api_key_header=ld.get(
            c,
            "cloud",
            "api_key_header",
            _str,
            d.api_key_header,
            check=lambda v: None if v in ("api_key", "x-api-key") else "must be api_key or x-api-key",
        ),
        batch_size=ld.get(c, "cloud", "batch_size", _int, d.batch_size, check=_range(1, 5000)),
        linger_s=ld.get(c, "cloud", "linger_s", _float, d.linger_s, check=_range(0, 10)),
        connect_timeout_s=ld.get(c, "cloud", "connect_timeout_s", _float, d.connect_timeout_s, check=_range(0.1, 300)),
        read_timeout_s=ld.get(c, "cloud", "read_timeout_s", _float, d.read_timeout_s, check=_range(0.1, 600)),
        backoff_cap_s=ld.get(c, "cloud", "backoff_cap_s", _float, d.backoff_cap_s, check=_range(0.1, 3600)),
    )

    t = ld.table("device", set(DeviceSettings.__dataclass_fields__))
    device = DeviceSettings(
        deviceid=ld.get(t, "device", "deviceid", _opt_str, None, check=_hex64),
        serial_number=ld.get(t, "device", "serial_number", _opt_str, None),
        model=ld.get(t, "device", "model", _opt_str, None),
        alias=ld.get(t, "device", "alias", _opt_str, None),
        firmware=ld.get(t, "device", "firmware", _opt_str, None),
        # empty means the default: a bind always carries a type
        type=ld.get(t, "device", "type", _opt_str, None) or DEFAULT_DEVICE_TYPE,
    )

    s = ld.table("session", set(SessionSettings.__dataclass_fields__))
    session = SessionSettings(
        token_session=ld.get(s, "session", "token_session", _opt_str, None, check=_hex64),
        alias=ld.get(s, "session", "alias", _opt_str, None),
        timezone=ld.get(s, "session", "timezone", _opt_str, None),
        latitude=ld.get(s, "session", "latitude", _opt_float, None, check=lambda v: _range(-90, 90)(v)),
        longitude=ld.get(s, "session", "longitude", _opt_float, None, check=lambda v: _range(-180, 180)(v)),
        follow_active_session=ld.get(s, "session", "follow_active_session", _bool, False),
    )

    readers_raw = data.get("reader", [])
    is_array = isinstance(readers_raw, list)  # [[reader]] tables are numbered in messages, a lone [reader] is not
    if isinstance(readers_raw, dict):
        readers_raw = [readers_raw]
    if not isinstance(readers_raw, list):
        raise ConfigError(f"{ld.where('reader')}: [reader] must be a table or [[reader]] tables", key="reader")
    readers: list[ReaderSettings] = []
    allowed_reader = set(ReaderSettings.__dataclass_fields__)
    for i, r in enumerate(readers_raw):
        idx = i if is_array else None
        if not isinstance(r, dict):
            raise ConfigError(f"{ld.where('reader')}: [[reader]] #{i + 1} must be a table", key="reader")
        ld.unknown("reader", r, allowed_reader, idx)
        if "url" not in r:
            raise ld.fail("reader", "url", "missing (e.g. tcp-listen://0.0.0.0:3097 or /dev/serial/by-id/...)", idx)
        fmt = ld.get(r, "reader", "format", _str, "csv", idx, check=_format_name)
        reader = ReaderSettings(
            name=ld.get(r, "reader", "name", _str, f"reader{i + 1}", idx, check=_nonempty),
            url=ld.get(r, "reader", "url", _str, "", idx, check=_reader_url),
            format=fmt,
            tz=ld.get(r, "reader", "tz", _str, "UTC", idx, check=_zone),
            dedup_window_s=ld.get(r, "reader", "dedup_window_s", _float, 3.0, idx, check=_range(0, 3600)),
            dedup_mode=ld.get(
                r,
                "reader",
                "dedup_mode",
                _str,
                "first",
                idx,
                check=_one_of(DEDUP_MODES),
            ),
            finished_window_s=ld.get(r, "reader", "finished_window_s", _opt_float, None, idx, check=_range(0, 86400)),
            chip_map=ld.get(r, "reader", "chip_map", _opt_str, None, idx),
            chip_last_n=ld.get(r, "reader", "chip_last_n", _int, 0, idx, check=_range(0, 64)) or None,
            silence_s=ld.get(r, "reader", "silence_s", _float, 0.0, idx, check=_silence) or None,
            set_time=ld.get(r, "reader", "set_time", _bool, False, idx),
            ipico_seen=ld.get(
                r,
                "reader",
                "ipico_seen",
                _str,
                "both",
                idx,
                check=_one_of(IPICO_SEEN),
            ),
        )
        if reader.ipico_seen != "both" and fmt != "ipico":  # no other format reports first/last-seen
            raise ld.fail("reader", "ipico_seen", f"only for format = 'ipico' (this reader is {fmt!r})", idx)
        if reader.chip_map and path is not None and not Path(reader.chip_map).is_absolute():
            # relative to the config file, so a crew can ship config + chips.csv together
            object.__setattr__(reader, "chip_map", str(Path(path).parent / reader.chip_map))
        if reader.chip_map:
            _check_chip_map(ld, reader, idx)
        if any(x.name == reader.name for x in readers):
            raise ld.fail("reader", "name", f"duplicate reader name {reader.name!r}", idx)
        readers.append(reader)

    o = ld.table("outbox", set(OutboxSettings.__dataclass_fields__))
    outbox_path = ld.get(o, "outbox", "path", _str, OutboxSettings().path, check=_nonempty)
    if path is not None and not Path(outbox_path).is_absolute():
        outbox_path = str(Path(path).parent / outbox_path)
    min_free_mb = ld.get(o, "outbox", "min_free_mb", _float, OutboxSettings().min_free_mb, check=_range(0, 1e7))
    ck = ld.table("clock", set(ClockSettings.__dataclass_fields__))
    clock = ClockSettings(
        hold_uploads_until_synced=ld.get(ck, "clock", "hold_uploads_until_synced", _bool, False),
        max_skew_s=ld.get(ck, "clock", "max_skew_s", _float, ClockSettings().max_skew_s, check=_range(0.001, 86400)),
    )
    st = ld.table("status", set(StatusSettings.__dataclass_fields__))
    status = StatusSettings(
        listen=ld.get(st, "status", "listen", _opt_str, StatusSettings().listen, check=_listen),
        token=ld.get(st, "status", "token", _opt_str, None),
    )
    lg = ld.table("log", {"level"})
    level = ld.get(
        lg,
        "log",
        "level",
        _str,
        "info",
        check=lambda v: None if v in ("debug", "info", "warning", "error") else "must be debug, info, warning or error",
    )
    return Settings(
        cloud=cloud,
        device=device,
        session=session,
        readers=tuple(readers),
        outbox=OutboxSettings(path=outbox_path, min_free_mb=min_free_mb),
        status=status,
        clock=clock,
        log_level=level,
        source=shown,
        outbox_where=ld.where("outbox", "path" if "path" in o else None),
    )
