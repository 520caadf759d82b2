"""[reader] keys added for dead-link detection and clock setting: parsed, defaulted, and refused in the
project's one-line `file:line: [reader] key: problem` style."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway import config
from gateway.errors import ConfigError


def _load(tmp_path: Path, body: str) -> config.Settings:
    p = tmp_path / "gw.toml"
    p.write_text("[reader]\nurl = 'tcp://127.0.0.1:3601'\n" + body)
    return config.load(p, environ={})


def test_silence_s_defaults_to_the_protocols_own(tmp_path: Path) -> None:
    assert _load(tmp_path, "").readers[0].silence_s is None
    assert _load(tmp_path, "silence_s = 0\n").readers[0].silence_s is None
    assert _load(tmp_path, "silence_s = 12\n").readers[0].silence_s == 12.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("silence_s = 0.2\n", r"gw\.toml:3: \[reader\] silence_s: must be 0 \(the protocol's own\) or between 1"),
        ("silence_s = 'often'\n", r"gw\.toml:3: \[reader\] silence_s: must be a number"),
        ("silence_s = 7200\n", r"gw\.toml:3: \[reader\] silence_s: .*3600"),
    ],
)
def test_bad_silence_s_is_one_line_naming_file_line_key(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, body)
    assert "\n" not in str(exc.value)
    assert re.search(expected, str(exc.value)), str(exc.value)


def test_set_time_is_off_unless_the_crew_opts_in(tmp_path: Path) -> None:
    assert _load(tmp_path, "").readers[0].set_time is False
    assert _load(tmp_path, "set_time = true\n").readers[0].set_time is True
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, "set_time = 'yes'\n")
    assert re.search(r"gw\.toml:3: \[reader\] set_time: must be true or false", str(exc.value)), str(exc.value)


def _load_as(tmp_path: Path, fmt: str, body: str) -> config.Settings:
    p = tmp_path / "gw.toml"
    p.write_text(f"[reader]\nurl = 'tcp://127.0.0.1:10000'\nformat = '{fmt}'\n" + body)
    return config.load(p, environ={})


def test_ipico_seen_defaults_to_both_and_reaches_the_pipeline_rules(tmp_path: Path) -> None:
    from gateway.service import reader_rules

    assert _load_as(tmp_path, "ipico", "").readers[0].ipico_seen == "both"
    settings = _load_as(tmp_path, "ipico", "ipico_seen = 'first'\n")
    assert reader_rules(settings)["reader1"].seen == "first"


@pytest.mark.parametrize(
    ("fmt", "body", "expected"),
    [
        ("ipico", "ipico_seen = 'fs'\n", r"gw\.toml:4: \[reader\] ipico_seen: must be both, first or last"),
        ("ipico", "ipico_seen = 1\n", r"gw\.toml:4: \[reader\] ipico_seen: must be a string"),
        ("csv", "ipico_seen = 'first'\n", r"gw\.toml:4: \[reader\] ipico_seen: only for format = 'ipico'"),
    ],
)
def test_bad_ipico_seen_is_one_line_naming_file_line_key(tmp_path: Path, fmt: str, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load_as(tmp_path, fmt, body)
    assert "\n" not in str(exc.value)
    assert re.search(expected, str(exc.value)), str(exc.value)
