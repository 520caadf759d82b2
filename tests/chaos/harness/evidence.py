"""What the gateway itself met, read from its own logs rather than taken on the emulator's word.

The emulator can say it went offline; only the gateway can say it then tried to reach the cloud and was
refused. Each daemon logs, in JSON lines with a UTC timestamp, the first failure of every streak of cloud
calls (`cloud upload failed`, `cloud device sessions failed`, ...: gateway.backoff.Streak), with the error that
ended the call. A refused connect reads "connection failed: ClientConnectorError: Cannot connect to host ...
[Connect call failed ...]". A daemon that starts, or has something to send, while the cloud refuses
connections writes such a line at that instant, so counting those lines inside a phase's wall-clock window
says whether the gateway met that phase at all.

Why the logs and not the status snapshots the supervisor saves every couple of seconds: a snapshot fails
while the daemon is being restarted, and during a 5 s flap of restarts every 0.3-2.5 s none may succeed
(a CI run had none), whereas every daemon's first refused call is in its log, timestamped, flushed at once.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Iterable
from datetime import datetime

# aiohttp's wording for a connect the peer refused (asyncio's "Connect call failed", errno ECONNREFUSED);
# not a timeout, not a connection cut after it was made (a drop), not an HTTP error.
REFUSED = re.compile(r"Cannot connect to host|Connect call failed|Connection refused|ConnectionRefusedError")

Window = tuple[str, float, float]  # (phase, began, ended): time.time() seconds


def refused_at(lines: Iterable[str]) -> list[float]:
    """The instants (time.time() seconds) at which a daemon's log says a cloud call could not connect.

    Only JSON entries whose event names the cloud and whose error is a refused connect count; anything else
    (another error, a link's own failures, the plain one-line exit message, a last line cut by SIGKILL) does
    not."""
    times: list[float] = []
    for line in lines:
        if "onnect" not in line:  # cheap: most lines are not candidates, and logs are scanned during a phase
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        event, error, stamp = entry.get("event"), entry.get("error"), entry.get("timestamp")
        if not (isinstance(event, str) and event.startswith("cloud ") and isinstance(error, str)):
            continue
        if not isinstance(stamp, str) or not REFUSED.search(error):
            continue
        try:
            times.append(datetime.fromisoformat(stamp).timestamp())
        except ValueError:
            continue
    return times


def met_per_phase(windows: Iterable[Window], times: Iterable[float], phases: Collection[str]) -> Counter[str]:
    """Per phase named in `phases`, how many refused connects fall inside one of its windows (a phase run
    twice has two); every phase named is in the result, 0 if never met (or never run)."""
    spans = [(name, a, b) for name, a, b in windows if name in phases]
    met: Counter[str] = Counter({name: 0 for name in phases})
    for t in times:
        for name, a, b in spans:
            if a <= t <= b:
                met[name] += 1
                break
    return met
