"""Is the cloud's copy at our number our passing? Read-back, comparison, and renumbering on a clash.

A duplicate reported for a passing the gateway never had acknowledged, or a 2xx that counts fewer passings than
it was sent, is suspicious (invariant 3): the batch's range is read back and each row compared by bib and
timestamp. The same comparison answers the crew's `reconcile` at the end of a race, so the daemon and the
crew cannot disagree about what "in the cloud" means: both go through `read_back` and `compare`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.aio import uncancellable
from gateway.cloud.client import RufusClient
from gateway.cloud.models import CloudPassing
from gateway.log import get_logger
from gateway.model import Passing, to_utc_ms
from gateway.store import OutboxRow
from gateway.uplink import Uplink

log = get_logger("gateway.uploader")

# The reasons a row is Sent on the 2xx's word alone (the key could not read it back); reconcile checks them.
UNVERIFIED_DUPLICATE = "duplicate, not verified: key cannot read"
UNVERIFIED_SHORT = "2xx counted fewer passings than sent, not verified: key cannot read"
UNVERIFIED = frozenset({UNVERIFIED_DUPLICATE, UNVERIFIED_SHORT})


def same_passing(ours: Passing, copy: CloudPassing) -> bool:
    """Is the cloud's copy at our number our passing? Bib and timestamp (ms) identify it."""
    return copy.bib == ours.bib and to_utc_ms(copy.timestamp) == to_utc_ms(ours.timestamp)


def unverified(row: OutboxRow) -> bool:
    """Sent without the cloud's copy having been compared (a key that could not read)."""
    return row.reason in UNVERIFIED


@dataclass(frozen=True)
class Verdict:
    """What a read-back found for rows the cloud was sent, by num_passing (each list in num_passing order)."""

    ok: list[int] = field(default_factory=list)  # held by the cloud as ours (or taken on the 2xx's word)
    mismatched: list[int] = field(default_factory=list)  # the cloud holds someone else's passing at our number
    missing: list[int] = field(default_factory=list)  # not in the cloud
    unverified: Mapping[int, str] = field(default_factory=dict)  # of `ok`, Sent on the 2xx's word alone: why

    @property
    def not_ours(self) -> list[int]:
        """What the cloud does not hold as ours, missing or someone else's."""
        return sorted([*self.missing, *self.mismatched])


def compare(rows: Sequence[OutboxRow], cloud: Iterable[CloudPassing]) -> Verdict:
    """Each of our rows against the cloud's copy at its number."""
    held = {p.num_passing: p for p in cloud}
    ok: list[int] = []
    mismatched: list[int] = []
    missing: list[int] = []
    for row in rows:
        copy = held.get(row.passing.num_passing)
        if copy is None:
            missing.append(row.passing.num_passing)
        elif same_passing(row.passing, copy):
            ok.append(row.passing.num_passing)
        else:
            mismatched.append(row.passing.num_passing)
    return Verdict(ok=ok, mismatched=mismatched, missing=missing)


async def read_back(client: RufusClient, token: str, rows: Sequence[OutboxRow]) -> Verdict:
    """One read of the rows' num_passing range, compared row by row. The client's errors go to the caller: the
    uploader retries them through an outage, a crew command reports them."""
    nums = [r.passing.num_passing for r in rows]
    return compare(rows, await client.session_passings(token, first=min(nums), last=max(nums)))


class Verifier:
    """The uploader's side: what a suspicious 2xx really delivered, and renumbering what someone else's
    passings stand on."""

    def __init__(self, uplink: Uplink) -> None:
        self._uplink = uplink

    async def verify(
        self, token: str, rows: Sequence[OutboxRow], fresh: set[int], inserted: int, duplicates: int
    ) -> Verdict:
        """The 2xx reported duplicates, or counted fewer passings than the batch held: read the batch's range
        back and compare bib and timestamp. Rows the cloud holds as ours are Sent; rows holding someone else's
        passing are renumbered; rows it does not hold stay Pending (sent again).

        Every such batch is read back, not only first sends: one GET per lost response is cheap, and it
        closes the window where a crash between a first send and its check would let a clash pass."""
        nums = [r.passing.num_passing for r in rows]
        counted = inserted + duplicates
        short = counted < len(rows)
        lo, hi = min(nums), max(nums)
        found: Verdict | None = None
        if self._uplink.can_read:
            found, allowed = await self._uplink.read_back(
                token, lambda c: read_back(c, token, rows), "duplicate read-back"
            )
            if allowed and found is None:
                found = compare(rows, ())  # a 404: the cloud holds none of them
        if found is None:  # the key may not read: the 2xx is all we have
            return self._unread(token, nums, fresh, inserted, duplicates)
        if short:
            self._uplink.alert(
                f"session {token}: the cloud answered 2xx but counted only {counted} of {len(rows)} passings "
                f"({inserted} inserted, {duplicates} duplicate) of {lo}..{hi}; read back: {len(found.ok)} held, "
                f"{len(found.missing)} missing (kept Pending, sent again), {len(found.mismatched)} someone else's"
            )
        if found.missing:
            log.warning(
                "cloud answered 2xx but does not hold these passings: sending again",
                token_session=token,
                missing=found.missing[:20],
                count=len(found.missing),
            )
        return found

    def _unread(self, token: str, nums: list[int], fresh: set[int], inserted: int, duplicates: int) -> Verdict:
        """Sent on the 2xx's word, as invariant 3 says, but tagged so reconcile can check them later."""
        counted = inserted + duplicates
        if counted < len(nums):
            self._uplink.alert(
                f"session {token}: the cloud answered 2xx but counted only {counted} of {len(nums)} passings "
                f"({inserted} inserted, {duplicates} duplicate) of {min(nums)}..{max(nums)}, and the key "
                "cannot read them back: marked Sent, not verified; run reconcile with a READ_WRITE key"
            )
            return Verdict(ok=nums, unverified=dict.fromkeys(nums, UNVERIFIED_SHORT))
        if fresh:
            self._uplink.alert(
                f"session {token}: the cloud already held {duplicates} of passings "
                f"{min(fresh)}..{max(fresh)} never sent before, and the key may not read them back to compare"
            )
            return Verdict(ok=nums, unverified=dict.fromkeys(sorted(fresh), UNVERIFIED_DUPLICATE))
        return Verdict(ok=nums)

    async def held(self, token: str, rows: Sequence[OutboxRow], check: str) -> list[int]:
        """Which of `rows` the cloud already holds as ours; none when the key may not read."""
        found, _ = await self._uplink.read_back(token, lambda c: read_back(c, token, rows), check)
        return found.ok if found is not None else []

    async def renumber(self, token: str, nums: list[int]) -> None:
        """Someone else used these numbers in our session: ours go above the cloud's highest."""
        highest, _ = await self._uplink.read_back(token, lambda c: c.max_num_passing(token), "renumber floor")
        # Unknown (a 404, a key that may not read): numbering continues above the local highest; a clash left
        # is caught the same way.
        floor = highest or 0
        moved = await uncancellable(self._uplink.outbox.renumber(token, nums, to_session=token, floor=floor))
        self._uplink.status.renumbered += len(moved)
        pairs = ", ".join(f"{a}->{b}" for a, b in sorted(moved.items())[:10])
        self._uplink.alert(
            f"session {token}: num_passing already used in the cloud by other passings (someone else numbers "
            f"in this session); {len(moved)} of ours renumbered above the cloud's highest {floor}: {pairs}"
        )
