"""The long chaos profile: the real `rufus-gateway run` SIGKILLed hundreds of times (at random instants and at
every failpoint) while a simulated MYLAPS timer feeds it and the emulated cloud misbehaves (5xx, 429 +
Retry-After, 401, hangs past the timeout, commit-then-drop, slow answers, a closed session, a poison bib,
flapping and a long outage), the timer itself rebooted a few times; then the set checker compares the timer's
truth file, the gateway's database and the cloud. Progress on stderr, one JSON line of figures on stdout; exit 0
only if nothing was lost, doubled or unexpected, every failpoint was hit and every network phase ran (each
fault kind fired at least once), and the API key is in none of the run's files nor in this script's own output.

    .venv/bin/python benchmarks/chaos.py --kills 300          # ~17 min on 2 cores
    .venv/bin/python benchmarks/chaos.py --kills 30 --outage 20 --runners 120   # the CI profile's size
    .venv/bin/python benchmarks/chaos.py --quick              # a ~40 s smoke run (tests/e2e/test_benchmarks_smoke.py)

The bounded CI profile of the same harness is tests/chaos/test_crash_loop.py.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

# The harness is test code (tests/chaos/harness/), not part of the installed package: import it from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.log import configure
from tests.chaos.harness.supervisor import API_KEY, ChaosSettings, run_chaos


class _Kept(io.TextIOBase):
    """A stream that writes through and keeps a copy, so the script can grep what it printed."""

    def __init__(self, target: TextIO, copy: list[str]) -> None:
        self.target = target
        self.copy = copy

    def write(self, s: str) -> int:
        self.copy.append(s)
        return self.target.write(s)

    def flush(self) -> None:
        self.target.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=300, help="SIGKILLs of the daemon (default 300)")
    p.add_argument("--runners", type=int, default=600, help="runners in the simulated race (default 600)")
    p.add_argument("--format", dest="fmt", default="mylaps", help="reader protocol (default mylaps: acknowledged)")
    p.add_argument("--seed", type=int, default=1, help="race, kill instants and fault dice (default 1)")
    p.add_argument("--outage", type=float, default=180.0, help="seconds of the long cloud outage (default 180)")
    p.add_argument("--reader-reboots", type=int, default=3, help="times the timer is killed and restarted")
    p.add_argument("--no-network-faults", action="store_true", help="kills only, the cloud always up")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 6 kills, 30 runners, every phase once and short (4 s outage); ~40 s")  # fmt: skip
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary directory)")
    args = p.parse_args(argv)
    if args.kills < 1:
        p.error("--kills must be at least 1")

    printed: list[str] = []  # everything this script writes, grepped for the key at the end
    out, err = _Kept(sys.stdout, printed), _Kept(sys.stderr, printed)
    configure("warning", stream=err)  # stdout carries only the figures line
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rufus-chaos-"))
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", file=err, flush=True)

    if args.quick:
        settings = ChaosSettings(
            workdir=workdir / "run", kills=6, runners=30, fmt=args.fmt, seed=args.seed,
            network_faults=not args.no_network_faults, outage_s=4.0, flap_s=3.0, phase_s=1.0, phase_max_s=8.0,
            calm_s=(0.2, 0.5), reader_reboots=1, race_s=35.0, drain_timeout_s=90.0, status_every_s=1.0,
            up_s=(0.3, 1.5), profile="quick", log=log,
        )  # fmt: skip
    else:
        settings = ChaosSettings(
            workdir=workdir / "run", kills=args.kills, runners=args.runners, fmt=args.fmt, seed=args.seed,
            network_faults=not args.no_network_faults, outage_s=args.outage, flap_s=20.0, phase_s=4.0,
            reader_reboots=args.reader_reboots, race_s=args.kills * 2.2, drain_timeout_s=max(180.0, args.kills * 1.5),
            profile="long", log=log,
        )  # fmt: skip
    log(f"workdir {settings.workdir}")
    report = asyncio.run(run_chaos(settings))
    report.figures["benchmark"] = "chaos"
    report.figures["quick"] = args.quick
    if not report.ok:
        print(report.problems(), file=err)
    # The run's files were grepped by the supervisor; what this script printed (progress, the emulator's and
    # the gateway's warnings, the problems above, the figures line itself) is grepped here.
    if API_KEY in "".join(printed) or API_KEY in report.json_line():
        report.figures["secret_leaks"] = int(report.figures.get("secret_leaks", 0)) + 1
        report.figures["ok"] = False
        print("the API key is in this script's own output (stderr above)", file=err)
    if not report.ok:
        log(f"FAILED: evidence kept in {settings.workdir}")
    elif args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.json_line(), file=out, flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
