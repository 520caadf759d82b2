"""Chip -> bib CSV: normalisation and errors that name file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.pipeline import ChipMap, ReaderRules


def _map(tmp_path: Path, text: str, **kw: int) -> ChipMap:
    path = tmp_path / "chips.csv"
    path.write_text(text)
    return ChipMap.load(path, **kw)


def test_header_optional_comments_blank_lines(tmp_path: Path) -> None:
    with_header = _map(tmp_path, "chip,bib\n# timing crew list\n\n0042,7\n 00a1 , 8 \n")
    assert (with_header.lookup("42"), with_header.lookup("0000A1"), len(with_header)) == ("7", "8", 2)
    without = _map(tmp_path, "42,7\r\n43,8\r\n")
    assert without.lookup("00042") == "7" and without.lookup("43") == "8"
    assert without.lookup("44") is None


def test_normalisation_leading_zeros_and_epc_tail(tmp_path: Path) -> None:
    m = ChipMap.empty()
    assert m.normalise("000123") == "123"
    assert m.normalise("0000") == "0"
    assert m.normalise(" e2000017abc ") == "E2000017ABC"
    tail = _map(tmp_path, "E28011700000020F0A0B0C0D,1001\n", last_n=6)
    assert tail.normalise("E28011700000020F0A0B0C0D") == "B0C0D"  # last 6: 0B0C0D, then no leading zero
    # the same runner's chip as another reader reports it: only the tail matters
    assert tail.lookup("300833B2DDD9014000000000000F0A0B0C0D") == "1001"


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("chip,bib\n1,2\n3\n", 3, "expected 2 fields"),
        ("1,2\n3,4,5\n", 2, "expected 2 fields"),
        ("1,2\n,9\n", 2, "empty chip"),
        ("1,2\n\n5, \n", 3, "empty bib"),
        ("0012,2\n12,3\n", 2, "already mapped to bib 2 at line 1"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    with pytest.raises(ConfigError) as err:
        _map(tmp_path, text)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'chips.csv'}:{line}: ") and what in msg
    assert "\n" not in msg and err.value.key == "reader.chip_map"


def test_same_chip_same_bib_twice_is_fine(tmp_path: Path) -> None:
    assert _map(tmp_path, "12,3\n0012,3\n").lookup("12") == "3"


def test_missing_file_and_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.csv: cannot read chip map"):
        ChipMap.load(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="last_n"):
        ChipMap.empty(last_n=0)
    with pytest.raises(ConfigError, match="dedup_mode"):
        ReaderRules(dedup_mode="loudest")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dedup_window_s"):
        ReaderRules(dedup_window_s=-1)
