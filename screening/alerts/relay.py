"""The outbox relay: claims due webhook deliveries under a lease, sends them, records the outcome.

At-least-once: a delivery row leaves 'pending' only after a 2xx (or after the schedule is spent,
into the dead letters). Several gateway processes run a relay each; ``FOR UPDATE SKIP LOCKED`` plus
the lease give each delivery to one relay, so in the normal path every alert is sent once. A relay
killed mid-send leaves its lease to expire; another relay then sends again with the same
``webhook-id``, which the receiver uses to de-duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from screening.alerts.webhooks import (
    RetrySchedule,
    SendResult,
    Transport,
    alert_payload,
    encode_body,
    signed_headers,
    webhook_id,
)
from screening.background import cancel_and_wait
from screening.storage import alerts as store

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        transport: Transport,
        *,
        base_url: str,
        schedule: RetrySchedule | None = None,
        lease_s: float = 60.0,  # > the transport timeout: a live relay never loses its lease
        batch: int = 32,
        poll_s: float = 1.0,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._transport = transport
        self._base_url = base_url
        self.schedule = schedule or RetrySchedule()
        self._lease = timedelta(seconds=lease_s)
        self._batch = batch
        self._poll_s = poll_s
        self._clock = clock
        self._rng = rng or random.Random()
        self.owner = f"relay-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    def wake(self, _payload: str = "") -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self.owner}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                handled = await self.run_once()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("outbox relay: database error %r; retrying", exc)
                handled = 0
            except Exception:  # a bug must not stop every alert of every site for good
                log.exception("outbox relay: unexpected error; retrying")
                handled = 0
            if handled >= self._batch:
                continue  # a backlog: keep going without waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and send them concurrently; returns how many."""
        now = self._clock()
        async with self._pool.acquire() as conn:
            claimed = await store.claim_deliveries(
                conn, now, self._batch, now + self._lease, self.owner
            )
        if claimed:
            await asyncio.gather(*(self._deliver_or_retry(d) for d in claimed))
        return len(claimed)

    async def _deliver_or_retry(self, d: store.ClaimedDelivery) -> None:
        """Deliver; a delivery that raises (an unsignable secret, a bug) is failed like an
        unanswered attempt and retried on the schedule, without stopping the batch."""
        try:
            await self._deliver(d)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            raise  # the database: the lease expires and the delivery is claimed again
        except Exception as exc:
            log.exception("alert %s to %s: delivery raised", d.alert.alert_id, d.endpoint_id)
            await self._record(d, SendResult(None, f"{exc.__class__.__name__}: {exc}"[:500]))

    async def _deliver(self, d: store.ClaimedDelivery) -> None:
        body = encode_body(alert_payload(d.alert, self._base_url, d.message))
        now = self._clock()
        headers = signed_headers(d.secrets(now), webhook_id(d.alert, d.message), body, now)
        await self._record(d, await self._transport.send(d.url, headers, body))

    async def _record(self, d: store.ClaimedDelivery, result: SendResult) -> None:
        """Store an attempt's outcome: delivered, dead (410 or retries spent) or retry later."""
        now = self._clock()
        async with self._pool.acquire() as conn:
            if result.delivered:
                self.sent += 1
                await store.mark_delivered(conn, d, self.owner, now, result.status or 200)
                return
            self.failed += 1
            if result.gone:  # 410: the receiver asks us to stop; an admin re-enables
                async with conn.transaction():
                    await store.set_endpoint_enabled(conn, d.endpoint_id, False, "410 Gone")
                    await store.mark_dead(conn, d, self.owner, result.status, "endpoint gone")
                log.warning("webhook endpoint %s answered 410; disabled", d.endpoint_id)
                return
            if d.attempts >= self.schedule.max_attempts:
                await store.mark_dead(conn, d, self.owner, result.status, result.error)
                log.error("alert %s to %s: retries exhausted", d.alert.alert_id, d.endpoint_id)
                return
            delay = self.schedule.delay_after(d.attempts, self._rng, result.retry_after_s)
            await store.mark_retry(
                conn, d, self.owner, now + timedelta(seconds=delay), result.status, result.error
            )
