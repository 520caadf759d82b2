"""How bytes arrive: one `open_link(url)` for serial devices, TCP (either direction) and capture files.

serial:///dev/ttyUSB0?baudrate=115200   a serial device (a bare /dev/... path means the same);
                                        options: baudrate, bytesize (5-8), parity (N E O M S), stopbits (1 1.5 2)
tcp://10.0.0.5:3601                     the gateway connects to a reader
tcp-listen://0.0.0.0:3097               readers connect to the gateway, several at once
file:///var/captures/race.cap           a capture, read once (plain bytes or a `record` capture)
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from gateway.errors import ReaderError
from gateway.links.base import Connection, Handler, Link, LinkState
from gateway.links.file import FileLink
from gateway.links.tcp import TcpLink, TcpListenLink

__all__ = ["BadLinkURL", "Connection", "Handler", "Link", "LinkSpec", "LinkState", "open_link", "parse_url", "safe_url"]

SCHEMES = ("serial", "tcp", "tcp-listen", "file")


class BadLinkURL(ReaderError):
    """A reader URL that can never work. Keeps the URL (without credentials) and the problem apart, so the
    config loader can put them after its own `file:line: [[reader]] #N url:`."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"reader URL {url!r}: {problem}")
        self.url = url
        self.problem = problem


