"""What the uploader's parts share: the outbox, the current client, the status they report to, and the pacing
of calls to the cloud through an outage (backoff, the outage streak, alerts).

The loop (`uploader`), the delivery, the verification and the session rollover each decide something of their
own; they all call the cloud through one `Uplink`, so one outage is one streak and one backoff whoever meets it,
a key that may not read is recorded in one place, and the status page sees one picture.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from gateway import lifecycle
from gateway.backoff import Backoff, Streak
from gateway.cloud.client import RufusClient
from gateway.errors import AuthError, CloudError, NotFoundError, RetryableError
from gateway.log import get_logger
from gateway.store import Store

log = get_logger("gateway.uploader")

T = TypeVar("T")

MAX_ALERTS = 50


@dataclass
class UploaderStatus:
    """Plain attributes for the status page and the metrics exporter (they read, never write)."""

    state: str = "idle"
    last_success_at: float | None = None  # time.time() of the last 2xx
    last_error: str | None = None
    outage_started_at: float | None = None  # time.time() of the first failure of the current streak
    batches_sent: int = 0
    passings_sent: int = 0  # rows marked Sent
    duplicates: int = 0  # the cloud's duplicate_count, summed
    rejected: int = 0
    renumbered: int = 0
    retries: int = 0
    batch_limit: int = 0  # the batch size in use (halved on 413)
    can_read: bool = True
    held_sessions: list[str] = field(default_factory=list)  # closed sessions whose passings wait for the crew
    held_reason: str | None = None  # uploads held ([clock] hold_uploads_until_synced): why
    alerts: list[str] = field(default_factory=list)


class Uplink:
    def __init__(
        self, outbox: Store, client: RufusClient, status: UploaderStatus, *, backoff_base: float, backoff_cap: float
    ) -> None:
        self.outbox = outbox
        self.status = status
        self.client = client  # replaced on a reload (SIGHUP); each call takes the one current when it starts
        self.backoff_cap = backoff_cap  # also how long a refused cloud or a closed session is left alone
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._streak = Streak("cloud upload", log)
        self._clock_alerted = False

    @property
    def can_read(self) -> bool:
        return lifecycle.can_read(self.client)

    def pace(self, backoff_base: float, backoff_cap: float) -> None:
        """New backoff settings (a reload): the next wait follows them."""
        self.backoff_cap = backoff_cap
        self._backoff = Backoff(backoff_base, backoff_cap)

    def read_denied(self, where: str) -> None:
        """The key may not read: recorded once on the client (lifecycle.read_denied) and shown on the status."""
        lifecycle.read_denied(self.client, where)
        self.status.can_read = False

    # -- reads a safety check needs -----------------------------------------------------------------------
    async def read_back(
        self, token: str, fn: Callable[[RufusClient], Awaitable[T]], check: str
    ) -> tuple[T | None, bool]:
        """A read a safety check needs: (what the cloud holds, None for a 404; whether the key may read). A
        403 means it may not: recorded (read_denied) and the caller carries on without that check. Any other
        refusal is the caller's to handle."""
        try:
            return await self.read(token, fn), True
        except NotFoundError:
            return None, True
        except AuthError as exc:
            if exc.status != 403:
                raise
            self.read_denied(check)
            return None, False

    async def read(self, token: str, fn: Callable[[RufusClient], Awaitable[T]]) -> T:
        """A GET for a safety check, retried through outages like an upload."""
        while True:
            try:
                result = await fn(self.client)
            except RetryableError as exc:
                await self.failed(exc, token)
                continue
            await self.succeeded(token)
            return result

    # -- pacing -------------------------------------------------------------------------------------------
    async def failed(self, exc: CloudError, token: str) -> None:
        """A call that did not go through: counted, the streak's first failure warned about, then waited out
        (the server's Retry-After when it gave one)."""
        self.status.retries += 1
        self.status.last_error = str(exc)
        if not self._streak.down:
            self.status.outage_started_at = time.time()
        self._streak.failed(str(exc), status=exc.status, token_session=token)
        retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
        if isinstance(exc, RetryableError) and exc.clock_suspect and not self._clock_alerted:
            self._clock_alerted = True
            self.alert(
                "the cloud's TLS certificate is not yet valid for our clock: the system clock is probably "
                "wrong (no RTC, no NTP yet); reader timestamps may be wrong too"
            )
        self.status.state = "backoff"
        await self.wait(retry_after)

    async def wait(self, retry_after: float | None = None) -> None:
        """One backoff step: capped full jitter, or the server's Retry-After."""
        await asyncio.sleep(self._backoff.next_delay(retry_after))

    async def succeeded(self, token: str) -> None:
        self.status.last_success_at = time.time()
        if self._streak.down:
            pending = (await self.outbox.stats()).pending
            self._streak.succeeded(pending=pending, token_session=token)
            self.status.outage_started_at = None
        self._backoff.reset()

    # -- bookkeeping --------------------------------------------------------------------------------------
    async def mark_sent(self, token: str, nums: Sequence[int], unverified: Mapping[int, str] | None = None) -> None:
        """Sent, with a reason on the rows whose presence in the cloud could not be checked (the crew sees it
        in `outbox list` and `reconcile`)."""
        tagged = dict(unverified or {})
        plain = [n for n in nums if n not in tagged]
        marked = await self.outbox.mark_sent(token, plain) if plain else 0
        for reason in sorted(set(tagged.values())):
            marked += await self.outbox.mark_sent(token, [n for n, r in tagged.items() if r == reason], reason=reason)
        self.status.batches_sent += 1
        self.status.passings_sent += marked

    def alert(self, message: str) -> None:
        if self.status.alerts and self.status.alerts[-1] == message:
            return  # a condition that persists is one alert, not one per retry
        log.error(message)
        self.status.alerts.append(message)
        del self.status.alerts[:-MAX_ALERTS]
