"""Standard Webhooks for police endpoints: the payload, the signed headers, the retry schedule, and
the one HTTP transport the relay sends through."""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp
from standardwebhooks import Webhook

from screening.storage.alerts import Alert
from screening.storage.scans import scan_image_url

# Standard Webhooks' example schedule (seconds before attempt n+1 after n failures): immediately,
# 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h = 75.5 h in all, so an endpoint down over a
# long weekend (72 h) still gets every alert. Jitter only lengthens a delay, never shortens it.
DEFAULT_SCHEDULE: tuple[float, ...] = (
    0.0,
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    50400.0,
    72000.0,
    86400.0,
)


# A receiver's Retry-After is obeyed up to the longest delay of the schedule; a larger (or
# non-finite) value would park the alert past the time police were promised it.
MAX_RETRY_AFTER_S = max(DEFAULT_SCHEDULE)
# How long the secret before a rotation is still signed with, by default and at most: a day lets
# the police side deploy its new secret in working hours; a week is the longest an old secret may
# stay trusted.
ROTATION_OVERLAP_S = 86400
MAX_ROTATION_OVERLAP_S = 7 * 86400
SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)  # bounds on a secret's key length, decoded


def new_secret() -> str:
    """A fresh endpoint secret in the ``whsec_`` form (24 random bytes, base64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES[0])).decode()


def check_secret(secret: str) -> str:
    """A secret supplied by an admin, checked as the signer will read it: ``whsec_`` and
    standard base64 of 24 to 64 bytes. Raises ValueError."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by standard base64") from None
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"a webhook secret's key is {low} to {high} bytes, not {len(key)}")
    return secret


# Outbox message -> Standard Webhooks event type. An alert is announced once ('created'); what
# police later learn about it (a review confirming it) is an update of the same alert.
EVENT_TYPES: Mapping[str, str] = {"created": "alert.created", "confirmed": "alert.updated"}


def webhook_id(alert: Alert, message: str = "created") -> str:
    """Stable across retries and endpoints: the receiver's idempotency key. Each message about
    an alert has its own (an update must not be discarded as a duplicate of the alert)."""
    base = f"msg_{alert.alert_id.hex}"
    return base if message == "created" else f"{base}_{message}"


def confirmation_json(alert: Alert) -> dict[str, Any] | None:
    if alert.confirmed_at is None:
        return None
    return {
        "reviewer": alert.confirmed_by,
        "confirmed_at": alert.confirmed_at.isoformat(),
        "category": alert.confirmed_category,
        "review_item_id": str(alert.confirmed_item_id) if alert.confirmed_item_id else None,
    }


def alert_payload(alert: Alert, base_url: str, message: str = "created") -> dict[str, Any]:
    """Thin payload: facts to act on and links to the audited police API for the rest. Built
    from the alert as it is when sent, so any message carries its latest state; ``revision``
    orders them (a receiver keeps the highest it has seen for an ``alert_id``)."""
    base = base_url.rstrip("/")
    data: dict[str, Any] = {
        "alert_id": str(alert.alert_id),
        "category": alert.category,
        "score": None if alert.score is None else round(float(alert.score), 4),
        "site_id": alert.site_id,
        "waybill_no": alert.waybill_no,
        "cause": alert.cause,
        "occurred_at": alert.occurred_at.isoformat(),
        "created_at": alert.created_at.isoformat(),
        "details_url": f"{base}/v1/alerts/{alert.alert_id}",
        "image_url": (
            scan_image_url(base, alert.scan_id, alert.site_id) if alert.scan_id else None
        ),
        "revision": alert.revision,
        # Where police stand with it: an update can come for an alert they have closed (a
        # review confirming it afterwards), and a receiver must not read that as a new case.
        "status": alert.status,
        "disposition": alert.disposition,
        "closed_at": alert.closed_at.isoformat() if alert.closed_at else None,
        "confirmation": confirmation_json(alert),
    }
    at = alert.created_at
    if message == "confirmed":
        data["change"] = "review_confirmed"
        at = alert.confirmed_at or at
    return {"type": EVENT_TYPES[message], "timestamp": at.isoformat(), "data": data}


def encode_body(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def signed_headers(
    secrets: str | Sequence[str], msg_id: str, body: str, now: datetime
) -> dict[str, str]:
    """``webhook-timestamp`` is the attempt's time (receivers reject stale replays by it). With
    several secrets (a rotation's window) the signature header lists one signature per secret,
    space-separated, as Standard Webhooks allows: a receiver accepts the request if any of
    them verifies with its own secret."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValueError("no secret to sign with")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(Webhook(key).sign(msg_id, now, body) for key in keys),
        "content-type": "application/json",
    }


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    delays_s: Sequence[float] = DEFAULT_SCHEDULE
    jitter: float = 0.2  # up to +20 %: spreads a recovering endpoint's backlog

    @property
    def max_attempts(self) -> int:
        return len(self.delays_s)

    def delay_after(self, attempts: int, rng: random.Random, retry_after_s: float = 0.0) -> float:
        """Seconds to wait after ``attempts`` failed attempts (1-based)."""
        base = self.delays_s[min(attempts, len(self.delays_s) - 1)]
        return max(base * (1.0 + rng.uniform(0.0, self.jitter)), retry_after_s)


@dataclass(frozen=True, slots=True)
class SendResult:
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str
    retry_after_s: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410


class Transport(Protocol):
    async def send(self, url: str, headers: Mapping[str, str], body: str) -> SendResult: ...


class HttpTransport:
    """aiohttp client; redirects are failures (Standard Webhooks), nothing is followed."""

    def __init__(self, timeout_s: float = 15.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, url: str, headers: Mapping[str, str], body: str) -> SendResult:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                url, data=body.encode(), headers=dict(headers), allow_redirects=False
            ) as resp:
                await resp.read()
                return SendResult(
                    resp.status,
                    "" if resp.status < 300 else f"HTTP {resp.status}",
                    _retry_after(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return SendResult(None, f"{exc.__class__.__name__}: {exc}"[:500])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header: delta-seconds, at most ``MAX_RETRY_AFTER_S``; 0 for
    an HTTP-date or anything unreadable (the schedule's own delay applies)."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        return 0.0
    if not math.isfinite(seconds):
        return 0.0
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)
