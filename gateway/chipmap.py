"""Chip -> bib maps: the CSV a timing crew ships beside the config, and the normalisation both sides share.

Kept apart from the pipeline (which needs the database) so that config loading and `run --check` can read
and validate a chip map without the rest of the stack: a bad map is refused before the daemon starts.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

from gateway.errors import ConfigError


class ChipMap:
    """chip -> bib, with the chip normalised the same way on both sides: surrounding blanks removed, upper
    case (EPCs are hex), then the last `last_n` characters kept (EPC tail), then leading zeros stripped."""

    def __init__(
        self, mapping: Mapping[str, str] | None = None, *, last_n: int | None = None, source: str | None = None
    ) -> None:
        if last_n is not None and last_n < 1:
            raise ConfigError(f"chip map last_n must be >= 1, got {last_n}", key="reader.chip_last_n")
        self.last_n = last_n
        self.source = source
        self._map: dict[str, str] = {}
        for chip, bib in (mapping or {}).items():
            self._map[self.normalise(chip)] = bib

    @classmethod
    def empty(cls, *, last_n: int | None = None) -> ChipMap:
        return cls({}, last_n=last_n)

    @classmethod
    def load(cls, path: str | Path, *, last_n: int | None = None) -> ChipMap:
        """Load a `chip,bib` CSV (header optional, `#` comments and blank lines allowed). Any bad line is a
        ConfigError naming file:line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"{path}: cannot read chip map: {reason}", key="reader.chip_map") from None
        self = cls({}, last_n=last_n, source=str(path))
        origin: dict[str, int] = {}
        for no, fields in enumerate(_rows(path, text), 1):
            if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
                continue
            if len(fields) != 2:
                raise ConfigError(f"{path}:{no}: expected 2 fields chip,bib, got {len(fields)}", key="reader.chip_map")
            chip, bib = fields[0].strip(), fields[1].strip()
            if no == 1 and chip.lower() == "chip" and bib.lower() == "bib":
                continue
            if not chip or not bib:
                missing = "chip" if not chip else "bib"
                raise ConfigError(f"{path}:{no}: empty {missing}", key="reader.chip_map")
            key = self.normalise(chip)
            if key in self._map and self._map[key] != bib:
                raise ConfigError(
                    f"{path}:{no}: chip {chip} already mapped to bib {self._map[key]} at line {origin[key]}",
                    key="reader.chip_map",
                )
            self._map[key] = bib
            origin[key] = no
        return self

    def normalise(self, chip: str) -> str:
        c = chip.strip().upper()
        if self.last_n is not None:
            c = c[-self.last_n :]
        return c.lstrip("0") or ("0" if c else "")

    def lookup(self, chip: str) -> str | None:
        return self._map.get(self.normalise(chip))

    def __len__(self) -> int:
        return len(self._map)


def _rows(path: Path, text: str) -> Iterator[list[str]]:
    """csv.reader's rows. Its own error (a field over the csv module's size limit, as in a damaged or binary
    file) becomes a ConfigError naming file:line like every other problem, not a traceback at start."""
    reader = csv.reader(text.splitlines())
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ConfigError(f"{path}:{reader.line_num}: not a chip,bib line: {exc}", key="reader.chip_map") from None
        yield row
