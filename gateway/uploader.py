"""Pending passings out to the cloud: the loop that picks the next batch, lingers for a burst, and waits
through a hold, a refused key or a cloud that refuses everything.

A passing leaves `Pending` only on the cloud's 2xx for the request that carried it (invariant 3); everything
else (a timeout, a reset, a 5xx, a lost response) is answered by sending the same batch again, which is safe
because the cloud dedups on (token_session, num_passing). One request is in flight at a time, in num_passing
order. The uploader never deletes or drops a passing: a row the cloud refuses is set aside as `Rejected` with
the cloud's reason (invariant 4), a closed session's rows are moved or held, a refused key stops uploading
until a new key is loaded.

Collaborators decide the rest: `verification` (what a suspicious 2xx really delivered), `rollover` (a session
the cloud closed); `uplink` is what they share (client, pacing, status).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway import failpoints
from gateway.aio import uncancellable, wait_event
from gateway.backoff import Backoff
from gateway.cloud.client import RufusClient
from gateway.errors import (
    AuthError,
    BadRequestError,
    CloudError,
    NotFoundError,
    PayloadTooLargeError,
    RetryableError,
    SessionClosedError,
)
from gateway.log import get_logger
from gateway.outbox import Outbox, OutboxRow, SessionRecord
from gateway.rollover import Rollover
from gateway.uplink import Uplink, UploaderStatus
from gateway.verification import Verdict, Verifier

__all__ = ["LINGER_MAX", "MAX_BATCH", "STATES", "Uploader", "UploaderSettings", "UploaderStatus"]

log = get_logger("gateway.uploader")

MAX_BATCH = 5000  # the cloud answers 413 above this
IDLE_POLL_S = 2.0  # a safety net under notify(): work queued by another path (a requeue, a new session) is seen
LINGER_MAX = 2  # a linger ends after this many linger_s even while passings keep arriving

REFUSAL_STREAK = 8  # rows refused alone for one reason, nothing to probe with, no 2xx: the cloud refuses everything

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
        outbox: Outbox,
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
        self._verifier = Verifier(self._uplink)
        self._limit = settings.batch_size
        self.status.batch_limit = self._limit
        self._missing_backoff = Backoff(settings.backoff_base, settings.backoff_cap)  # 2xx but not stored
        # Rows set aside since the cloud last took a passing, with its reason: put back to Pending should it
        # turn out to refuse everything (it changed its mind between a 2xx and these refusals).
        self._refusals: dict[tuple[str, int], str] = {}
        self._rollover = Rollover(
            self._uplink,
            self._verifier,
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
            self._limit = settings.batch_size
            self.status.batch_limit = self._limit
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
            rows = await self.outbox.pending(token, self._limit)
            if not rows:
                continue
            if linger and len(rows) < self._limit and self.settings.linger_s > 0:
                rows = await self._linger(token, rows)
            await self._deliver(rec, rows)
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
        while len(rows) < self._limit:
            left = give_up - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(self.settings.linger_s, left))
            more = await self.outbox.pending(token, self._limit)
            if len(more) <= len(rows):  # quiet for a linger: the burst is over
                return more or rows
            rows = more
        return rows

    async def _deliver(self, rec: SessionRecord, rows: Sequence[OutboxRow]) -> None:
        """Send `rows`, splitting on 400 down to the offending rows (invariant 4).

        A 400 that every row triggers is not a poison row but a cloud refusing everything (an API change, a
        proxy, a misconfiguration): setting the whole queue aside would turn an outage into 'Rejected' data.
        So a row refused alone is set aside only once the cloud was seen taking passings during this batch:
        a 2xx for another part, or else a probe re-sending a passing it took before (_probe). Refused too:
        the cloud refuses everything; every row stays Pending and the uploader waits (state 'refused').
        With nothing to probe with (a session that never had a 2xx), refused rows are held back while the
        split goes on: a 2xx for any part shows they are refused one by one (Rejected); after more than
        REFUSAL_STREAK refused for the same reason (or at the end of the batch), rows spread over the rest
        are tried alone (_sample), and if none goes through the cloud refuses everything."""
        token = rec.token_session
        parts: list[Sequence[OutboxRow]] = [rows]
        accepting = False  # the cloud took passings during this batch: a refusal is about its row
        held: list[OutboxRow] = []  # refused rows whose fate waits on a 2xx for some other part
        held_reason = ""
        while parts:
            part = parts.pop()
            try:
                await self._send(rec, part)
            except BadRequestError as exc:
                reason = exc.description or str(exc)
                if len(part) > 1:
                    mid = len(part) // 2
                    log.info(
                        "cloud refused a batch: splitting it to find the offending passings",
                        size=len(part),
                        reason=reason,
                    )
                    parts += [part[mid:], part[:mid]]  # first half popped first: num_passing order kept
                    continue
                row = part[0]
                if held and reason == held_reason:
                    held.append(row)
                    if len(held) > REFUSAL_STREAK or not parts:
                        sampled = await self._sample(rec, [r for p in reversed(parts) for r in p], reason)
                        if sampled == "accepts":  # a run of poison rows, not a cloud refusing everything
                            for h in held:
                                await self._reject(token, h, held_reason)
                        elif sampled == "refuses":
                            await self._refused_everywhere(token, reason)
                        return  # the next step sends the rest; a refusal then is judged with a probe
                    continue
                if held:  # another reason: the cloud judges rows one by one after all
                    for h in held:
                        await self._reject(token, h, held_reason)
                    held, accepting = [], True
                if not accepting:
                    verdict = await self._probe(token, reason)
                    if verdict == "later":
                        return  # the row stays Pending; the next step tries again
                    if verdict == "closed":
                        # The cloud judged the poison row before the session: the session is what to handle
                        # (the row moves with the rest, or is held), not a refusal to retry at once.
                        await self._rollover.session_closed(rec)
                        return
                    if verdict == "everything":
                        await self._refused_everywhere(token, reason)
                        return
                    if verdict == "unknown":
                        held, held_reason = [row], reason
                        if not parts:
                            await self._refused_everywhere(token, reason)  # nothing else to try it on
                            return
                        continue
                    accepting = True
                await self._reject(token, row, reason)
            except PayloadTooLargeError:
                if len(part) > 1:
                    self._limit = max(1, len(part) // 2)
                    self.status.batch_limit = self._limit
                    log.warning("cloud refused the batch as too large: halving the batch size", batch_size=self._limit)
                else:
                    self._uplink.alert(f"session {token}: the cloud refuses even a single passing as too large (413)")
                    await self._uplink.wait()
                return  # the rest is fetched again at the new size (held rows stay Pending: tried again)
            except SessionClosedError:
                await self._rollover.session_closed(rec)
                return
            else:
                accepting = True
                for h in held:  # the cloud took another part: the held rows are refused one by one
                    await self._reject(token, h, held_reason)
                held = []

    async def _probe(self, token: str, reason: str) -> str:
        """Does the cloud still take a passing it took before? Re-sends the session's last Sent passing (a
        duplicate: harmless, the cloud dedups on num_passing). 'row' = yes, so the refusal is about the
        row; 'everything' = refused too; 'unknown' = nothing to probe with; 'closed' = the session is closed;
        'later' = no answer now."""
        known = await self.outbox.last_sent(token)
        if known is None:
            return "unknown"
        try:
            await self._uplink.client.insert_passings(token, [known.passing])
        except BadRequestError as exc:
            log.info(
                "cloud refuses a passing it took before",
                reason=exc.description or str(exc),
                num_passing=known.passing.num_passing,
            )
            return "everything"
        except SessionClosedError:
            return "closed"
        except CloudError as exc:
            await self._uplink.failed(exc, token)
            return "later"
        self._refusals.clear()  # the cloud takes well-formed passings: what it refused so far is poison
        log.info("cloud still takes a passing it took before: the refused one is poison", reason=reason)
        return "row"

    async def _sample(self, rec: SessionRecord, rest: Sequence[OutboxRow], reason: str) -> str:
        """A run of rows refused for one reason and nothing to probe with: try up to REFUSAL_STREAK rows
        spread over the rest of the batch, each alone. 'accepts' once one goes through (it is Sent; the
        session now has a passing to probe with), 'refuses' if all are refused, 'stop' for anything else.
        Out of num_passing order, which the cloud does not mind: this runs only while nothing goes through."""
        k = min(REFUSAL_STREAK, len(rest))
        picks = sorted({round(i * (len(rest) - 1) / max(1, k - 1)) for i in range(k)}) if k else []
        for i in picks:
            try:
                await self._send(rec, [rest[i]])
            except BadRequestError:
                continue
            except PayloadTooLargeError:
                return "stop"
            except SessionClosedError:
                await self._rollover.session_closed(rec)
                return "stop"
            log.info("cloud took a passing alone after refusing a run of them: those are poison", reason=reason)
            return "accepts"
        return "refuses"

    async def _refused_everywhere(self, token: str, reason: str) -> None:
        """The cloud refuses every passing: undo the rejections since it last took one, keep everything
        Pending, and wait (run() leaves 'refused' after backoff_cap, or at once on retry_now())."""
        restored = 0
        by_session: dict[str, list[int]] = {}
        for (tok, num), why in self._refusals.items():
            if why == reason:
                by_session.setdefault(tok, []).append(num)
        for tok, nums in by_session.items():
            restored += await uncancellable(self.outbox.unreject(tok, nums, reason))
        self.status.rejected = max(0, self.status.rejected - restored)
        self.status.state = "refused"
        self.status.last_error = f"HTTP 400 for every passing: {reason}"
        log.warning(
            "cloud refuses every passing: kept Pending, none set aside",
            token_session=token,
            reason=reason,
            restored=restored,
        )
        self._uplink.alert(
            f"the cloud refuses every passing (HTTP 400: {reason}): nothing is set aside, they stay Pending; "
            f"retrying every {self.settings.backoff_cap:g} s, or at once on SIGHUP or `outbox requeue --rejected`"
        )

    async def _send(self, rec: SessionRecord, rows: Sequence[OutboxRow]) -> None:
        """One batch until the cloud answers 2xx (then Sent) or refuses it for good (raised)."""
        token = rec.token_session
        fresh = {r.passing.num_passing for r in rows if r.attempts == 0}
        while True:
            client = self._uplink.client
            # Counted before the request: a row that may have reached the cloud is never "first send" again,
            # nor voidable. States are read again at each attempt: a row the crew voided meanwhile stays out.
            live = await self.outbox.add_attempt(token, [r.passing.num_passing for r in rows])
            rows = [r for r in rows if r.passing.num_passing in live]
            if not rows:
                return
            first_sends, fresh = fresh & live, set()  # whatever becomes of this request, the next is a re-send
            nums = [r.passing.num_passing for r in rows]
            passings = [r.passing for r in rows]
            self.status.state = "sending"
            try:
                result = await client.insert_passings(token, passings)
            except RetryableError as exc:
                await self._uplink.failed(exc, token)
                continue
            except (AuthError, BadRequestError, PayloadTooLargeError, SessionClosedError):
                if client is not self._uplink.client:
                    continue  # the key was replaced during the request: ask again with the new one
                raise
            except NotFoundError as exc:
                # The API's only 404 here says "Session not found or closed". Any other (an HTML page from a
                # proxy or captive portal, a wrong base_url) says nothing about our passings: crashing would
                # put the daemon in a restart loop, so wait and try again like any outage, and say where to look.
                self._uplink.alert(
                    "HTTP 404 without the API's wording on POST /passings: check [cloud] base_url "
                    "(a proxy or captive portal answers instead of the API); retrying, nothing is dropped"
                )
                await self._uplink.failed(exc, token)
                continue
            except CloudError as exc:  # a status nobody documented: wait and try again, never drop
                await self._uplink.failed(exc, token)
                continue
            failpoints.hit("after_cloud_2xx_before_mark_sent")
            await self._uplink.succeeded(token)
            self._refusals.clear()  # the cloud takes passings: a refusal from now on is about its row
            self.status.duplicates += max(result.duplicate_count, 0)
            counted = result.inserted_count + result.duplicate_count
            short = counted < len(rows)
            if short or result.duplicate_count > 0:
                verdict = await self._verifier.verify(
                    token, rows, first_sends, result.inserted_count, result.duplicate_count
                )
            else:
                verdict = Verdict(ok=nums)
            await uncancellable(self._uplink.mark_sent(token, verdict.ok, verdict.unverified))
            if verdict.mismatched:
                await self._verifier.renumber(token, verdict.mismatched)
            if verdict.missing:
                # Left Pending: the next step sends them again. Paced, so a cloud that answers 2xx and stores
                # nothing is not hammered.
                await asyncio.sleep(self._missing_backoff.next_delay())
            else:
                self._missing_backoff.reset()
            return

    # -- refusals ---------------------------------------------------------------------------------------
    async def _reject(self, token: str, row: OutboxRow, reason: str) -> None:
        await self.outbox.mark_rejected(token, row.passing.num_passing, reason)
        self._refusals[(token, row.passing.num_passing)] = reason
        self.status.rejected += 1
        self._uplink.alert(
            f"session {token}: passing {row.passing.num_passing} (bib {row.passing.bib}) rejected by the "
            f"cloud and set aside: {reason}"
        )
