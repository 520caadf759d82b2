"""One batch to the cloud: sent until a 2xx (then Sent, after a read-back when the answer is suspicious), and a
refusal judged as a poison row or a cloud that refuses everything.

A 400 for one batch is split down to the offending rows, which are set aside as `Rejected` (invariant 4). But a
400 that every row triggers is not a poison row: it is a cloud refusing everything (an API change, a proxy, a
misconfiguration), and setting the whole queue aside would turn an outage into 'Rejected' data. So a row
refused alone is set aside only once the cloud was seen taking passings; what a refusal means is a `Refusal`,
and how a batch's delivery ended an `Outcome` the loop acts on.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence

from gateway import errors, failpoints
from gateway.aio import uncancellable
from gateway.backoff import Backoff
from gateway.log import get_logger
from gateway.store import OutboxRow, SessionRecord
from gateway.uplink import Uplink
from gateway.verification import Verdict, Verifier

log = get_logger("gateway.uploader")

REFUSAL_STREAK = 8  # rows refused alone for one reason, nothing to probe with, no 2xx: the cloud refuses everything


class Outcome(enum.Enum):
    """How delivering one batch ended: what the loop does next."""

    DONE = "each row Sent, Rejected, or left Pending for the next step"
    LATER = "no answer to judge a refusal by: the rows stay Pending and the next step tries again"
    TOO_LARGE = "413: the batch size is halved (or a single passing is too large and the step waited)"
    REFUSED = "the cloud refuses every passing: all stay Pending, none set aside; wait before trying again"
    SESSION_CLOSED = "the session takes no more passings: its rows are the rollover's to move or hold"


class Refusal(enum.Enum):
    """What a 400 for a row sent alone means."""

    ROW = "the cloud takes other passings: this one is poison"
    EVERYTHING = "the cloud refuses passings it took before: it refuses everything"
    UNKNOWN = "nothing to tell by: the session never had a passing taken"
    SESSION_CLOSED = "the session is closed: that is what to handle, not the row"
    LATER = "no answer now"


class Delivery:
    def __init__(self, uplink: Uplink, verifier: Verifier, *, batch_size: int, backoff: Backoff) -> None:
        self._uplink = uplink
        self._verifier = verifier
        self.limit = batch_size  # the batch size in use: halved on 413
        uplink.status.batch_limit = batch_size
        self._missing_backoff = backoff  # paces re-sends of passings a 2xx did not store
        # Rows set aside since the cloud last took a passing, with its reason: put back to Pending should it
        # turn out to refuse everything (it changed its mind between a 2xx and these refusals).
        self._refusals: dict[tuple[str, int], str] = {}

    def resize(self, batch_size: int) -> None:
        """A reloaded batch_size: the size in use from now on (a 413 may have halved the old one)."""
        self.limit = batch_size
        self._uplink.status.batch_limit = batch_size

    async def deliver(self, rec: SessionRecord, rows: Sequence[OutboxRow]) -> Outcome:
        """Send `rows`, splitting on 400 down to the offending rows (invariant 4).

        A row refused alone is set aside only once the cloud was seen taking passings during this batch: a 2xx
        for another part, or else a probe re-sending a passing it took before (`probe`). Refused too: the
        cloud refuses everything; every row stays Pending (REFUSED). With nothing to probe with (a session that
        never had a 2xx), refused rows are held back while the split goes on: a 2xx for any part shows they are
        refused one by one (Rejected); after more than REFUSAL_STREAK refused for the same reason (or at the end
        of the batch), rows spread over the rest are tried alone (`sample`), and if none goes through the cloud
        refuses everything."""
        token = rec.token_session
        parts: list[Sequence[OutboxRow]] = [rows]
        accepting = False  # the cloud took passings during this batch: a refusal is about its row
        held: list[OutboxRow] = []  # refused rows whose fate waits on a 2xx for some other part
        held_reason = ""
        while parts:
            part = parts.pop()
            try:
                await self._send(token, part)
            except errors.BadRequestError as exc:
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
                        # The next step sends the rest; a refusal then is judged with a probe.
                        sampled = await self.sample(token, [r for p in reversed(parts) for r in p], reason)
                        if sampled is Refusal.ROW:  # a run of poison rows, not a cloud refusing everything
                            await self._reject_all(token, held, held_reason)
                            return Outcome.DONE
                        return await self._judged(token, sampled, reason)
                    continue
                if held:  # another reason: the cloud judges rows one by one after all
                    await self._reject_all(token, held, held_reason)
                    held, accepting = [], True
                if not accepting:
                    verdict = await self.probe(token, reason)
                    if verdict is Refusal.UNKNOWN:
                        held, held_reason = [row], reason
                        if not parts:  # nothing else to try it on
                            return await self._judged(token, Refusal.EVERYTHING, reason)
                        continue
                    if verdict is not Refusal.ROW:
                        return await self._judged(token, verdict, reason)
                    accepting = True
                await self._reject(token, row, reason)
            except errors.PayloadTooLargeError:
                if len(part) > 1:
                    self.resize(max(1, len(part) // 2))
                    log.warning("cloud refused the batch as too large: halving the batch size", batch_size=self.limit)
                else:
                    self._uplink.alert(f"session {token}: the cloud refuses even a single passing as too large (413)")
                    await self._uplink.wait()
                return Outcome.TOO_LARGE  # the rest is fetched again at the new size (held rows stay Pending)
            except errors.SessionClosedError:
                return Outcome.SESSION_CLOSED
            else:
                accepting = True
                # The cloud took another part: the held rows are refused one by one.
                await self._reject_all(token, held, held_reason)
                held = []
        return Outcome.DONE

    async def _judged(self, token: str, refusal: Refusal, reason: str) -> Outcome:
        """A refusal that is not about one row: what becomes of the batch."""
        if refusal is Refusal.SESSION_CLOSED:
            # The cloud judged the poison row before the session: the session is what to handle (the row moves
            # with the rest, or is held), not a refusal to retry at once.
            return Outcome.SESSION_CLOSED
        if refusal is Refusal.EVERYTHING:
            await self._refused_everywhere(token, reason)
            return Outcome.REFUSED
        return Outcome.LATER

    async def probe(self, token: str, reason: str) -> Refusal:
        """Does the cloud still take a passing it took before? Re-sends the session's last Sent passing (a
        duplicate: harmless, the cloud dedups on num_passing)."""
        known = await self._uplink.outbox.last_sent(token)
        if known is None:
            return Refusal.UNKNOWN
        try:
            await self._uplink.client.insert_passings(token, [known.passing])
        except errors.BadRequestError as exc:
            log.info(
                "cloud refuses a passing it took before",
                reason=exc.description or str(exc),
                num_passing=known.passing.num_passing,
            )
            return Refusal.EVERYTHING
        except errors.SessionClosedError:
            return Refusal.SESSION_CLOSED
        except errors.CloudError as exc:
            await self._uplink.failed(exc, token)
            return Refusal.LATER
        self._refusals.clear()  # the cloud takes well-formed passings: what it refused so far is poison
        log.info("cloud still takes a passing it took before: the refused one is poison", reason=reason)
        return Refusal.ROW

    async def sample(self, token: str, rest: Sequence[OutboxRow], reason: str) -> Refusal:
        """A run of rows refused for one reason and nothing to probe with: try up to REFUSAL_STREAK rows
        spread over the rest of the batch, each alone. ROW once one goes through (it is Sent; the session now
        has a passing to probe with), EVERYTHING if all are refused. Out of num_passing order, which the cloud
        does not mind: this runs only while nothing goes through."""
        k = min(REFUSAL_STREAK, len(rest))
        picks = sorted({round(i * (len(rest) - 1) / max(1, k - 1)) for i in range(k)}) if k else []
        for i in picks:
            try:
                await self._send(token, [rest[i]])
            except errors.BadRequestError:
                continue
            except errors.PayloadTooLargeError:
                return Refusal.LATER
            except errors.SessionClosedError:
                return Refusal.SESSION_CLOSED
            log.info("cloud took a passing alone after refusing a run of them: those are poison", reason=reason)
            return Refusal.ROW
        return Refusal.EVERYTHING

    async def _refused_everywhere(self, token: str, reason: str) -> None:
        """The cloud refuses every passing: undo the rejections since it last took one, keep everything
        Pending; the loop waits (state 'refused') backoff_cap, or less on retry_now()."""
        restored = 0
        by_session: dict[str, list[int]] = {}
        for (tok, num), why in self._refusals.items():
            if why == reason:
                by_session.setdefault(tok, []).append(num)
        for tok, nums in by_session.items():
            restored += await uncancellable(self._uplink.outbox.unreject(tok, nums, reason))
        status = self._uplink.status
        status.rejected = max(0, status.rejected - restored)
        status.last_error = f"HTTP 400 for every passing: {reason}"
        log.warning(
            "cloud refuses every passing: kept Pending, none set aside",
            token_session=token,
            reason=reason,
            restored=restored,
        )
        self._uplink.alert(
            f"the cloud refuses every passing (HTTP 400: {reason}): nothing is set aside, they stay Pending; "
            f"retrying every {self._uplink.backoff_cap:g} s, or at once on SIGHUP or `outbox requeue --rejected`"
        )

    async def _reject_all(self, token: str, rows: Sequence[OutboxRow], reason: str) -> None:
        for row in rows:
            await self._reject(token, row, reason)

    async def _reject(self, token: str, row: OutboxRow, reason: str) -> None:
        await self._uplink.outbox.mark_rejected(token, row.passing.num_passing, reason)
        self._refusals[(token, row.passing.num_passing)] = reason
        self._uplink.status.rejected += 1
        self._uplink.alert(
            f"session {token}: passing {row.passing.num_passing} (bib {row.passing.bib}) rejected by the "
            f"cloud and set aside: {reason}"
        )

    async def _send(self, token: str, rows: Sequence[OutboxRow]) -> None:
        """One batch until the cloud answers 2xx (then Sent) or refuses it for good (raised)."""
        up = self._uplink
        outbox = up.outbox
        fresh = {r.passing.num_passing for r in rows if r.attempts == 0}
        while True:
            client = up.client
            # Counted before the request: a row that may have reached the cloud is never "first send" again,
            # nor voidable. States are read again at each attempt: a row the crew voided meanwhile stays out.
            live = await outbox.add_attempt(token, [r.passing.num_passing for r in rows])
            rows = [r for r in rows if r.passing.num_passing in live]
            if not rows:
                return
            first_sends, fresh = fresh & live, set()  # whatever becomes of this request, the next is a re-send
            up.status.state = "sending"
            try:
                result = await client.insert_passings(token, [r.passing for r in rows])
            except errors.RetryableError as exc:
                await up.failed(exc, token)
                continue
            except (errors.AuthError, errors.BadRequestError, errors.PayloadTooLargeError, errors.SessionClosedError):
                if client is not up.client:
                    continue  # the key was replaced during the request: ask again with the new one
                raise
            except errors.NotFoundError as exc:
                # The API's only 404 here says "Session not found or closed". Any other (an HTML page from a
                # proxy or captive portal, a wrong base_url) says nothing about our passings: crashing would
                # put the daemon in a restart loop, so wait and try again like any outage, and say where to look.
                up.alert(
                    "HTTP 404 without the API's wording on POST /passings: check [cloud] base_url "
                    "(a proxy or captive portal answers instead of the API); retrying, nothing is dropped"
                )
                await up.failed(exc, token)
                continue
            except errors.CloudError as exc:  # a status nobody documented: wait and try again, never drop
                await up.failed(exc, token)
                continue
            failpoints.hit("after_cloud_2xx_before_mark_sent")
            await up.succeeded(token)
            self._refusals.clear()  # the cloud takes passings: a refusal from now on is about its row
            up.status.duplicates += max(result.duplicate_count, 0)
            counted = result.inserted_count + result.duplicate_count
            if counted < len(rows) or result.duplicate_count > 0:
                verdict = await self._verifier.verify(
                    token, rows, first_sends, result.inserted_count, result.duplicate_count
                )
            else:
                verdict = Verdict(ok=[r.passing.num_passing for r in rows])
            await uncancellable(up.mark_sent(token, verdict.ok, verdict.unverified))
            if verdict.mismatched:
                await self._verifier.renumber(token, verdict.mismatched)
            if verdict.missing:
                # Left Pending: the next step sends them again. Paced, so a cloud that answers 2xx and stores
                # nothing is not hammered.
                await asyncio.sleep(self._missing_backoff.next_delay())
            else:
                self._missing_backoff.reset()
            return
