"""`run --check` refuses exactly what `run` refuses at start-up: the same one line naming file:line and key, exit 78
(EX_CONFIG, on which systemd does not restart), no traceback. Both go through the installed console script, as
the crew and the unit file run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.e2e.support import KEY
from tests.fixtures.daemon import write_config
from tests.fixtures.filemodes import obeys_file_modes

SCRIPT = Path(sys.executable).parent / "rufus-gateway"

# (reader url, the problem after `url: `). The config's first [[reader]] is good, so each bad one is #2.
BAD_URLS = [
    ("tcp://host", "'tcp://host': missing port (e.g. tcp://host:3601)"),
    ("tcp://127.0.0.1:99999", "'tcp://127.0.0.1:99999': port must be between 1 and 65535, got 99999"),
    ("tcp://127.0.0.1:0", "'tcp://127.0.0.1:0': port must be between 1 and 65535, got 0"),
    ("tcp://127.0.0.1:notaport", "'tcp://127.0.0.1:notaport': port must be a number, got 'notaport'"),
    ("tcp://127.0.0.1:", "'tcp://127.0.0.1:': port must be a number, got ''"),
    ("tcp://:3601", "'tcp://:3601': missing host (e.g. tcp://10.0.0.5:3601)"),
    ("tcp://bad host:3601", "'tcp://bad host:3601': bad host 'bad host' (an IP address or a host name)"),
    ("tcp://[::1:3601", "'tcp://[::1:3601': bad host (Invalid IPv6 URL)"),
    ("tcp://user:secret@[::1:3601", "'tcp://[::1:3601': bad host (Invalid IPv6 URL)"),
    ("tcp://10.0.0.5:3601/x", "'tcp://10.0.0.5:3601/x': a tcp:// URL takes only HOST:PORT"),
    ("tcp-listen://0.0.0.0", "'tcp-listen://0.0.0.0': missing port (e.g. tcp-listen://0.0.0.0:3097)"),
    ("tcp-listen://0.0.0.0:65536", "'tcp-listen://0.0.0.0:65536': port must be between 0 and 65535, got 65536"),
    ("tcp-listen://:3097", "'tcp-listen://:3097': missing host (e.g. tcp-listen://0.0.0.0:3097)"),
    ("tcp-listen://0.0.0.0:3097?x=1", "'tcp-listen://0.0.0.0:3097?x=1': a tcp-listen:// URL takes only HOST:PORT"),
    (
        "serial:///dev/ttyUSB0?baudrate=abc",
        "'serial:///dev/ttyUSB0?baudrate=abc': baudrate must be a number, got 'abc'",
    ),
    (
        "serial:///dev/ttyUSB0?baudrate=11520",
        "'serial:///dev/ttyUSB0?baudrate=11520': baudrate 11520 is not a standard rate (e.g. 9600, 115200)",
    ),
    (
        "/dev/ttyUSB0?speed=9600",
        "'serial:///dev/ttyUSB0?speed=9600': unknown option 'speed' (known: baudrate, bytesize, parity, stopbits)",
    ),
    ("serial:///dev/ttyUSB0?bytesize=9", "'serial:///dev/ttyUSB0?bytesize=9': bytesize must be 5, 6, 7 or 8, got '9'"),
    (
        "serial:///dev/ttyUSB0?parity=X",
        "'serial:///dev/ttyUSB0?parity=X': parity must be one of N, E, O, M, S, got 'X'",
    ),
    ("serial:///dev/ttyUSB0?stopbits=3", "'serial:///dev/ttyUSB0?stopbits=3': stopbits must be 1, 1.5 or 2, got '3'"),
    ("serial://", "'serial://': missing path (e.g. serial:///dev/ttyUSB0)"),
    ("file://", "'file://': missing path (e.g. file:///var/captures/race.cap)"),
    ("file:///tmp/race.cap?speed=2", "'file:///tmp/race.cap?speed=2': a file:// URL takes no options"),
    (
        "gopher://x",
        "'gopher://x': unknown scheme gopher://; use serial://, tcp://, tcp-listen://, file:// or a /dev/ path",
    ),
    (
        "ttyUSB0",
        "'ttyUSB0': unknown scheme (none); use serial://, tcp://, tcp-listen://, file:// or a /dev/ path",
    ),
]


def both(cfg: Path, prefix: Sequence[str] = ()) -> list[subprocess.CompletedProcess[str]]:
    """`run --check` and `run` on the same file. `run` is given a timeout: a daemon that started would hang here."""
    return [
        subprocess.run(
            [*prefix, str(SCRIPT), "run", "--config", str(cfg), *flag],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for flag in (["--check"], [])
    ]


def assert_refused(cfg: Path, expected: str, prefix: Sequence[str] = ()) -> None:
    for proc, what in zip(both(cfg, prefix), ("run --check", "run"), strict=True):
        assert proc.returncode == 78, f"{what}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
        assert proc.stderr.splitlines() == [f"rufus-gateway: config error: {expected}"], what
        assert proc.stdout == "" and "Traceback" not in proc.stderr, what
    assert not (cfg.parent / "outbox.db").exists()  # `run` did not start: not even the database was created


def line_of(cfg: Path, needle: str, after: int = 0) -> int:
    lines = cfg.read_text().splitlines()
    return next(no for no, text in enumerate(lines, 1) if no > after and text.startswith(needle))


def config_with(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "gw.toml",
        base_url="http://127.0.0.1:9/v0",
        api_key=KEY,
        readers=[{"name": "good", "url": "tcp-listen://127.0.0.1:0"}, {"name": "bad", "url": url}],
    )


@pytest.mark.parametrize(("url", "problem"), BAD_URLS, ids=[u for u, _ in BAD_URLS])
def test_a_bad_reader_url_is_refused_by_check_and_run_alike(tmp_path: Path, url: str, problem: str) -> None:
    cfg = config_with(tmp_path, url)
    second = line_of(cfg, "url = ", after=line_of(cfg, "url = "))
    assert_refused(cfg, f"{cfg}:{second}: [[reader]] #2 url: {problem}")


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("127.0.0.1:70000", "port must be between 0 and 65535, got 70000"),
        ("8088", "must be HOST:PORT (e.g. 127.0.0.1:8088), got '8088'"),
        ("127.0.0.1:http", "must be HOST:PORT (e.g. 127.0.0.1:8088), got '127.0.0.1:http'"),
    ],
)
def test_a_bad_status_listen_is_refused_with_a_precise_message(tmp_path: Path, listen: str, problem: str) -> None:
    cfg = config_with(tmp_path, "tcp-listen://127.0.0.1:0")
    cfg.write_text(cfg.read_text().replace('listen = ""', f'listen = "{listen}"'))
    assert_refused(cfg, f"{cfg}:{line_of(cfg, 'listen = ')}: [status] listen: {problem}")


def test_a_config_without_a_reader_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "gw.toml", base_url="http://127.0.0.1:9/v0", api_key=KEY, readers=[])
    assert_refused(
        cfg,
        f'{cfg}: [[reader]]: none configured, the gateway would read nothing (e.g. [[reader]] url = "tcp-listen://0.0.0.0:3097")',
    )


def test_an_outbox_under_a_file_is_refused_naming_outbox_path(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory\n")
    cfg = config_with(tmp_path, "tcp-listen://127.0.0.1:0")
    cfg.write_text(cfg.read_text().replace('path = "outbox.db"', 'path = "data/outbox.db"'))
    where = f"{cfg}:{line_of(cfg, 'path = ')}"
    assert_refused(cfg, f"{where}: [outbox] path: {tmp_path}/data: {tmp_path}/data is not a directory")


def test_an_unwritable_outbox_directory_is_refused_naming_outbox_path(tmp_path: Path) -> None:
    """As root (CI) the commands run without CAP_DAC_OVERRIDE, so the directory's mode counts for them too."""
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    cfg = config_with(tmp_path, "tcp-listen://127.0.0.1:0")
    cfg.write_text(cfg.read_text().replace('path = "outbox.db"', 'path = "ro/new/outbox.db"'))
    where = f"{cfg}:{line_of(cfg, 'path = ')}"
    problem = f"{ro}/new: directory not writable (does not exist, and cannot be created in {ro})"
    assert_refused(cfg, f"{where}: [outbox] path: {problem}", obeys_file_modes())


