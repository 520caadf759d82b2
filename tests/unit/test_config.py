from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from gateway import config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "gateway.example.toml"
KEY = "ror-0123456789abcdef0123"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gw.toml"
    p.write_text(text)
    return p


def test_defaults_without_a_file() -> None:
    s = config.load(None, environ={})
    assert s.cloud.batch_size == 500 and s.readers == () and s.cloud.api_key == ""


def _loader_keys(tmp_path: Path) -> dict[str, set[str]]:
    """Every table and key config.load accepts, in its own words: handed a table or a key it does not know, it
    names the ones it knows. So a key added to the loader is found here without anyone listing it."""

    def known(text: str) -> set[str]:
        with pytest.raises(ConfigError) as exc:
            config.load(write(tmp_path, text), environ={})
        m = re.search(r"\(known: ([^)]*)\)", str(exc.value))
        assert m, str(exc.value)
        return set(m.group(1).split(", "))

    return {table: known(f"[{table}]\nzz_probe = 1\n") for table in known("[zz_probe]\n")}


def test_example_documents_every_key(tmp_path: Path) -> None:
    keys = _loader_keys(tmp_path)
    # the probe itself is sound: it finds every settings field, and the one key that has no dataclass
    assert set(keys) == {"cloud", "device", "session", "reader", "outbox", "status", "clock", "log"}
    tables = {
        "cloud": config.CloudSettings,
        "device": config.DeviceSettings,
        "session": config.SessionSettings,
        "reader": config.ReaderSettings,
        "outbox": config.OutboxSettings,
        "status": config.StatusSettings,
        "clock": config.ClockSettings,
    }
    for table, cls in tables.items():
        assert {f.name for f in dataclasses.fields(cls)} <= keys[table], table
    assert "level" in keys["log"]
    example = tomllib.loads(EXAMPLE.read_text())
    for table, wanted in keys.items():
        assert table in example, f"[{table}] missing from the example"
        shown = example[table] if isinstance(example[table], list) else [example[table]]
        documented = set().union(*(set(t) for t in shown))
        assert wanted - documented == set(), f"[{table}] keys missing from the example"
        assert documented - wanted == set(), f"[{table}] keys in the example the loader does not know"


def test_env_key_overrides_file(tmp_path: Path) -> None:
    p = write(tmp_path, '[cloud]\napi_key = "ror-ffffffffffffffffffff"\n')
    s = config.load(p, environ={"RUFUS_API_KEY": KEY})
    assert s.cloud.api_key == KEY
    assert KEY not in repr(s)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[cloud]\nbatch_size = 9000\n", r"gw\.toml:2: \[cloud\] batch_size: must be between 1 and 5000"),
        ("[cloud]\n\nbatch_size = 'x'\n", r"gw\.toml:3: \[cloud\] batch_size: must be an integer"),
        ("[cloud]\nbase_url = 'ftp://x'\n", r"gw\.toml:2: \[cloud\] base_url: must be an http\(s\) URL"),
        ("[cloud]\nbatchsize = 5\n", r"gw\.toml:2: \[cloud\] batchsize: unknown key"),
        ("[clod]\n", r"gw\.toml:1: unknown table \[clod\]"),
        ("[session]\ntoken_session = 'abc'\n", r"\[session\] token_session: must be 64 uppercase hex"),
        (
            "[[reader]]\nurl='tcp://a:1'\n[[reader]]\nurl='gopher://x'\n",
            r"gw\.toml:4: \[\[reader\]\] #2 url: 'gopher://x': unknown scheme gopher://",
        ),
        ("[[reader]]\nurl='tcp://a:1'\ntz = 'Mars/Olympus'\n", r"gw\.toml:3: \[\[reader\]\] #1 tz: unknown IANA"),
        ("[reader]\nformat = 'csv'\n", r"\[reader\] url: missing"),
        ("[status]\nlisten = 'nope'\n", r"\[status\] listen: must be HOST:PORT"),
        ("[cloud\nx=1\n", r"gw\.toml:1: TOML syntax error"),
        ("[clock]\nhold_uploads_until_synced = 1\n", r"gw\.toml:2: \[clock\] hold_uploads_until_synced: must be true"),
        ("[clock]\n\nmax_skew_s = -1\n", r"gw\.toml:3: \[clock\] max_skew_s: must be between"),
        ("[clock]\nskew = 1\n", r"gw\.toml:2: \[clock\] skew: unknown key"),
        ("[outbox]\nmin_free_mb = 'lots'\n", r"gw\.toml:2: \[outbox\] min_free_mb: must be a number"),
    ],
)
def test_bad_config_is_one_line_naming_file_line_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load(write(tmp_path, text), environ={})
    msg = str(exc.value)
    assert "\n" not in msg
    assert re.search(expected, msg), msg


