"""`make wheelhouse` then an install with no index at all, as on a Pi in a field: built here for this host's
own Python and platform (the Pi's are the Makefile's defaults), installed into a fresh venv with
`pip install --no-index --find-links`, and the installed command runs. About 15 s here: it reaches PyPI once."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def host_platform() -> str:
    libc, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")  # type: ignore[union-attr]
    if libc != "glibc":
        pytest.skip(f"not a glibc host: {libc}")
    major, minor = version.split(".")[:2]
    return f"manylinux_{major}_{minor}_{platform.machine()}"


def test_wheelhouse_installs_with_no_index(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    assert (venv / ".installed").exists(), "run from the venv `make` built"
    house = tmp_path / "wheelhouse"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    made = subprocess.run(
        ["make", "-C", str(ROOT), "wheelhouse", f"VENV={venv}", f"WHEELHOUSE={house}", f"PI_PYTHON={py}",
         f"PI_PLATFORM={host_platform()}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    wheels = sorted(p.name for p in house.iterdir())
    assert all(name.endswith(".whl") for name in wheels), wheels
    assert any(name.startswith("rufus_gateway-") for name in wheels) and any(n.startswith("aiohttp-") for n in wheels)
    fresh = tmp_path / "pi-venv"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # no index from anywhere
    done = subprocess.run(
        [str(fresh / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(house), "rufus-gateway"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = subprocess.run([str(fresh / "bin" / "rufus-gateway"), "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "run" in run.stdout and "mark" in run.stdout, run.stdout + run.stderr
    check = subprocess.run(
        [str(fresh / "bin" / "rufus-gateway"), "run", "--config", str(ROOT / "config" / "gateway.example.toml"),
         "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