def test_a_missing_outbox_directory_that_run_would_create_passes_the_check(tmp_path: Path) -> None:
    cfg = config_with(tmp_path, "tcp-listen://127.0.0.1:0")
    cfg.write_text(cfg.read_text().replace('path = "outbox.db"', 'path = "new/sub/outbox.db"'))
    proc = subprocess.run([str(SCRIPT), "run", "--config", str(cfg), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{cfg}: ok (2 reader(s), outbox {tmp_path}/new/sub/outbox.db)",
        f"{cfg}: note: [outbox] path: {tmp_path}/new/sub does not exist yet; run will create it",
    ]


def test_an_empty_file_is_refused_not_run_on_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("")
    assert_refused(
        cfg,
        f'{cfg}: [[reader]]: none configured, the gateway would read nothing (e.g. [[reader]] url = "tcp-listen://0.0.0.0:3097")',
    )


def test_an_outbox_path_too_long_for_its_control_socket_is_refused_naming_outbox_path(tmp_path: Path) -> None:
    """The control socket lives beside the database, and a unix socket path has at most 107 bytes: a deep outbox
    path is refused at the check, not met as `AF_UNIX path too long` (exit 70) once the daemon is up."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    cfg = config_with(tmp_path, "tcp-listen://127.0.0.1:0")
    cfg.write_text(cfg.read_text().replace('path = "outbox.db"', f'path = "{deep}/outbox.db"'))
    where = f"{cfg}:{line_of(cfg, 'path = ')}"
    ctl = f"{deep}/outbox.ctl"
    problem = (
        f"the control socket beside it ({ctl}) would be {len(os.fsencode(ctl))} bytes, over the 107 a unix "
        "socket path may have: choose a shorter outbox path"
    )
    assert_refused(cfg, f"{where}: [outbox] path: {problem}")
