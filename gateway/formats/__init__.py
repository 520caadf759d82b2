"""Reader line formats. `get(name)` returns the Format; `names()` lists them."""

from __future__ import annotations

from importlib import import_module

from gateway.errors import ReaderError
from gateway.formats.base import Format

# name -> module under gateway.formats defining FORMAT (a Format instance)
_MODULES: dict[str, str] = {
    "csv": "csv",
    "raceresult": "raceresult",
    "ultra": "ultra",
    "ipico": "ipico",
    "chronotrack": "chronotrack",
    "mylaps": "mylaps",
}


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Format:
    try:
        module = _MODULES[name]
    except KeyError:
        raise ReaderError(f"unknown format {name!r} (known: {', '.join(names())})") from None
    fmt: Format = import_module(f"gateway.formats.{module}").FORMAT
    return fmt
