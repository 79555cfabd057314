"""Store-and-forward to the gateway: scans out (``POST /v1/scans``), hold orders in (WebSocket).

Contract (see PROTOCOL.md, "Gateway"):

* ``POST {gateway}/v1/scans``, ``Authorization: Bearer <key>``, multipart parts ``metadata``
  (JSON), ``image`` (PNG RGB), ``high`` / ``low`` (PNG 16-bit attenuation).
  201 accepted, 200 duplicate -> done; 401 or 403 forbidden_role -> pending + alarm (the key,
  not the scan);
  409 conflict and other 4xx -> dead + alarm;
  503 -> retry after ``Retry-After`` (at most the backoff maximum); other 5xx, connection errors
  and anything unforeseen in one attempt -> retry with backoff.
* ``GET {gateway}/v1/stations/stream`` (WebSocket): ``{"type": "hold", ...}`` in,
  ``{"type": "hold.ack", "hold_id": ...}`` out; ``{"type": "hold.release", ...}`` in,
  ``{"type": "hold.release.ack", "release_id": ...}`` out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import cv2
import numpy as np

from .assembler import ParcelScan
from .errors import (
    FileImportError,
    KeyRefusedError,
    PermanentUploadError,
    SpoolError,
    TransientUploadError,
)
from .spool import Spool, SpoolRecord
from .video import VideoScan

log = logging.getLogger("firmware_bridge.uplink")
# The forwarder looks at the spool at least this often while it waits: an operator's tool in
# another process (firmware_bridge.dead) may make a scan due without waking it.
IDLE_LOOK_S = 60.0


def _png(image: np.ndarray[Any, Any]) -> bytes:
    # level 1: PNG size within ~10% of level 6 at a fraction of the CPU on a small bridge box
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise FileImportError("PNG encoding failed")
    return bytes(buf.tobytes())


def scan_metadata(
    scan: ParcelScan, *, site_id: str, scanner_id: str | None = None
) -> dict[str, Any]:
    return {
        "scan_id": scan.scan_id,
        "site_id": site_id,
        "scanner_id": scanner_id or scan.device_id,
        "waybill_no": scan.waybill_no,
        "occurred_at": scan.occurred_at.isoformat(),
        "line_count": scan.line_count,
        "pixels_per_line": scan.pixels_per_line,
    }


def spool_record(scan: ParcelScan, *, site_id: str, scanner_id: str | None = None) -> SpoolRecord:
    """Encode a scan for the spool and the wire (CPU-bound: call it off the event loop)."""
    return SpoolRecord(
        scan_id=scan.scan_id,
        metadata=scan_metadata(scan, site_id=site_id, scanner_id=scanner_id),
        image=_png(cv2.cvtColor(scan.image, cv2.COLOR_RGB2BGR)),
        high=_png(scan.high),
        low=_png(scan.low),
    )


def video_record(scan: VideoScan, *, site_id: str, scanner_id: str | None = None) -> SpoolRecord:
    """A parcel cut from a monitor video: pseudo-colour only (no attenuation is available)."""
    metadata = {
        "scan_id": scan.scan_id,
        "site_id": site_id,
        "scanner_id": scanner_id or scan.source_id,
        "waybill_no": scan.waybill_no,
        "occurred_at": scan.occurred_at.isoformat(),
        "line_count": scan.line_count,
        "pixels_per_line": int(scan.image.shape[1]),
    }
    image = _png(cv2.cvtColor(scan.image, cv2.COLOR_RGB2BGR))
    return SpoolRecord(scan_id=scan.scan_id, metadata=metadata, image=image)


class GatewayClient:
    """One upload = one POST; maps the gateway's answers onto the error tree."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        gateway: str,
        key: str,
        *,
        timeout: float = 30.0,
        min_upload_bytes_per_s: float = 64 * 1024,
    ) -> None:
        self._session = session
        self.gateway = gateway.rstrip("/")
        self._headers = {"Authorization": f"Bearer {key}"}
        self._timeout_s = timeout
        self._min_rate = min_upload_bytes_per_s

    def timeout_for(self, record: SpoolRecord) -> aiohttp.ClientTimeout:
        """The whole upload's deadline: ``timeout`` plus the body's time at the slowest rate
        we wait for (64 KiB/s, about 0.5 Mbit/s, by default). With a fixed deadline a large
        dual-energy scan on a slow station line timed out every time, and was sent again and
        again, whole, without ever arriving."""
        return aiohttp.ClientTimeout(total=self._timeout_s + record.size / self._min_rate)

    async def upload(self, record: SpoolRecord) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps(record.metadata), content_type="application/json")
        form.add_field("image", record.image, content_type="image/png", filename="image.png")
        if record.high is not None:
            form.add_field("high", record.high, content_type="image/png", filename="high.png")
        if record.low is not None:
            form.add_field("low", record.low, content_type="image/png", filename="low.png")
        try:
            async with self._session.post(
                f"{self.gateway}/v1/scans",
                data=form,
                headers=self._headers,
                timeout=self.timeout_for(record),
            ) as resp:
                # Bytes, decoded leniently: an error page from a proxy in front of the gateway
                # may be in any charset, and is only ever shown in a log line.
                text = (await resp.read()).decode("utf-8", errors="replace")
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientUploadError(f"gateway unreachable: {exc!r}") from exc
        body = _json_or_text(text)
        if status in (200, 201):
            # Only the gateway's own answer about this very scan means it is stored: a proxy or
            # captive portal answering 200 with a page of its own must not get the images
            # deleted from the spool.
            answer_for = _uuid(body.get("scan_id"))
            if answer_for is None or answer_for != _uuid(record.metadata.get("scan_id")) or (
                body.get("result") not in ("accepted", "duplicate")
            ):
                raise TransientUploadError(
                    f"a {status} that is not the gateway's answer for this scan: {text[:200]!r}"
                )
            return body
        code = str(body.get("code")) if "code" in body else None
        if status == 503:
            raise TransientUploadError(
                f"gateway overloaded: {body}", retry_after=_seconds(retry_after)
            )
        if status == 401 or (status == 403 and code == "forbidden_role"):
            # The key (wrong, rotated, revoked, or of a role that may not upload), not the scan;
            # a 403 for the scan's own site is the scan's and goes to dead below.
            raise KeyRefusedError(f"gateway refused the station key: {status} {body}")
        if status == 409 or (400 <= status < 500 and status not in (408, 429)):
            raise PermanentUploadError(
                f"gateway rejected scan: {status} {body}", status=status, code=code
            )
        raise TransientUploadError(
            f"gateway error {status}: {body}", retry_after=_seconds(retry_after)
        )


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _json_or_text(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return {"detail": text[:500]}
    return value if isinstance(value, dict) else {"detail": value}


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(slots=True)
class UplinkStats:
    uploaded: int = 0
    duplicates: int = 0
    retries: int = 0
    dead: int = 0
    last_upload_at: datetime | None = None
    last_error: str | None = None


class Forwarder:
    """Sends due spool entries one at a time (in order), retrying with capped jittered backoff."""

    def __init__(
        self,
        spool: Spool,
        client: GatewayClient,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 300.0,
        on_dead: Callable[[str, str], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        now: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.client = client
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = UplinkStats()
        self._on_dead = on_dead
        self._clock = wall_clock  # for the spool's due times, which outlive the process
        self._monotonic = monotonic  # for the pause, which does not: no clock step moves it
        self._now = now or (lambda: datetime.now().astimezone())
        self._wake = asyncio.Event()
        # The gateway, not just one scan, is failing: consecutive transient failures and the
        # pause before the next attempt of any scan (else a backlog of thousands is tried back
        # to back against a gateway that is down, or that asked for a Retry-After).
        self._failures = 0
        self._paused_until = 0.0

    def wake(self) -> None:
        """A new scan is in the spool."""
        self._wake.set()

    def _backoff(self, attempts: int) -> float:
        # "full jitter" (uniform 0.5..1 of the cap) keeps many bridges from retrying in step
        cap = min(self.backoff_max, self.backoff_initial * 2 ** min(attempts, 20))
        return float(cap * random.uniform(0.5, 1.0))

    async def run(self) -> None:
        while True:
            try:
                await self._step()
            except SpoolError as exc:
                # the scans are still on disk (or the disk is gone): alarm and try again
                self.stats.last_error = str(exc)
                log.critical("ALARM forwarder cannot use the spool: %s", exc)
                await asyncio.sleep(5.0)

    async def _step(self) -> None:
        """Send the next due scan, or wait until one is due or a new one arrives."""
        pause = self._paused_until - self._monotonic()
        if pause > 0:  # new scans do not cut this short: the gateway is what we wait for
            await asyncio.sleep(pause)
        # clear before looking, so a scan spooled while we look still wakes us
        self._wake.clear()
        now = self._clock()
        # A due time past now + the longest backoff was planned before the clock went back.
        record = await asyncio.to_thread(self.spool.next_due, now, now + self.backoff_max)
        if record is None:
            due = await asyncio.to_thread(self.spool.next_due_at)
            wait = IDLE_LOOK_S if due is None else max(0.0, due - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(wait, IDLE_LOOK_S))
            return
        await self._send(record)

    def _delay(self, exc: TransientUploadError, attempts: int) -> float:
        if exc.retry_after is None:
            return self._backoff(attempts)
        # a gateway (or a proxy) asking for 1e9 s or inf must not park the scan for good
        return min(exc.retry_after, self.backoff_max)

    async def _retry(self, record: SpoolRecord, error: str, delay: float) -> None:
        self.stats.retries += 1
        self.stats.last_error = error
        self._failures += 1
        gateway_wait = delay if self._failures == 1 else max(delay, self._backoff(self._failures))
        self._paused_until = self._monotonic() + min(gateway_wait, self.backoff_max)
        await asyncio.to_thread(self.spool.mark_retry, record.scan_id, error, self._clock() + delay)

    async def _send(self, record: SpoolRecord) -> None:
        try:
            result = await self.client.upload(record)
        except KeyRefusedError as exc:
            # Every scan would fail alike: wait long between tries, and say what to fix.
            log.critical(
                "ALARM %s: scans stay in the spool until the bridge runs with a valid --key", exc
            )
            await self._retry(record, str(exc), self.backoff_max)
        except TransientUploadError as exc:
            delay = self._delay(exc, record.attempts)
            log.warning("scan %s: %s; retry in %.1f s", record.scan_id, exc, delay)
            await self._retry(record, str(exc), delay)
        except PermanentUploadError as exc:
            self._failures = 0  # the gateway answered: it is up
            self.stats.dead += 1
            self.stats.last_error = str(exc)
            log.critical("ALARM scan %s rejected by the gateway: %s", record.scan_id, exc)
            await asyncio.to_thread(self.spool.mark_dead, record.scan_id, str(exc), self._clock())
            if self._on_dead is not None:
                self._on_dead(record.scan_id, str(exc))
        except Exception as exc:
            # Unforeseen (a bug, an odd answer): the scan is safe in the spool, so this attempt
            # counts as transient; ending the forwarder would strand every later scan.
            delay = self._backoff(record.attempts)
            log.error(
                "scan %s: upload failed unexpectedly; retry in %.1f s",
                record.scan_id,
                delay,
                exc_info=True,
            )
            await self._retry(record, f"unexpected: {exc!r}", delay)
        else:
            self._failures = 0
            if result.get("result") == "duplicate":
                self.stats.duplicates += 1
            else:
                self.stats.uploaded += 1
            self.stats.last_upload_at = self._now()
            await asyncio.to_thread(self.spool.mark_sent, record.scan_id, result, self._clock())


# -- hold orders ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldOrder:
    hold_id: str
    waybill_no: str
    reason: str


@dataclass(frozen=True, slots=True)
class HoldReleaseOrder:
    release_id: str
    hold_id: str
    waybill_no: str
    resolution: str  # released or seized


class HoldListener:
    """Keeps the station WebSocket open; each hold is handed to ``on_hold`` and each release to
    ``on_release``, and then acked (a release by its own ``release_id``)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        gateway: str,
        key: str,
        on_hold: Callable[[HoldOrder], Awaitable[None]],
        on_release: Callable[[HoldReleaseOrder], Awaitable[None]] | None = None,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self._session = session
        self.url = gateway.rstrip("/") + "/v1/stations/stream"
        self._headers = {"Authorization": f"Bearer {key}"}
        self._on_hold = on_hold
        self._on_release = on_release
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connected = False
        self.holds_received = 0
        self.releases_received = 0
        self.failures = 0  # orders that could not be applied (not acked: the gateway re-sends)

    async def run(self) -> None:
        delay = self.backoff_initial
        while True:
            try:
                async with self._session.ws_connect(
                    self.url, headers=self._headers, heartbeat=20.0
                ) as ws:
                    self.connected = True
                    delay = self.backoff_initial
                    log.info("hold stream connected: %s", self.url)
                    async for msg in ws:
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        await self._handle(ws, msg.data)
            except (aiohttp.ClientError, TimeoutError, SpoolError) as exc:
                log.warning("hold stream %s: %r", self.url, exc)
            finally:
                self.connected = False
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.backoff_max)

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, data: str) -> None:
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError):
            log.warning("hold stream: not JSON: %.200s", data)
            return
        if isinstance(msg, dict) and msg.get("type") == "hold.release":
            await self._handle_release(ws, msg)
            return
        if not isinstance(msg, dict) or msg.get("type") != "hold":
            return
        hold_id, waybill = msg.get("hold_id"), msg.get("waybill_no")
        if not isinstance(hold_id, str) or not isinstance(waybill, str):
            log.error("hold stream: malformed hold %.200s", data)
            return
        self.holds_received += 1
        order = HoldOrder(hold_id, waybill, str(msg.get("reason", "")))
        if await self._apply(self._on_hold(order), hold_id):
            await ws.send_str(json.dumps({"type": "hold.ack", "hold_id": hold_id}))

    async def _handle_release(
        self, ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any]
    ) -> None:
        release_id, hold_id = msg.get("release_id"), msg.get("hold_id")
        waybill, resolution = msg.get("waybill_no"), msg.get("resolution")
        if not all(isinstance(v, str) for v in (release_id, hold_id, waybill, resolution)):
            log.error("hold stream: malformed release %.200s", json.dumps(msg))
            return
        self.releases_received += 1
        order = HoldReleaseOrder(str(release_id), str(hold_id), str(waybill), str(resolution))
        if self._on_release is not None and not await self._apply(
            self._on_release(order), order.release_id
        ):
            return
        await ws.send_str(json.dumps({"type": "hold.release.ack", "release_id": order.release_id}))

    async def _apply(self, handling: Awaitable[None], order_id: str) -> bool:
        """Await one order's handler; False (and no ack) when it failed. One order that cannot
        be applied must not end the stream that carries every later hold."""
        try:
            await handling
        except Exception:
            self.failures += 1
            log.critical(
                "ALARM hold stream: order %.80s not applied (not acked; the gateway re-sends it)",
                order_id,
                exc_info=True,
            )
            return False
        return True
