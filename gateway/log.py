"""structlog set-up: JSON lines when not on a terminal, readable on one, and no secret ever printed.

Secrets are registered at start (`register_secret`) and scrubbed from every event by a processor, so a
mistake elsewhere (an exception text, a URL, a header dump) still cannot leak the API key.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
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


def configure(level: str = "info", stream: TextIO | None = None, json: bool | None = None) -> None:
    """Configure structlog for the process. `json=None` picks JSON unless `stream` is a terminal."""
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
