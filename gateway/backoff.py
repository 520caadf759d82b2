"""Reconnect/retry pacing shared by links and the uploader (aiomqtt style).

Delays come from tenacity's full-jitter strategy, `uniform(0, min(cap, base * 2**n))`; a server's
Retry-After is honoured as a floor. `Streak` keeps logs quiet: the first failure of a streak is a warning,
the rest are debug, and the recovery says how long the outage lasted.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import tenacity

from gateway.log import get_logger

MAX_RETRY_AFTER = 600.0  # never sleep longer than this on a server's say-so


class Backoff:
    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self._wait = tenacity.wait_random_exponential(multiplier=base, max=cap)
        self.attempts = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        self.attempts += 1
        state = cast(tenacity.RetryCallState, SimpleNamespace(attempt_number=self.attempts))
        delay = float(self._wait(state))
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def reset(self) -> None:
        self.attempts = 0


class Streak:
    """Failure-streak bookkeeping for one thing that can be down (a link, the cloud)."""

    def __init__(self, what: str, logger: Any | None = None) -> None:
        self.what = what
        self.log = logger or get_logger("gateway.backoff")
        self.failures = 0
        self.down_since: float | None = None  # time.time() of the first failure of the current streak
        self.last_error: str | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, error: str, **fields: Any) -> None:
        self.failures += 1
        self.last_error = error
        if self.down_since is None:
            self.down_since = time.time()
            self.log.warning(f"{self.what} failed", error=error, **fields)
        else:
            self.log.debug(f"{self.what} still failing", error=error, failures=self.failures, **fields)

    def succeeded(self, **fields: Any) -> float | None:
        """Mark success; returns the outage length in seconds if this ends a streak."""
        if self.down_since is None:
            return None
        outage = time.time() - self.down_since
        self.log.info(f"{self.what} recovered", outage_s=round(outage, 1), failures=self.failures, **fields)
        self.down_since = None
        self.failures = 0
        self.last_error = None
        return outage
