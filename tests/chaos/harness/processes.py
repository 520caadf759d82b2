"""The harness's processes: the real `rufus-gateway run` daemon and the `rufus-gateway simulate` timer, each a
subprocess in its own session so a SIGKILL hits exactly it, with its output kept per start for forensics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import control
from tests.fixtures.daemon import read_only_query
from tests.fixtures.ports import bindable


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_gateway_config(
    path: Path,
    *,
    base_url: str,
    api_key: str,
    readers: Sequence[Mapping[str, Any]],
    db: Path,
    cloud: Mapping[str, Any] | None = None,
    session: Mapping[str, Any] | None = None,
    device: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
) -> Path:
    """A config as an operator writes one, with short timeouts so a hang is noticed in seconds."""
    key = {"api_key": api_key} if api_key else {}  # none: it comes from RUFUS_API_KEY
    sections: dict[str, dict[str, Any]] = {
        "cloud": {
            "base_url": base_url,
            **key,
            "linger_s": 0.05,
            "connect_timeout_s": 2.0,
            "read_timeout_s": 2.0,
            "backoff_cap_s": 1.0,
            **(cloud or {}),
        },
        "device": {"serial_number": "CHAOS-0001", "model": "One4All", "alias": "chaos pi", **(device or {})},
        "session": {"alias": "chaos race", "timezone": "CET", **(session or {})},
    }
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    for r in readers:
        lines.append("[[reader]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in r.items()]
    lines += ["[outbox]", f"path = {toml_value(str(db))}", "[status]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in ({"listen": ""} | dict(status or {})).items()]
    lines += ["[log]", 'level = "info"']
    path.write_text("\n".join(lines) + "\n")
    return path


def quiet_port() -> int:
    """A free TCP port below the kernel's ephemeral range. A port the harness hands a daemon that is killed
    and restarted again and again must not be taken meanwhile by some outgoing connection, which a port
    from bind(0) (itself ephemeral) can be."""
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(max(1024, low - 12000), low - 1)
        if bindable(port):
            return port
    raise RuntimeError(f"no free port below {low}")


@dataclass(frozen=True)
class Killed:
    """What `GatewayProcess.kill` found: whether the daemon was still running when it was signalled, and how
    it ended. Only `by_us` is a kill the harness made; anything else is a daemon that exited on its own."""

    alive: bool
    rc: int | None  # None: never started

    @property
    def by_us(self) -> bool:
        return self.alive and self.rc == -signal.SIGKILL


@dataclass
class GatewayProcess:
    """One daemon, restartable. Each start writes `daemon-NNN.log` beside the config."""

    config: Path
    db: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    argv: Sequence[str] | None = None  # instead of `rufus-gateway run --config ...` (tests of the harness)

    @property
    def socket(self) -> str:
        return str(self.db.with_suffix(".ctl"))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_path(self, n: int) -> Path:
        return self.config.parent / f"daemon-{n:03d}.log"

    async def start(self, failpoint: str | None = None) -> None:
        env = {**os.environ, **self.env}
        env.pop("RUFUS_FAILPOINT", None)
        if failpoint:
            env["RUFUS_FAILPOINT"] = failpoint
        self.starts += 1
        with self.log_path(self.starts).open("wb") as out:
            argv = self.argv or (sys.executable, "-m", "gateway", "run", "--config", str(self.config))
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True,
            )  # fmt: skip

    async def ready(self) -> bool:
        """One ping on the control socket, bounded: a daemon stuck in its shutdown accepts and never answers."""
        with contextlib.suppress(Exception):  # not there yet, refused, cut, timed out: not ready
            answer = await asyncio.wait_for(control.call(self.socket, "GET", "/ping"), 2.0)
            return bool(answer["phase"] == "running")
        return False

    async def wait_ready(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.ready():
            if not self.running:
                raise RuntimeError(f"daemon exited {self._rc()} before ready: {self.tail()}")
            if loop.time() > deadline:
                raise RuntimeError(f"daemon not ready after {timeout:g}s: {self.tail()}")
            await asyncio.sleep(0.05)

    def _rc(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    async def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout`."""
        assert self.proc is not None
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None
        self.exits.append(rc)
        return rc

    async def kill(self) -> Killed:
        """SIGKILL the daemon if it runs. A daemon that already exited (or exits as the signal is sent, a
        zombie not yet reaped) is reported with its own exit code, never passed off as killed."""
        if self.proc is None:
            return Killed(False, None)
        if self.proc.returncode is not None:
            return Killed(False, self.proc.returncode)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        rc = await self.proc.wait()
        self.exits.append(rc)
        return Killed(True, rc)

    async def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM; the exit code, or None if it did not exit in time (then it is SIGKILLed)."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = await self.wait(timeout)
        if rc is None:
            await self.kill()
        return rc

    def tail(self, chars: int = 2000) -> str:
        return self.log_path(self.starts).read_text(errors="replace")[-chars:] if self.starts else ""

    def logs(self) -> list[Path]:
        return sorted(self.config.parent.glob("daemon-*.log"))

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Look at the database as an operator's read-only command would, while the daemon runs."""
        return read_only_query(self.db, sql, *args)


@dataclass
class ReaderProcess:
    """`rufus-gateway simulate`: a virtual timer with its own memory of unacknowledged reads. Killing it is a
    reader reboot: that memory is gone, which is exactly what a real reader's reboot does."""

    workdir: Path
    fmt: str
    to: str
    runners: int
    speed: float
    seed: int
    extra: Sequence[str] = ()
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    truths: list[Path] = field(default_factory=list)

    def argv(self, truth: Path) -> list[str]:
        return [
            sys.executable, "-m", "gateway", "simulate", "--format", self.fmt, "--to", self.to,
            "--runners", str(self.runners), "--speed", f"{self.speed:g}", "--seed", str(self.seed),
            "--truth", str(truth), "--waves", "1", *self.extra,
        ]  # fmt: skip

    async def start(self) -> None:
        self.starts += 1
        truth = self.workdir / f"truth-{self.starts:02d}.jsonl"
        self.truths.append(truth)
        with (self.workdir / f"simulator-{self.starts:02d}.log").open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(truth), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def tail(self, chars: int = 2000) -> str:
        p = self.workdir / f"simulator-{self.starts:02d}.log"
        return p.read_text(errors="replace")[-chars:] if p.exists() else ""
