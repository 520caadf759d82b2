"""How bytes arrive: one `open_link(url)` for serial devices, TCP (either direction) and capture files.

serial:///dev/ttyUSB0?baudrate=115200   a serial device (a bare /dev/... path means the same)
tcp://10.0.0.5:3601                     the gateway connects to a reader
tcp-listen://0.0.0.0:3097               readers connect to the gateway, several at once
file:///var/captures/race.cap           a capture, read once (plain bytes or a `record` capture)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from gateway.errors import ReaderError
from gateway.links.base import Connection, Handler, Link, LinkState
from gateway.links.file import FileLink
from gateway.links.tcp import TcpLink, TcpListenLink

__all__ = ["Connection", "Handler", "Link", "LinkState", "open_link", "safe_url"]

SCHEMES = ("serial", "tcp", "tcp-listen", "file")


def safe_url(url: str) -> str:
    """The URL without any user:password part (never shown, never logged)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()


def _is_char_device(path: str) -> bool:
    if not path.startswith("/"):
        return False
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _host_port(url: str, scheme: str, netloc: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ReaderError(f"reader URL {safe_url(url)!r}: port must be a number 0-65535") from None
    host = parts.hostname
    if not host:
        raise ReaderError(f"reader URL {safe_url(url)!r}: missing host (e.g. {scheme}://{netloc or '127.0.0.1:3601'})")
    if port is None:
        raise ReaderError(f"reader URL {safe_url(url)!r}: missing port (e.g. {scheme}://{host}:3601)")
    return host, port


def open_link(url: str, *, name: str | None = None, backoff_base: float = 0.5, backoff_cap: float = 30.0) -> Link:
    """Map a reader URL to its link. Nothing is opened yet: `link.run(handler)` does that, and keeps at it."""
    kw = {"backoff_base": backoff_base, "backoff_cap": backoff_cap}
    if url.startswith("/dev/") or _is_char_device(url):  # a socat `link=` symlink to a pty counts too
        url = f"serial://{url}"
    parts = urlsplit(url)
    scheme = parts.scheme
    shown = safe_url(url)
    if scheme not in SCHEMES:
        raise ReaderError(
            f"reader URL {shown!r}: unknown scheme {scheme + '://' if scheme else '(none)'}; "
            "use serial://, tcp://, tcp-listen://, file:// or a /dev/ path"
        )
    if scheme == "tcp":
        host, port = _host_port(url, scheme, parts.netloc)
        return TcpLink(shown, host, port, name, **kw)
    if scheme == "tcp-listen":
        host, port = _host_port(url, scheme, parts.netloc)
        return TcpListenLink(shown, host, port, name, **kw)
    path = unquote(parts.path)
    if parts.netloc and scheme == "file":  # file://relative/x is a common slip: netloc swallowed the first part
        path = f"{parts.netloc}{path}"
    if not path:
        raise ReaderError(f"reader URL {shown!r}: missing path (e.g. {scheme}:///dev/ttyUSB0)")
    if scheme == "file":
        return FileLink(shown, Path(path), name, **kw)
    options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    baudrate = options.pop("baudrate", None)
    try:
        baud = int(baudrate) if baudrate is not None else None
    except ValueError:
        raise ReaderError(f"reader URL {shown!r}: baudrate must be a number, got {baudrate!r}") from None
    if options:
        raise ReaderError(f"reader URL {shown!r}: unknown option {sorted(options)[0]!r} (known: baudrate)")
    from gateway.links.serial import DEFAULT_BAUDRATE, SerialLink  # the serial library loads only when used

    return SerialLink(
        shown, path, name, baudrate=baud or DEFAULT_BAUDRATE, backoff_base=backoff_base, backoff_cap=backoff_cap
    )