def test_bad_key_is_never_echoed(tmp_path: Path) -> None:
    bad = "ror-NOTHEX-secretvalue!"
    with pytest.raises(ConfigError) as exc:
        config.load(write(tmp_path, f'[cloud]\napi_key = "{bad}"\n'), environ={})
    assert bad not in str(exc.value) and "api_key" in str(exc.value)


def test_clock_and_disk_guard_keys(tmp_path: Path) -> None:
    p = write(tmp_path, "[clock]\nhold_uploads_until_synced = true\nmax_skew_s = 0.5\n[outbox]\nmin_free_mb = 50\n")
    s = config.load(p, environ={})
    assert s.clock == config.ClockSettings(hold_uploads_until_synced=True, max_skew_s=0.5)
    assert s.outbox.min_free_mb == 50.0
    d = config.load(None, environ={})
    assert (d.clock.hold_uploads_until_synced, d.clock.max_skew_s, d.outbox.min_free_mb) == (False, 2.0, 200.0)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.toml", environ={})


def test_relative_paths_resolve_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "chips.csv").write_text("chip,bib\n")
    p = write(tmp_path, "[outbox]\npath = 'data/o.db'\n[[reader]]\nurl = 'tcp://h:1'\nchip_map = 'chips.csv'\n")
    s = config.load(p, environ={})
    assert s.outbox.path == str(tmp_path / "data/o.db")
    assert s.readers[0].chip_map == str(tmp_path / "chips.csv")
    assert s.control_socket == str(tmp_path / "data/o.ctl")


def test_a_missing_chip_map_fails_the_load_naming_config_line_and_key(tmp_path: Path) -> None:
    p = write(tmp_path, "[[reader]]\nurl = 'tcp://h:1'\n\nchip_map = 'chips.csv'\n")
    with pytest.raises(ConfigError) as exc:
        config.load(p, environ={})
    msg = str(exc.value)
    assert "\n" not in msg and exc.value.key == "reader.chip_map"
    assert msg.startswith(f"{p}:4: [[reader]] #1 chip_map: {tmp_path / 'chips.csv'}: "), msg
    assert "No such file or directory" in msg


def test_a_bad_chip_map_row_names_the_csv_line_too(tmp_path: Path) -> None:
    (tmp_path / "chips.csv").write_text("chip,bib\n" + "".join(f"E{i},{i}\n" for i in range(5)) + "E9\n")
    p = write(tmp_path, "[reader]\nurl = 'tcp://h:1'\nchip_map = 'chips.csv'\nchip_last_n = 4\n")
    with pytest.raises(ConfigError) as exc:
        config.load(p, environ={})
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}:3: [reader] chip_map: {tmp_path / 'chips.csv'}:7: expected 2 fields"), msg


def test_the_example_config_passes_its_own_check() -> None:
    # It is what the README tells the crew to copy and --check: a key pointing at a file that does not
    # ship with it would fail there.
    s = config.load(EXAMPLE, environ={})
    assert all(r.chip_map is None for r in s.readers)
