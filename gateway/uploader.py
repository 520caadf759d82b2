"""Pending passings out to the cloud: the loop that picks the next batch, lingers for a burst, and waits
through a hold, a refused key or a cloud that refuses everything.

A passing leaves `Pending` only on the cloud's 2xx for the request that carried it (invariant 3); everything
else (a timeout, a reset, a 5xx, a lost response) is answered by sending the same batch again, which is safe
because the cloud dedups on (token_session, num_passing). One request is in flight at a time, in num_passing
order. The uploader never deletes or drops a passing: a row the cloud refuses is set aside as `Rejected` with
the cloud's reason (invariant 4), a closed session's rows are moved or held, a refused key stops uploading
until a new key is loaded.

The decisions are its collaborators': `delivery` (one batch, and whether a refusal is a poison row or a cloud
refusing everything), `verification` (what a suspicious 2xx really delivered), `rollover` (a session the cloud
closed); `uplink` is what they share (client, pacing, status).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.aio import wait_event
from gateway.backoff import Backoff
from gateway.cloud.client import RufusClient
from gateway.delivery import Delivery, Outcome
from gateway.errors import AuthError
from gateway.log import get_logger
from gateway.rollover import Rollover
from gateway.store import OutboxRow, Store
from gateway.uplink import Uplink, UploaderStatus
from gateway.verification import Verifier

__all__ = ["LINGER_MAX", "MAX_BATCH", "STATES", "Uploader", "UploaderSettings", "UploaderStatus"]

log = get_logger("gateway.uploader")

MAX_BATCH = 5000  # the cloud answers 413 above this
IDLE_POLL_S = 2.0  # a safety net under notify(): work queued by another path (a requeue, a new session) is seen
LINGER_MAX = 2  # a linger ends after this many linger_s even while passings keep arriving

STATES = ("idle", "sending", "backoff", "auth_failed", "refused", "session_closed", "no_session", "held")


@dataclass(frozen=True)
class UploaderSettings:
    batch_size: int = 500
    linger_s: float = 0.1
    follow_active_session: bool = False
    deviceid: str | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, got {self.batch_size}")
        if self.linger_s < 0 or self.backoff_base <= 0 or self.backoff_cap <= 0:
            raise ValueError("linger_s must be >= 0, backoff_base and backoff_cap > 0")


class Uploader:
    def __init__(
        self,
        outbox: Store,
        client: RufusClient,
        settings: UploaderSettings,
        *,
        wake: asyncio.Event | None = None,
        can_read: bool = True,
        hold: Callable[[], str | None] | None = None,
    ) -> None:
        self.outbox = outbox
        self._hold_uploads = hold  # a reason to send nothing for now (the clock guard's), or None
        self.settings = settings
        self._wake = wake or asyncio.Event()
        self._no_linger = False  # set by notify(waited=True): the next batch goes without a linger
        self._client_changed = asyncio.Event()
        self._retry = asyncio.Event()  # leave 'refused' now rather than after backoff_cap
        self.status = UploaderStatus()
        self._uplink = Uplink(
            outbox, client, self.status, backoff_base=settings.backoff_base, backoff_cap=settings.backoff_cap
        )
        verifier = Verifier(self._uplink)
        self._delivery = Delivery(
            self._uplink,
            verifier,
            batch_size=settings.batch_size,
            backoff=Backoff(settings.backoff_base, settings.backoff_cap),  # paces 2xx-but-not-stored re-sends
        )
        self._rollover = Rollover(
            self._uplink,
            verifier,
            follow_active_session=settings.follow_active_session,
            deviceid=settings.deviceid,
        )
        if not can_read:
            self._uplink.read_denied("start-up probe")
        self.status.can_read = self.can_read

    # -- control ----------------------------------------------------------------------------------------
    @property
    def client(self) -> RufusClient:
        return self._uplink.client

    @property
    def can_read(self) -> bool:
        return self._uplink.can_read

    def notify(self, *, waited: bool = False) -> None:
        """New work: the pipeline derived passings, or the crew requeued some. `waited`: they come from
        duplicate windows that closed on the clock, so they have waited a whole window already and go out
        without lingering for company (the window's end is the latency a crew configured, not plus a linger)."""
        if waited:
            self._no_linger = True
        self._wake.set()

    def update_client(self, client: RufusClient) -> None:
        """A reloaded config (SIGHUP): use the new client from the next request on; leaves auth_failed."""
        self._uplink.client = client
        self.status.can_read = self.can_read
        self._client_changed.set()
        self.retry_now()

    def reconfigure(self, settings: UploaderSettings) -> None:
        """A reloaded config (SIGHUP) with new batch_size, linger_s, backoff or follow_active_session: the
        settings are replaced, and so is the state derived from them (the batch size in use, which a 413 may
        have halved; the backoff; sessions held because following was off)."""
        old, self.settings = self.settings, settings
        if settings.batch_size != old.batch_size:
            self._delivery.resize(settings.batch_size)
        if (settings.backoff_base, settings.backoff_cap) != (old.backoff_base, old.backoff_cap):
            self._uplink.pace(settings.backoff_base, settings.backoff_cap)
        self._rollover.follow(settings.follow_active_session)
        self.notify()

    def retry_now(self) -> None:
        """Try again at once (SIGHUP, `outbox requeue --rejected`): leaves 'refused' without waiting it out."""
        self._retry.set()
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Upload forever. Cancel-safe between requests; a cancel during a request abandons it and its rows
        stay Pending (a later run re-sends them; the cloud counts the duplicates)."""
        was_idle = True
        while True:
            if self.status.state == "auth_failed":
                await self._client_changed.wait()
                self._client_changed.clear()
                self.status.state = "idle"
                log.info("new API key loaded: resuming uploads")
            if self.status.state == "refused":
                # Not on notify(): every new read would otherwise cost a round of refused requests.
                await wait_event(self._retry, self.settings.backoff_cap)
                self.status.state = "idle"
                log.info("trying again after the cloud refused every passing")
            if self._held_back():
                self._wake.clear()
                await wait_event(self._wake, IDLE_POLL_S)
                continue
            self._retry.clear()
            self._wake.clear()  # before looking, so a notify() during the look is not lost
            client = self.client
            linger, self._no_linger = was_idle and not self._no_linger, False
            try:
                worked = await self._step(linger=linger)
            except AuthError as exc:
                if self.client is not client:
                    continue  # refused the old key while a new one was being loaded: try the new one
                self._client_changed.clear()
                self.status.state = "auth_failed"
                self.status.last_error = str(exc)
                self._uplink.alert(
                    f"the cloud refused the API key ({exc.status}): uploads stopped, reads are still stored; "
                    "fix the key and reload the config (SIGHUP)"
                )
                continue
            was_idle = not worked
            if not worked:
                await wait_event(self._wake, IDLE_POLL_S)

    def _held_back(self) -> bool:
        """Whether uploads wait (the passings stay Pending, nothing is lost); a change is logged once."""
        reason = self._hold_uploads() if self._hold_uploads is not None else None
        if reason is not None and self.status.held_reason is None:
            log.warning("uploads held", reason=reason)
        elif reason is None and self.status.held_reason is not None:
            log.info("uploads resumed")
            self.status.state = "idle"
        self.status.held_reason = reason
        if reason is not None:
            self.status.state = "held"
        return reason is not None

    async def _step(self, *, linger: bool) -> bool:
        """Send one batch of the oldest session with work; False when there is nothing to send."""
        now = time.monotonic()
        current = await self.outbox.current_session()
        current_token = current.token_session if current else None
        for rec in await self.outbox.sessions():
            token = rec.token_session
            if self._rollover.waits(token, current_token, now):
                continue
            rows = await self.outbox.pending(token, self._delivery.limit)
            if not rows:
                continue
            if linger and len(rows) < self._delivery.limit and self.settings.linger_s > 0:
                rows = await self._linger(token, rows)
            outcome = await self._delivery.deliver(rec, rows)
            if outcome is Outcome.SESSION_CLOSED:
                await self._rollover.session_closed(rec)
            elif outcome is Outcome.REFUSED:
                self.status.state = "refused"  # run() waits before trying again
            return True
        if current is None:
            self.status.state = "no_session"
        elif self._rollover.holds(current.token_session):
            self.status.state = "session_closed"
        else:
            self.status.state = "idle"
        return False

    async def _linger(self, token: str, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Idle until now: a burst (a pack crossing the mat) is probably still arriving, commit by commit. Wait
        until it has been quiet for linger_s, so the whole burst joins one request, however long its commits
        take; but no longer than LINGER_MAX times linger_s in all, so a steady flow still goes out, nor once a
        batch is full."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + LINGER_MAX * self.settings.linger_s
        while len(rows) < self._delivery.limit:
            left = give_up - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(self.settings.linger_s, left))
            more = await self.outbox.pending(token, self._delivery.limit)
            if len(more) <= len(rows):  # quiet for a linger: the burst is over
                return more or rows
            rows = more
        return rows
