"""The image reviewers' queue: lease the next item, decide (confirm / clear / escalate) or skip
it, sample cleared scans for audit, project synthetic threats (TIP) and score each reviewer on them.

A skip is not a decision: it gives the lease back at once, so the item is anyone's to take, and is
remembered so that the skipping reviewer gets every other waiting item before this one again.

Every decision is one transaction: the decision row (reviewer = API key id, time), the item's
state, and its consequences — a police alert on confirm (or, when the scan's score already alerted
police, that alert annotated and sent as an update: one alert per scan), the hold released on
clear, the review outcome appended to the event log for compliance. Projected (TIP) items have no
consequences.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from screening.alerts.errors import LeaseLostError, UnknownAlertError
from screening.alerts.intake import Clock, PolicyCache, utc_now
from screening.alerts.outcomes import append_review_event, lock_parcel
from screening.alerts.tip import TipLibrary
from screening.domain.access import Principal
from screening.domain.compliance import uncleared_flags
from screening.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from screening.protection import PersonalDataVault
from screening.storage import alerts as store
from screening.storage import events as event_store
from screening.storage import review as review_store
from screening.storage.images import ImageStore
from screening.storage.review import ReviewItem

DECISIONS = ("confirm", "clear", "escalate")
# Optional: run the X-ray model over a TIP image so it shows boxes like any flagged scan.
Detect = Callable[[bytes], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class Decision:
    item_id: uuid.UUID
    decision: str
    reviewer: str
    decided_at: datetime
    level: int
    alert_id: uuid.UUID | None = None
    audit_item_id: uuid.UUID | None = None


class ReviewService:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        vault: PersonalDataVault,
        images: ImageStore,
        policies: PolicyCache,
        tips: TipLibrary,
        *,
        lease_s: float = 120.0,  # a reviewer judges an image in ~10 s; 2 min covers a pause
        tip_rate: float = 0.02,  # 0..1 of served items that are projected threats
        cleared_audit_share: float = 0.05,  # 0..1 of reviewer-cleared items re-judged at level 2
        detect: Detect | None = None,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._vault = vault
        self.images = images
        self._policies = policies
        self._tips = tips
        self.lease = timedelta(seconds=lease_s)
        self.tip_rate = tip_rate
        self.cleared_audit_share = cleared_audit_share
        self._detect = detect
        self._clock = clock
        self._rng = rng or random.Random()

    @staticmethod
    def _scope(principal: Principal) -> list[str] | None:
        return None if principal.sites is None else sorted(principal.sites)

    async def next(self, principal: Principal) -> ReviewItem | None:
        now = self._clock()
        sites = self._scope(principal)
        if sites is not None and self.tip_rate > 0 and self._rng.random() < self.tip_rate:
            tip = await self._project(principal, sites, now)
            if tip is not None:
                return tip
        async with self._pool.acquire() as conn:
            level = await review_store.reviewer_level(conn, principal.key_id)
            return await review_store.lease_next(
                conn, sites, level, now, principal.key_id, now + self.lease
            )

    async def _project(
        self, principal: Principal, sites: list[str], now: datetime
    ) -> ReviewItem | None:
        image = self._tips.draw()
        if image is None or not sites:
            return None
        digest = await asyncio.to_thread(self.images.put, image.png, "png")
        findings = await self._detect(image.png) if self._detect is not None else []
        item = ReviewItem(
            site_id=self._rng.choice(sites),
            item_id=uuid.uuid4(),
            kind="tip",
            level=1,
            status="pending",
            scan_id=None,
            event_id=None,
            waybill_no=None,
            findings=findings,
            score=max((float(f["score"]) for f in findings), default=None),
            category=None,
            image_sha256=digest,
            image_type="png",
            tip_truth=image.truth,
            occurred_at=now,
            created_at=now,
            lease_owner=principal.key_id,
            lease_until=now + self.lease,
        )
        async with self._pool.acquire() as conn:
            await review_store.insert_item(conn, item)
        return item

    async def get(self, principal: Principal, item_id: uuid.UUID) -> ReviewItem:
        async with self._pool.acquire() as conn:
            item = await review_store.get_item(conn, item_id, self._scope(principal))
        if item is None:
            raise UnknownAlertError("no such review item in your sites", code="unknown_review_item")
        return item

    async def decide(
        self,
        principal: Principal,
        item_id: uuid.UUID,
        decision: str,
        category: str | None,
        note: str,
    ) -> Decision:
        if decision not in DECISIONS:
            raise BadRequestError("decision is confirm, clear or escalate", code="invalid_decision")
        now = self._clock()
        reviewer = principal.key_id
        async with self._pool.acquire() as conn, conn.transaction():
            item = await self._locked_item(conn, principal, item_id)
            if not _holds_lease(item, reviewer, now):
                if retried := await self._retried(conn, item, reviewer, decision):
                    return retried
                raise LeaseLostError(LEASE_LOST)
            if decision == "escalate" and item.level >= 2:
                raise ConflictError("level 2 is the last level", code="cannot_escalate")
            await review_store.insert_decision(
                conn, item, uuid.uuid4(), reviewer, now, decision, category, note
            )
            if decision == "escalate":
                await review_store.escalate_item(conn, item)
                return Decision(item.item_id, decision, reviewer, now, item.level)
            chosen = category or item.category
            await review_store.finish_item(conn, item, decision, reviewer, now, chosen)
            if item.kind == "tip":
                return Decision(item.item_id, decision, reviewer, now, item.level)
            if decision == "confirm":
                alert_id = await self._confirm(conn, item, chosen, reviewer, now)
                return Decision(item.item_id, decision, reviewer, now, item.level, alert_id)
            audit_id = await self._clear(conn, item, reviewer, now)
            return Decision(
                item.item_id, decision, reviewer, now, item.level, audit_item_id=audit_id
            )

    @staticmethod
    async def _retried(
        conn: Any, item: ReviewItem, reviewer: str, decision: str
    ) -> Decision | None:
        """The decision as recorded, when this is its retry (the answer to the first try was
        lost): the item finished by this reviewer with it, or escalated by them and waiting
        at level 2 (which returns an escalated item to no one at level 1)."""
        if item.status == "done" and item.decided_by == reviewer and item.decision == decision:
            assert item.decided_at is not None  # set with the decision
            return Decision(item.item_id, decision, reviewer, item.decided_at, item.level)
        if decision == "escalate" and item.status == "pending" and item.level >= 2:
            found = await review_store.own_decision(conn, item, reviewer, "escalate")
            if found is not None:
                return Decision(item.item_id, decision, reviewer, found[0], found[1])
        return None

    async def skip(self, principal: Principal, item_id: uuid.UUID) -> None:
        """Give the item back now instead of at lease expiry. Idempotent: skipping again an item
        you have already skipped (and not taken since) changes nothing."""
        now = self._clock()
        reviewer = principal.key_id
        async with self._pool.acquire() as conn, conn.transaction():
            item = await self._locked_item(conn, principal, item_id)
            if not _holds_lease(item, reviewer, now):
                if item.lease_owner != reviewer and await review_store.skipped_at(
                    conn, item, reviewer
                ):
                    return  # a retried skip
                raise LeaseLostError(LEASE_LOST)
            await review_store.release_lease(conn, item)
            await review_store.record_skip(conn, item, reviewer, now)

    async def _locked_item(
        self, conn: Any, principal: Principal, item_id: uuid.UUID
    ) -> ReviewItem:
        """The item, row-locked for this transaction, if it is in the principal's sites."""
        item = await review_store.get_item(conn, item_id, self._scope(principal), for_update=True)
        if item is None:
            raise UnknownAlertError("no such review item in your sites", code="unknown_review_item")
        return item

    async def _confirm(
        self, conn: Any, item: ReviewItem, category: str | None, reviewer: str, now: datetime
    ) -> uuid.UUID:
        """One police alert per scan: the scan's own alert if its score already raised one
        (annotated with this confirmation, sent to police as an update), else a new one."""
        if item.waybill_no:
            await lock_parcel(conn, item.site_id, item.waybill_no)
        policy = await self._policies.get(conn)
        key = f"scan:{item.scan_id}" if item.scan_id is not None else f"review:{item.item_id}"
        confirmed = await store.confirm_alert(
            conn,
            store.NewAlert(
                site_id=item.site_id,
                alert_id=uuid.uuid4(),
                dedupe_key=key,  # the same key as intake's score alert (screening.alerts.intake)
                cause="review_confirmed",
                category=category or "unknown",
                score=item.score,
                waybill_no=item.waybill_no,
                scan_id=item.scan_id,
                source_event_id=item.event_id,
                policy_version=policy.version,
                occurred_at=item.occurred_at,
            ),
            store.Confirmation(reviewer, now, item.item_id, category, item.level),
            now,
        )
        if confirmed.closed:
            # Police closed this alert already (seized it, or found nothing at the parcel): the
            # confirmation is on the alert and sent to them as an update, but their disposition
            # stands. Holding the parcel again, or logging "confirmed" over their clearance,
            # would stop a parcel that police settled, with no open alert left to release it.
            return confirmed.alert_id
        if item.waybill_no:  # an audit sample that turns out bad is held now
            await store.insert_hold(
                conn,
                item.site_id,
                uuid.uuid4(),
                item.waybill_no,
                f"confirmed: {category or 'unknown'}",
                item.scan_id,
                now,
            )
        if item.event_id is not None:
            await append_review_event(
                conn,
                self._vault,
                item.site_id,
                item.event_id,
                "confirmed",
                reviewer,
                f"review:{item.item_id}",
                now,
            )
        return confirmed.alert_id

    @staticmethod
    async def _uncleared_flags(conn: Any, site_id: str, waybill_no: str) -> list[uuid.UUID]:
        key = (site_id, waybill_no)
        return uncleared_flags((await event_store.load_parcel_events(conn, [key]))[key])

    async def _clear(
        self, conn: Any, item: ReviewItem, reviewer: str, now: datetime
    ) -> uuid.UUID | None:
        police_decide = False
        if item.waybill_no:
            await lock_parcel(conn, item.site_id, item.waybill_no)
            # Police already alerted on this parcel decide its release (closing the alert):
            # a reviewer's clear must not let it go while they may be on their way.
            police_decide = await store.parcel_has_open_alert(
                conn, item.site_id, item.waybill_no
            )
            # The parcel's one hold covers all its flagged scans: clearing one of them releases
            # it only when no other scan still waits for a reviewer and no other flag stands
            # uncleared (a station's own, say: no image, so no review item; police release
            # that one). An audit sample never held the parcel, so clearing it releases
            # nothing.
            if (
                not police_decide
                and item.kind == "flagged"
                and not await review_store.other_flags_pending(
                    conn, item.site_id, item.waybill_no, item.item_id
                )
                and not set(await self._uncleared_flags(conn, item.site_id, item.waybill_no))
                - {item.event_id}
            ):
                await store.close_parcel_hold(
                    conn, item.site_id, item.waybill_no, "released", now, reviewer
                )
        if item.event_id is not None and not police_decide:
            await append_review_event(
                conn,
                self._vault,
                item.site_id,
                item.event_id,
                "cleared",
                reviewer,
                f"review:{item.item_id}",
                now,
            )
        if item.kind == "flagged" and self._rng.random() < self.cleared_audit_share:
            audit = ReviewItem(
                site_id=item.site_id,
                item_id=uuid.uuid4(),
                kind="audit",
                level=2,
                status="pending",
                scan_id=item.scan_id,
                event_id=item.event_id,
                waybill_no=item.waybill_no,
                findings=item.findings,
                score=item.score,
                category=item.category,
                image_sha256=item.image_sha256,
                image_type=item.image_type,
                tip_truth=None,
                occurred_at=item.occurred_at,
                created_at=now,
                lease_owner=None,
                lease_until=None,
            )
            if await review_store.insert_item(conn, audit):
                return audit.item_id
        return None

    async def set_level(self, key_id: str, level: int) -> None:
        if level not in (1, 2):
            raise BadRequestError("level is 1 or 2", code="invalid_level")
        async with self._pool.acquire() as conn:
            if not await review_store.set_reviewer_level(conn, key_id, level):
                raise NotFoundError("no live reviewer or admin key has that id", code="unknown_key")

    async def stats(
        self,
        principal: Principal,
        site_id: str | None = None,
        first: date | None = None,
        last: date | None = None,
    ) -> list[dict[str, Any]]:
        """Per reviewer over the principal's sites (or one of them), optionally between two days
        (each site's own time zone): decisions, TIP hits and misses, false alarms."""
        scope = self._scope(principal)
        if site_id is not None:
            if not principal.covers(site_id):
                raise ForbiddenError("this key does not cover that site", code="forbidden_site")
            scope = [site_id]
        if first is not None and last is not None and first > last:
            raise BadRequestError("from is after to", code="invalid_period")
        async with self._pool.acquire() as conn:
            rows = await review_store.reviewer_stats(conn, scope, first, last)
        out = []
        for r in rows:
            projected = r["tip_hits"] + r["tip_misses"]
            out.append(
                {
                    "reviewer": r["reviewer"],
                    "label": r["label"],
                    "level": r["level"],
                    "decisions": r["decisions"],
                    "confirms": r["confirms"],
                    "clears": r["clears"],
                    "escalations": r["escalations"],
                    "tip_projected": projected,
                    "tip_hits": r["tip_hits"],
                    "tip_misses": r["tip_misses"],
                    "hit_rate": r["tip_hits"] / projected if projected else None,
                    "miss_rate": r["tip_misses"] / projected if projected else None,
                    "false_alarms": r["false_alarms"],
                    "false_alarm_rate": r["false_alarms"] / r["confirms"]
                    if r["confirms"]
                    else None,
                }
            )
        return out


LEASE_LOST = "you no longer hold this item's lease; take the next one"


def _holds_lease(item: ReviewItem, reviewer: str, now: datetime) -> bool:
    """A pending item whose unexpired lease is this reviewer's: theirs to decide or skip."""
    return (
        item.status == "pending"
        and item.lease_owner == reviewer
        and item.lease_until is not None
        and item.lease_until > now
    )
