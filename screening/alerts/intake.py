"""Where flagged parcels enter: hooks called inside the transactions that store their cause.

- ``on_verdict``: in the scan-upload transaction (``ScanService.submit``), after the
  ``xray.scanned`` event: review item, hold order and, above the police score, the alert.
- ``on_events``: in ``commit_events`` (the ingest transaction), once the new events are in the
  log and before their parcels are saved, with the newly accepted events: ``prohibited_found``
  inspections, watchlist matches on real-name registrations, and dispatches of parcels that
  are on hold.

So an alert exists if and only if its cause was committed (transactional outbox).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from screening.alerts.policy import AlertPolicy
from screening.domain.events import EventType
from screening.domain.records import PreparedEvent
from screening.storage import Conn
from screening.storage import alerts as store
from screening.storage import review as review_store
from screening.storage.scans import ScanUpload

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class PolicyCache:
    """The policy in force, re-read at most every ``ttl_s`` (a new version reaches every process
    within that time; this process sees its own updates at once)."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self._ttl_s = ttl_s
        self._policy: AlertPolicy | None = None
        self._loaded = 0.0

    def invalidate(self) -> None:
        self._policy = None

    async def get(self, conn: Conn) -> AlertPolicy:
        if self._policy is None or time.monotonic() - self._loaded > self._ttl_s:
            stored = await store.load_policy(conn)
            self._policy = AlertPolicy() if stored is None else AlertPolicy.from_rules_json(*stored)
            self._loaded = time.monotonic()
        return self._policy


class Intake:
    def __init__(
        self,
        policies: PolicyCache,
        *,
        clear_audit_share: float = 0.02,  # 0..1 of model-clear scans a human re-checks
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._policies = policies
        self.clear_audit_share = clear_audit_share
        self._clock = clock
        self._rng = rng or random.Random()

    async def on_verdict(self, conn: Conn, upload: ScanUpload) -> None:
        now = self._clock()
        policy = await self._policies.get(conn)
        assessment = policy.assess(upload.findings)
        flagged = upload.verdict == "flagged"
        kind: str | None = None
        if flagged or assessment.needs_review:
            kind = "flagged"
        elif self._rng.random() < self.clear_audit_share:
            kind = "audit"
        if kind is not None:
            await review_store.insert_item(
                conn,
                review_store.ReviewItem(
                    site_id=upload.site_id,
                    item_id=uuid.uuid4(),
                    kind=kind,
                    level=1,
                    status="pending",
                    scan_id=upload.scan_id,
                    event_id=upload.event_id,
                    waybill_no=upload.waybill_no,
                    findings=upload.findings,
                    score=assessment.top_score,
                    category=assessment.top_category,
                    image_sha256=upload.image_sha256,
                    image_type=upload.image_type,
                    tip_truth=None,
                    occurred_at=upload.occurred_at,
                    created_at=now,
                    lease_owner=None,
                    lease_until=None,
                ),
            )
        police = assessment.police_category is not None
        if (flagged or police) and upload.waybill_no:
            reason = f"flagged: {assessment.top_category or 'unknown'}"
            await store.insert_hold(
                conn, upload.site_id, uuid.uuid4(), upload.waybill_no, reason, upload.scan_id, now
            )
        if police:
            await store.insert_alert(
                conn,
                store.NewAlert(
                    site_id=upload.site_id,
                    alert_id=uuid.uuid4(),
                    # one alert per scan: a review confirming it later annotates this one
                    dedupe_key=f"scan:{upload.scan_id}",
                    cause="scan_score",
                    category=assessment.police_category or "unknown",
                    score=assessment.police_score,
                    waybill_no=upload.waybill_no,
                    scan_id=upload.scan_id,
                    source_event_id=upload.event_id,
                    policy_version=policy.version,
                    occurred_at=upload.occurred_at,
                ),
                now,
            )

    async def on_events(self, conn: Conn, events: Sequence[PreparedEvent], now: datetime) -> None:
        prohibited = [
            p
            for p in events
            if p.event_type is EventType.INSPECTION_COMPLETED
            and p.payload.get("result") == "prohibited_found"
        ]
        registrations = [p for p in events if p.personal_data is not None]
        dispatches = [p for p in events if p.event_type is EventType.PARCEL_DISPATCHED]
        # A station's own scanner verdict (no image upload here): hold it, and alert on score.
        flagged = [
            p
            for p in events
            if p.event_type is EventType.XRAY_SCANNED
            and p.payload.get("verdict") == "flagged"
            and "review" not in p.payload
        ]
        if not (prohibited or registrations or dispatches or flagged):
            return  # the common case: no query at all
        policy = await self._policies.get(conn)
        for p in flagged:
            await store.insert_hold(
                conn, p.site_id, uuid.uuid4(), p.waybill_no, "flagged by the station", None, now
            )
            assessment = policy.assess(p.payload.get("detections", []))
            if assessment.police_category is not None:
                await self._alert(
                    conn,
                    p,
                    "scan_score",
                    assessment.police_category,
                    policy,
                    now,
                    score=assessment.police_score,
                )
        if policy.inspection_prohibited_found:
            for p in prohibited:
                await store.insert_hold(
                    conn, p.site_id, uuid.uuid4(), p.waybill_no, "prohibited_found", None, now
                )
                await self._alert(conn, p, "inspection_prohibited", "prohibited_found", policy, now)
        if policy.watchlist and registrations:
            digests = [
                p.personal_data.document_hmac for p in registrations if p.personal_data is not None
            ]
            matches = await store.match_watchlist(conn, digests)
            for p in registrations:
                if p.personal_data is not None and p.personal_data.document_hmac in matches:
                    await self._alert(conn, p, "watchlist", "watchlist_match", policy, now)
        if dispatches:
            held = await store.open_holds_of(conn, [p.parcel_key for p in dispatches])
            held_keys = {(h.site_id, h.waybill_no): h for h in held}
            for p in dispatches:
                hold = held_keys.get(p.parcel_key)
                if hold is not None:
                    await self._alert(
                        conn, p, "dispatched_while_held", "dispatched_while_held", policy, now
                    )

    async def _alert(
        self,
        conn: Conn,
        p: PreparedEvent,
        cause: str,
        category: str,
        policy: AlertPolicy,
        now: datetime,
        score: float | None = None,
    ) -> None:
        await store.insert_alert(
            conn,
            store.NewAlert(
                site_id=p.site_id,
                alert_id=uuid.uuid4(),
                dedupe_key=f"{cause}:{p.event_id}",
                cause=cause,
                category=category,
                score=score,
                waybill_no=p.waybill_no,
                scan_id=None,
                source_event_id=p.event_id,
                policy_version=policy.version,
                occurred_at=p.occurred_at,
            ),
            now,
        )