def safe_url(url: str) -> str:
    """The URL without any user:password part (never shown, never logged)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    # The netloc's own text after the credentials, not `parts.port`: that raises on a non-numeric or
    # out-of-range port, and parse_url would then call the port a bad host in the very message that shows it.
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _is_char_device(path: str) -> bool:
    if not path.startswith("/"):
        return False
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


# pyserial's standard rates: a typo (11520, 96000) is caught at load rather than as a silent garbled link.
BAUDRATES = (
    50,
    75,
    110,
    134,
    150,
    200,
    300,
    600,
    1200,
    1800,
    2400,
    4800,
    9600,
    19200,
    38400,
    57600,
    115200,
    230400,
    460800,
    500000,
    576000,
    921600,
    1000000,
    1152000,
    1500000,
    2000000,
    2500000,
    3000000,
    3500000,
    4000000,
)
SERIAL_OPTIONS = ("baudrate", "bytesize", "parity", "stopbits")
_BYTESIZES = {"5": 5, "6": 6, "7": 7, "8": 8}
_PARITIES = ("N", "E", "O", "M", "S")
_STOPBITS = {"1": 1, "1.5": 1.5, "2": 2}
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"  # underscores too: /etc/hosts and docker allow them
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")


@dataclass(frozen=True)
class LinkSpec:
    """A reader URL, parsed and checked: what `open_link` builds from, and what the config loader validates
    with, so that `run --check` and `run` can never disagree on which URLs are good."""

    scheme: str
    shown: str  # the URL without credentials
    host: str = ""
    port: int = 0
    path: str = ""
    baudrate: int | None = None
    serial_options: dict[str, Any] = field(default_factory=dict)


def _host_port(scheme: str, parts: SplitResult, shown: str) -> tuple[str, int]:
    example = "0.0.0.0:3097" if scheme == "tcp-listen" else "10.0.0.5:3601"
    host = parts.hostname
    if not host:
        raise BadLinkURL(shown, f"missing host (e.g. {scheme}://{example})")
    if not _valid_host(host):
        raise BadLinkURL(shown, f"bad host {host!r} (an IP address or a host name)")
    hostport = parts.netloc.rpartition("@")[2]  # never the user:password part, not even in a message
    raw_port = hostport.rpartition("]")[2].rpartition(":")
    if not raw_port[1]:
        raise BadLinkURL(shown, f"missing port (e.g. {scheme}://{host}:{example.split(':')[1]})")
    digits = raw_port[2]
    if not digits.isdigit():
        raise BadLinkURL(shown, f"port must be a number, got {digits!r}")
    port = int(digits)
    lowest = 0 if scheme == "tcp-listen" else 1  # listening on port 0 asks the system for a free port
    if not lowest <= port <= 65535:
        raise BadLinkURL(shown, f"port must be between {lowest} and 65535, got {port}")
    return host, port


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.match(host))
    return True


def parse_url(url: str) -> LinkSpec:
    """Check a reader URL whole (scheme, host, port range, serial options) and split it; ReaderError if bad."""
    if url.startswith("/dev/") or _is_char_device(url):  # a socat `link=` symlink to a pty counts too
        url = f"serial://{url}"
    try:
        parts = urlsplit(url)
        shown = safe_url(url)
    except ValueError as exc:  # urllib refuses an unbalanced [ipv6 bracket outright
        scheme, sep, rest = url.partition("://")
        unsafe = f"{scheme}{sep}{rest.rpartition('@')[2]}"  # no credentials, even in this message
        raise BadLinkURL(unsafe, f"bad host ({exc})") from None
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise BadLinkURL(
            shown,
            f"unknown scheme {scheme + '://' if scheme else '(none)'}; "
            "use serial://, tcp://, tcp-listen://, file:// or a /dev/ path",
        )
    if scheme in ("tcp", "tcp-listen"):
        if parts.path not in ("", "/") or parts.query:
            raise BadLinkURL(shown, f"a {scheme}:// URL takes only HOST:PORT")
        host, port = _host_port(scheme, parts, shown)
        return LinkSpec(scheme, shown, host=host, port=port)
    path = unquote(parts.path)
    if parts.netloc and scheme == "file":  # file://relative/x is a common slip: netloc swallowed the first part
        path = f"{parts.netloc}{path}"
    if not path:
        example = "/var/captures/race.cap" if scheme == "file" else "/dev/ttyUSB0"
        raise BadLinkURL(shown, f"missing path (e.g. {scheme}://{example})")
    if scheme == "file":
        if parts.query:
            raise BadLinkURL(shown, "a file:// URL takes no options")
        return LinkSpec(scheme, shown, path=path)
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    for key in options:
        if key not in SERIAL_OPTIONS:
            raise BadLinkURL(shown, f"unknown option {key!r} (known: {', '.join(SERIAL_OPTIONS)})")
    baud: int | None = None
    if "baudrate" in options:
        raw = options["baudrate"]
        if not raw.isdigit():
            raise BadLinkURL(shown, f"baudrate must be a number, got {raw!r}")
        baud = int(raw)
        if baud not in BAUDRATES:
            raise BadLinkURL(shown, f"baudrate {baud} is not a standard rate (e.g. 9600, 115200)")
    serial_options: dict[str, Any] = {}
    if "bytesize" in options:
        if options["bytesize"] not in _BYTESIZES:
            raise BadLinkURL(shown, f"bytesize must be 5, 6, 7 or 8, got {options['bytesize']!r}")
        serial_options["bytesize"] = _BYTESIZES[options["bytesize"]]
    if "parity" in options:
        parity = options["parity"].upper()
        if parity not in _PARITIES:
            raise BadLinkURL(shown, f"parity must be one of N, E, O, M, S, got {options['parity']!r}")
        serial_options["parity"] = parity
    if "stopbits" in options:
        if options["stopbits"] not in _STOPBITS:
            raise BadLinkURL(shown, f"stopbits must be 1, 1.5 or 2, got {options['stopbits']!r}")
        serial_options["stopbits"] = _STOPBITS[options["stopbits"]]
    return LinkSpec(scheme, shown, path=path, baudrate=baud, serial_options=serial_options)


def open_link(url: str, *, name: str | None = None, backoff_base: float = 0.5, backoff_cap: float = 30.0) -> Link:
    """Map a reader URL to its link. Nothing is opened yet: `link.run(handler)` does that, and keeps at it."""
    kw = {"backoff_base": backoff_base, "backoff_cap": backoff_cap}
    spec = parse_url(url)
    if spec.scheme == "tcp":
        return TcpLink(spec.shown, spec.host, spec.port, name, **kw)
    if spec.scheme == "tcp-listen":
        return TcpListenLink(spec.shown, spec.host, spec.port, name, **kw)
    if spec.scheme == "file":
        return FileLink(spec.shown, Path(spec.path), name, **kw)
    from gateway.links.serial import DEFAULT_BAUDRATE, SerialLink  # the serial library loads only when used

    return SerialLink(
        spec.shown,
        spec.path,
        name,
        baudrate=spec.baudrate or DEFAULT_BAUDRATE,
        serial_options=spec.serial_options,
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
    )
