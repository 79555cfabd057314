"""The flagged-parcel component: policy, intake hooks, review queue, holds, outbox relay and live
feed, started and stopped as one unit by ``create_app``'s lifecycle."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from screening.alerts.feed import FeedHub
from screening.alerts.holds import HoldPusher, Streams
from screening.alerts.intake import Clock, Intake, PolicyCache, utc_now
from screening.alerts.notifications import Notifications
from screening.alerts.police import AlertService
from screening.alerts.relay import OutboxRelay
from screening.alerts.review import ReviewService
from screening.alerts.tip import Renderer, TipLibrary, render_synthetic
from screening.alerts.webhooks import DEFAULT_SCHEDULE, HttpTransport, RetrySchedule, Transport
from screening.domain.records import PreparedEvent
from screening.errors import ServiceUnavailableError
from screening.protection import PersonalDataVault
from screening.storage import Conn
from screening.storage import alerts as store
from screening.storage.images import ImageStore
from screening.storage.scans import ScanUpload

log = logging.getLogger(__name__)


class AlertsComponent:
    """Everything of issue 5 in one object. Settings are constructor parameters (seconds, 0..1
    shares); the defaults are production values."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        vault: PersonalDataVault,
        images: ImageStore,
        streams: Streams,
        *,
        scans: Any = None,  # ScanService: runs the model over TIP images (optional)
        public_base_url: str = "http://127.0.0.1:8080",
        webhook_timeout_s: float = 15.0,
        retry_schedule_s: Sequence[float] = DEFAULT_SCHEDULE,
        retry_jitter: float = 0.2,
        relay_enabled: bool = True,
        relay_lease_s: float = 60.0,
        relay_batch: int = 32,
        relay_poll_s: float = 1.0,
        review_lease_s: float = 120.0,
        tip_rate: float = 0.02,
        tip_pool_size: int = 8,
        tip_renderer: Renderer = render_synthetic,
        clear_audit_share: float = 0.02,
        cleared_audit_share: float = 0.05,
        hold_repush_s: float = 5.0,
        hold_tick_s: float = 1.0,
        policy_ttl_s: float = 5.0,
        transport: Transport | None = None,
        clock: Clock = utc_now,
        seed: int | None = None,
    ) -> None:
        rng = random.Random(seed)
        self.pool = pool
        self.policies = PolicyCache(policy_ttl_s)
        self.intake = Intake(
            self.policies, clear_audit_share=clear_audit_share, clock=clock, rng=rng
        )
        self.tips = TipLibrary(tip_pool_size if tip_rate > 0 else 0, tip_renderer, seed)
        self._scans = scans
        self.review = ReviewService(
            pool,
            vault,
            images,
            self.policies,
            self.tips,
            lease_s=review_lease_s,
            tip_rate=tip_rate,
            cleared_audit_share=cleared_audit_share,
            detect=self._detect if scans is not None else None,
            clock=clock,
            rng=rng,
        )
        self.police = AlertService(pool, vault, self.policies, clock=clock)
        self.feed = FeedHub()
        self.holds = HoldPusher(pool, streams, repush_s=hold_repush_s, tick_s=hold_tick_s)
        self._own_transport = transport is None
        self.transport: Transport = transport or HttpTransport(webhook_timeout_s)
        self.relay: OutboxRelay | None = None
        if relay_enabled:
            self.relay = OutboxRelay(
                pool,
                self.transport,
                base_url=public_base_url,
                schedule=RetrySchedule(tuple(retry_schedule_s), retry_jitter),
                lease_s=relay_lease_s,
                batch=relay_batch,
                poll_s=relay_poll_s,
                clock=clock,
                rng=rng,
            )
        self.notifications = Notifications(pool)
        self.notifications.subscribe(store.ALERTS_CHANNEL, self.feed.wake)
        self.notifications.subscribe(store.HOLDS_CHANNEL, self.holds.wake)
        if self.relay is not None:
            self.notifications.subscribe(store.OUTBOX_CHANNEL, self.relay.wake)

    # The hooks the scan and ingest transactions call (see screening.alerts.intake).
    async def on_verdict(self, conn: Conn, upload: ScanUpload) -> None:
        await self.intake.on_verdict(conn, upload)

    async def on_events(self, conn: Conn, events: Sequence[PreparedEvent], now: datetime) -> None:
        await self.intake.on_events(conn, events, now)

    async def _detect(self, png: bytes) -> list[dict[str, Any]]:
        from screening.inference import ImageDecodeError, InferenceOverloadedError, judge
        from screening.services.scans import findings_json

        try:
            detector = await self._scans.detector()
            found = await detector.detect(png)
        except (ServiceUnavailableError, InferenceOverloadedError, ImageDecodeError):
            return []
        return findings_json(judge(found.boxes, detector.info, {}))

    async def start(self) -> None:
        await self.notifications.start()
        await self.holds.start()
        if self.relay is not None:
            await self.relay.start()

    async def close(self) -> None:
        if self.relay is not None:
            await self.relay.close()
        await self.tips.close()
        await self.holds.close()
        await self.notifications.close()
        if self._own_transport and isinstance(self.transport, HttpTransport):
            await self.transport.close()


ALERTS: web.AppKey[AlertsComponent] = web.AppKey("alerts", AlertsComponent)
# Keyword arguments for AlertsComponent set on the app before it starts (tests, the demo).
ALERT_OPTIONS: web.AppKey[dict[str, Any]] = web.AppKey("alert_options", dict)


async def acknowledge_hold(app: web.Application, sites: list[str], order_id: object) -> bool:
    """A station's ack of a hold order (``hold.ack`` with its ``hold_id``, sent once the belt is
    stopped) or of a release (``hold.release.ack`` with its ``release_id``, once it is shown)."""
    component = app.get(ALERTS)
    if component is None or not isinstance(order_id, str):
        return False
    try:
        parsed = uuid.UUID(order_id)
    except ValueError:
        return False
    return await component.police.ack_hold(sites, parsed)
