"""structlog set-up: straight to the systemd journal with structured fields when run by systemd, JSON lines
elsewhere when not on a terminal, readable lines on one; and no secret ever printed.

Secrets are registered at start (`register_secret`) and scrubbed from every event by a processor, so a
mistake elsewhere (an exception text, a URL, a header dump) still cannot leak the API key. The journal's
fields are scrubbed again one by one, after rendering, like every other output.

The journal's native protocol is written here (`JournalSender`, one datagram per entry) rather than taken
from `systemd-python` or `cysystemd`: both wrap libsystemd's sd_journal_send, which needs libsystemd headers
to build on a Pi and always writes to /run/systemd/journal/socket, so no test could receive what is sent.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json as jsonlib
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog
import structlog.tracebacks

_SECRETS: set[str] = set()
_SECRET_KEYS = {"api_key", "x-api-key", "apikey", "token", "admin_token", "authorization", "password"}
REDACTED = "***"


def register_secret(value: str | None) -> None:
    """Remember a secret so that it is replaced by *** wherever it would appear in a log line."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: (REDACTED if str(k).lower() in _SECRET_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def _redact_processor(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = REDACTED
        else:
            event[key] = _scrub(event[key])
    return event


def _final_redact(_logger: Any, _name: str, event: Any) -> Any:
    # After rendering (exception tracebacks are rendered into the string), scrub once more.
    if isinstance(event, str):
        return redact(event)
    return event


JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "rufus-gateway"
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2}
_FIELD_BAD = re.compile(r"[^A-Z0-9_]")
# Event keys that become the entry's own fields rather than fields of their own
_OWN = {"event", "level", "timestamp", "logger", "exception", "exc_info"}


def under_journald(stream: TextIO | None = None) -> bool:
    """Whether `stream` (stderr) is systemd's journal stream: $JOURNAL_STREAM names its device and inode
    (sd_journal_stream_fd(3)); a process that merely inherited the variable, with stderr redirected
    elsewhere, is not, and keeps writing lines."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    stream = stream or sys.stderr
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def field_name(key: str) -> str:
    """A journal field name from an event key: uppercase letters, digits and _, not starting with _ (those
    are the journal's trusted fields) nor a digit, at most 64 characters."""
    name = _FIELD_BAD.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name[:64]


def journal_fields(event: Mapping[str, Any]) -> dict[str, str]:
    """The entry for one (already redacted) event: MESSAGE readable on its own (`journalctl -u` shows only
    it), PRIORITY from the level, SYSLOG_IDENTIFIER, and every key as a field of its own (`link` and `reader`
    as LINK and READER, so `journalctl -u rufus-gateway READER=finish` picks out one reader's lines; `link`
    is the [[reader]] name, so it is the READER of a line that names no reader id of its own)."""
    extra = {k: v for k, v in event.items() if k not in _OWN}
    text = str(event.get("event", ""))
    shown = " ".join(f"{k}={_text(v)}" for k, v in extra.items())
    message = f"{text} {shown}" if shown else text
    if event.get("exception"):
        message += "\n" + str(event["exception"])
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(_PRIORITY.get(str(event.get("level", "info")), 6)),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
    }
    for key, value in extra.items():
        name = field_name(key)
        while name in fields:
            name += "_"
        fields[name] = _text(value)
    if "link" in extra and "READER" not in fields:
        fields["READER"] = _text(extra["link"])
    return {k: redact(v) for k, v in fields.items()}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else jsonlib.dumps(value, default=str)


def encode_entry(fields: Mapping[str, str]) -> bytes:
    """The native protocol: `NAME=value\n`, or for a value holding a newline `NAME\n` + its length as a
    little-endian 64-bit integer + the value + `\n` (systemd.journal-fields(7), "Native protocol")."""
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalSender:
    """structlog's logger under systemd: one datagram per entry to journald's socket. An entry too big for a
    datagram goes in a sealed memfd passed alongside, as journald expects. Should the socket refuse
    (journald restarting), the line goes to `fallback` (stderr, which journald also reads) rather than
    nowhere."""

    def __init__(self, path: str = JOURNAL_SOCKET, fallback: TextIO | None = None) -> None:
        self.path = path
        self.fallback = fallback or sys.stderr
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def msg(self, fields: dict[str, str]) -> None:
        data = encode_entry(fields)
        try:
            try:
                self._sock.sendto(data, self.path)
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):  # too big for one datagram
                    raise
                self._send_memfd(data)
        except OSError:
            with contextlib.suppress(OSError, ValueError):
                print(jsonlib.dumps(fields), file=self.fallback, flush=True)

    def _send_memfd(self, data: bytes) -> None:
        fd = os.memfd_create("rufus-gateway-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            import fcntl

            fcntl.fcntl(
                fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            )
            # sendmsg, not socket.send_fds: on 3.11 send_fds drops its address argument
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self._sock.sendmsg([b""], rights, 0, self.path)
        finally:
            os.close(fd)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _NamedSender:
    """What structlog asks its factory for, per call (`get_logger(name)`): the one shared socket, and the
    logger's name as the LOGGER field."""

    def __init__(self, sender: JournalSender, name: str | None = None, *_args: Any) -> None:
        self.sender = sender
        self.name = name

    def msg(self, fields: dict[str, str]) -> None:
        if self.name and "LOGGER" not in fields:
            fields["LOGGER"] = self.name
        self.sender.msg(fields)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _to_journal(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    return {"fields": journal_fields(event)}


def configure(
    level: str = "info",
    stream: TextIO | None = None,
    json: bool | None = None,
    *,
    journal: bool | None = None,
    journal_socket: str | None = None,
) -> None:
    """Configure structlog for the process. `journal=None` writes to the journal when stderr is journald's
    stream (the daemon under systemd) and no other stream is given; otherwise `json=None` picks JSON unless
    `stream` is a terminal."""
    if journal is None:
        journal = stream is None and under_journald()
    if journal:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                _redact_processor,
                # a plain traceback, which has no frame locals (see below)
                structlog.processors.format_exc_info,
                _to_journal,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
            logger_factory=functools.partial(_NamedSender, JournalSender(journal_socket or JOURNAL_SOCKET)),
            cache_logger_on_first_use=False,
        )
        return
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    # Tracebacks without frame locals: a local can hold anything (a request's headers, a config, a token that
    # was never registered), and structlog prints them by default in both renderers.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(),
            exception_formatter=structlog.dev.RichTracebackFormatter(
                show_locals=False, width=120, color_system="truecolor" if stream.isatty() else None
            ),
        )
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    if json:
        processors.append(
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        )
    processors += [renderer, _final_redact]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
