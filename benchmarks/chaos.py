"""The long chaos profile: the real `rufus-gateway run` SIGKILLed hundreds of times (at random instants and at
every failpoint) while a simulated MYLAPS timer feeds it and the emulated cloud misbehaves (5xx, 429 +
Retry-After, hangs past the timeout, commit-then-drop, slow answers, a closed session, a poison bib, flapping
and a long outage), the timer itself rebooted a few times; then the set checker compares the timer's truth
file, the gateway's database and the cloud. Progress on stderr, one JSON line of figures on stdout; exit 0
only if nothing was lost, doubled or unexpected.

    .venv/bin/python benchmarks/chaos.py --kills 300          # ~17 min on 2 cores
    .venv/bin/python benchmarks/chaos.py --kills 30 --outage 20 --runners 120   # the CI profile's size

The bounded CI profile of the same harness is tests/chaos/test_crash_loop.py.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gateway.chaos.supervisor import ChaosSettings, run_chaos
from gateway.log import configure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=300, help="SIGKILLs of the daemon (default 300)")
    p.add_argument("--runners", type=int, default=600, help="runners in the simulated race (default 600)")
    p.add_argument("--format", dest="fmt", default="mylaps", help="reader protocol (default mylaps: acknowledged)")
    p.add_argument("--seed", type=int, default=1, help="race, kill instants and fault dice (default 1)")
    p.add_argument("--outage", type=float, default=180.0, help="seconds of the long cloud outage (default 180)")
    p.add_argument("--reader-reboots", type=int, default=3, help="times the timer is killed and restarted")
    p.add_argument("--no-network-faults", action="store_true", help="kills only, the cloud always up")
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary directory)")
    args = p.parse_args(argv)
    if args.kills < 1:
        p.error("--kills must be at least 1")

    configure("warning", stream=sys.stderr)  # stdout carries only the figures line
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rufus-chaos-"))
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    settings = ChaosSettings(
        workdir=workdir / "run", kills=args.kills, runners=args.runners, fmt=args.fmt, seed=args.seed,
        network_faults=not args.no_network_faults, outage_s=args.outage, flap_s=20.0, phase_s=4.0,
        reader_reboots=args.reader_reboots, race_s=args.kills * 2.2, drain_timeout_s=max(180.0, args.kills * 1.5),
        profile="long", log=log,
    )  # fmt: skip
    log(f"workdir {settings.workdir}")
    report = asyncio.run(run_chaos(settings))
    if not report.ok:
        print(report.problems(), file=sys.stderr)
        log(f"FAILED: evidence kept in {settings.workdir}")
    elif args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.json_line(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
