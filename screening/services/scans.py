"""X-ray scan uploads: check the image, run the detector, judge the verdict, store it as an
``xray.scanned`` event so it counts for compliance — idempotent by the client's scan id."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import struct
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import asyncpg
import cv2
import numpy as np
import numpy.typing as npt

from screening.api.schemas import DetectionIn, XrayScannedIn
from screening.domain.access import Principal
from screening.errors import (
    BadRequestError,
    ConflictError,
    FieldError,
    ForbiddenError,
    InvalidEventError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from screening.inference import (
    Detector,
    DetectorConfig,
    ImageDecodeError,
    InferenceError,
    InferenceOverloadedError,
    ModelLoadError,
    Verdict,
    judge,
)
from screening.inference.preprocess import decode_image
from screening.protection import PersonalDataVault
from screening.services.ingest import commit_events, prepare
from screening.storage import Conn
from screening.storage import scans as scan_store
from screening.storage import sites as site_store
from screening.storage.errors import StorageError
from screening.storage.images import ImageStore
from screening.storage.ledger import LedgerTips
from screening.storage.scans import ScanUpload

log = logging.getLogger(__name__)

SCAN_EVENT_NAMESPACE = uuid.UUID("6f1c2a5e-3b7d-4c1e-9a57-0d2b8e4f6a13")
MIN_SIDE = 32  # px; a smaller "parcel image" is a broken upload


class ScanOutcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class ScanLimits:
    max_image_bytes: int
    max_image_pixels: int


@dataclass(frozen=True, slots=True)
class ScanMetadata:
    scan_id: uuid.UUID
    site_id: str
    scanner_id: str
    waybill_no: str | None
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class ImageInfo:
    kind: str  # "png" or "jpeg"
    width: int
    height: int


def _invalid(code: str, path: str, message: str) -> InvalidEventError:
    return InvalidEventError(message, [FieldError(code, path, message)], code=code)


def image_info(data: bytes, part: str) -> ImageInfo:
    """Type and size from the header alone, before any decoding (no decompression bombs)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise _invalid("invalid_image", part, "truncated PNG header")
        width, height = struct.unpack(">II", data[16:24])
        return ImageInfo("png", width, height)
    if data.startswith(b"\xff\xd8"):
        size = _jpeg_frame_size(data)
        if size is None:
            raise _invalid("invalid_image", part, "truncated or malformed JPEG")
        return ImageInfo("jpeg", *size)
    raise _invalid("unsupported_image_type", part, "expected a PNG or JPEG image")


_JPEG_FRAMES = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE))


def _jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the JPEG's first frame header, walking its segments as the decoder
    reads them (ITU T.81 B.1.1.2): any number of 0xFF fill bytes may precede a marker, and
    RSTn/TEM stand alone. A walk that skipped a fill byte as a segment would land somewhere
    the decoder does not look, and take a crafted small 'size' there for the real one. None:
    anything else (bytes between segments, a scan before any frame, a truncated header)."""
    i = 2
    while i < len(data):
        if data[i] != 0xFF:
            return None
        while i < len(data) and data[i] == 0xFF:
            i += 1
        if i + 3 > len(data):
            return None
        marker = data[i]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 1
            continue
        if marker in (0xD8, 0xD9, 0xDA, 0x00):  # a second SOI, EOI or a scan before a frame
            return None
        length = struct.unpack(">H", data[i + 1 : i + 3])[0]
        if length < 2:
            return None
        if marker in _JPEG_FRAMES:
            if i + 8 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 4 : i + 8])
            return width, height
        i += 1 + length
    return None


def check_shape(info: ImageInfo, limits: ScanLimits, part: str) -> None:
    if min(info.width, info.height) < MIN_SIDE:
        raise _invalid(
            "invalid_image_shape", part, f"image is {info.width}x{info.height}; min {MIN_SIDE} px"
        )
    if info.width * info.height > limits.max_image_pixels:
        raise PayloadTooLargeError(
            f"{part} has {info.width}x{info.height} pixels; at most {limits.max_image_pixels}",
            code="image_too_large",
        )


def colourise_pair(high: bytes, low: bytes) -> bytes:
    """Pseudo-colour PNG from the bridge's 16-bit attenuation pair (firmware_bridge.colour)."""
    from firmware_bridge.colour import from_u16, pseudo_colour

    arrays: list[npt.NDArray[np.uint16]] = []
    for name, data in (("high", high), ("low", low)):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise _invalid("invalid_image", name, f"{name} is not a decodable image")
        if img.dtype != np.uint16 or img.ndim != 2:
            raise _invalid("invalid_image_shape", name, f"{name} must be 16-bit single-channel")
        arrays.append(img.astype(np.uint16, copy=False))
    if arrays[0].shape != arrays[1].shape:
        raise _invalid("invalid_image_shape", "low", "high and low images differ in size")
    rgb = pseudo_colour(from_u16(arrays[0]), from_u16(arrays[1]))
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - encoding a valid array does not fail
        raise _invalid("invalid_image", "high", "could not colourise the pair")
    return bytes(encoded.tobytes())


def content_digest(
    meta: ScanMetadata, image: str | None, high: str | None, low: str | None
) -> bytes:
    """What a resend of this scan must match: its metadata, the time in UTC (one instant
    written with two offsets is one scan), and the SHA-256 of each part as sent (``image``
    None for a raw pair sent alone: a resend is judged before the pair is colourised)."""
    doc = {
        "v": 2,
        "site_id": meta.site_id,
        "scanner_id": meta.scanner_id,
        "waybill_no": meta.waybill_no,
        "occurred_at": meta.occurred_at.astimezone(UTC).isoformat(),
        "image": image,
        "high": high,
        "low": low,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).digest()


def legacy_content_digest(
    meta: ScanMetadata, image: str, high: str | None, low: str | None
) -> bytes:
    """The digest gateways before ``content_digest`` v2 stored: the time with the offset as
    sent, and ``image`` the SHA-256 of the colour image made from a raw pair."""
    doc = {
        "site_id": meta.site_id,
        "scanner_id": meta.scanner_id,
        "waybill_no": meta.waybill_no,
        "occurred_at": meta.occurred_at.isoformat(),
        "image": image,
        "high": high,
        "low": low,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).digest()


def findings_json(verdict: Verdict) -> list[dict[str, Any]]:
    return [
        {
            "class_name": f.class_name,
            "category": f.category,
            "alert": f.alert,
            "score": round(f.score, 4),
            "box": [round(v, 1) for v in f.box],
            "threshold": f.threshold,
        }
        for f in verdict.findings
    ]


VerdictHook = Callable[[Conn, ScanUpload], Awaitable[None]]


async def _no_verdict_hook(conn: Conn, upload: ScanUpload) -> None:
    return None


class ScanService:
    """Owns the detector (started on first use) and the upload transaction."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        vault: PersonalDataVault,
        images: ImageStore,
        detector_config: DetectorConfig,
        limits: ScanLimits,
        on_verdict: VerdictHook | None = None,
        ledger_tips: LedgerTips | None = None,
    ) -> None:
        self.on_verdict: VerdictHook = on_verdict or _no_verdict_hook
        # The process's, shared with its group-commit writer: an upload's ledger append then
        # leaves the writer's tip where the log is (storage.ledger.LedgerTips).
        self.ledger_tips = ledger_tips
        self._pool = pool
        self._vault = vault
        self.images = images
        self._config = detector_config
        self.limits = limits
        self._detector: Detector | None = None
        self._lock = asyncio.Lock()

    async def detector(self) -> Detector:
        async with self._lock:
            if self._detector is None:
                detector = Detector(self._config)
                try:
                    await detector.start()
                except ModelLoadError as exc:
                    log.exception("X-ray model unavailable")
                    raise ServiceUnavailableError(
                        "the X-ray model is not available",
                        code="model_unavailable",
                        retry_after_s=30,
                    ) from exc
                self._detector = detector
            return self._detector

    async def close(self) -> None:
        if self._detector is not None:
            await self._detector.close()
            self._detector = None

    async def find(
        self, principal: Principal, scan_id: uuid.UUID, site_id: str | None = None
    ) -> ScanUpload:
        """The scan ``scan_id`` in the principal's sites (in ``site_id`` when given). Scan ids
        are the stations' own, unique within a site: one that names scans at several of the
        principal's sites is refused (409) rather than answered with either."""
        scope = None if principal.sites is None else sorted(principal.sites)
        if site_id is not None:
            scope = [site_id] if principal.covers(site_id) else []
        async with self._pool.acquire() as conn:
            found = await scan_store.find_uploads(conn, scan_id, scope) if scope != [] else []
        if not found:
            raise NotFoundError("no such scan in your sites", code="unknown_scan")
        if len(found) > 1:
            raise ConflictError(
                "scans at several of your sites have this id; say which with site_id",
                code="ambiguous_scan_id",
                sites=sorted(u.site_id for u in found),
            )
        return found[0]

    async def submit(
        self,
        principal: Principal,
        meta: ScanMetadata,
        image: bytes | None,
        high: bytes | None,
        low: bytes | None,
        now: datetime,
    ) -> tuple[ScanOutcome, ScanUpload]:
        if not principal.covers(meta.site_id):
            raise ForbiddenError("this key may not upload for that site", code="forbidden_site")
        if (high is None) != (low is None):
            raise BadRequestError("send both high and low, or neither", code="missing_part")
        if image is None and high is None:
            raise BadRequestError("send an image, or a high/low pair", code="missing_part")
        for name, data in (("image", image), ("high", high), ("low", low)):
            if data is not None:
                check_shape(image_info(data, name), self.limits, name)

        sent_sha = hashlib.sha256(image).hexdigest() if image is not None else None
        high_sha = hashlib.sha256(high).hexdigest() if high is not None else None
        low_sha = hashlib.sha256(low).hexdigest() if low is not None else None
        digest = content_digest(meta, sent_sha, high_sha, low_sha)

        async with self._pool.acquire() as conn:
            sites = await site_store.get_sites(conn, [meta.site_id])
            if meta.site_id not in sites:
                raise _invalid("unknown_site", "metadata.site_id", "no such site")
            existing = await scan_store.find_uploads(conn, meta.scan_id, [meta.site_id])
            thresholds = await scan_store.site_thresholds(conn, meta.site_id)
        if existing:  # a resend: answer from the record, no colourising, no second inference
            return await self._resend(existing[0], digest, meta, image, (high, high_sha),
                                      (low, low_sha))  # fmt: skip

        detector = await self.detector()
        try:
            if image is None:
                assert high is not None
                assert low is not None
                # Decoding a raw pair holds two full-size 16-bit images: it takes one of the
                # detector's decode slots, and is shed like an image when the detector is full.
                detector.check_admission()
                async with detector.decoding():
                    image = await asyncio.to_thread(colourise_pair, high, low)
            detections = await detector.detect(image)
        except InferenceOverloadedError as exc:
            raise ServiceUnavailableError(
                "the X-ray detector is saturated; retry shortly",
                code="overloaded",
                retry_after_s=max(1, round(detector.config.retry_after_s)),
            ) from exc
        except ImageDecodeError as exc:
            raise _invalid("invalid_image", "image", str(exc)) from exc
        except InferenceError as exc:  # the session failed, or the detector is stopping
            log.exception("scan %s: inference failed", meta.scan_id)
            raise ServiceUnavailableError(
                "the X-ray detector failed on this upload; nothing was recorded, retry shortly",
                code="inference_failed",
                retry_after_s=5,
            ) from exc
        info = image_info(image, "image")
        image_sha = sent_sha or hashlib.sha256(image).hexdigest()
        verdict = judge(detections.boxes, detector.info, thresholds)

        try:
            await asyncio.to_thread(self._store_files, image, info.kind, high, low)
        except StorageError as exc:  # a full or failing disk: nothing recorded, worth a retry
            log.exception("scan %s: the image store failed", meta.scan_id)
            raise ServiceUnavailableError(
                "the image store failed; nothing was recorded, retry later",
                code="image_store_unavailable",
                retry_after_s=30,
            ) from exc
        event_id = (
            uuid.uuid5(SCAN_EVENT_NAMESPACE, f"{meta.site_id}/{meta.scan_id}")
            if meta.waybill_no
            else None
        )
        upload = ScanUpload(
            site_id=meta.site_id,
            scan_id=meta.scan_id,
            event_id=event_id,
            waybill_no=meta.waybill_no,
            scanner_id=meta.scanner_id,
            occurred_at=meta.occurred_at,
            received_at=now,
            content_digest=digest,
            image_sha256=image_sha,
            image_type=info.kind,
            high_sha256=high_sha,
            low_sha256=low_sha,
            width=detections.width,
            height=detections.height,
            verdict=verdict.result.value,
            findings=findings_json(verdict),
            max_scores={k: round(v, 4) for k, v in verdict.max_scores.items()},
            model_version=verdict.model_version,
            inference_ms=detections.inference_ms,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            if not await scan_store.insert_upload(conn, upload):
                # Lost a race with a concurrent resend: judge against the winner.
                winner = await scan_store.find_uploads(conn, meta.scan_id, [meta.site_id])
                # (the winner may be a gateway of the version before: its legacy digest too)
                return await self._resend(winner[0], digest, meta, image, (high, high_sha),
                                          (low, low_sha))  # fmt: skip
            if event_id is not None and meta.waybill_no is not None:
                event = XrayScannedIn(
                    type="xray.scanned",
                    event_id=event_id,
                    site_id=meta.site_id,
                    waybill_no=meta.waybill_no,
                    occurred_at=meta.occurred_at,
                    scanner_id=meta.scanner_id,
                    verdict=verdict.result.value,
                    image_ref=f"scans/{meta.scan_id}",
                    detections=[
                        DetectionIn(
                            class_name=f.class_name, category=f.category, score=f.score, box=f.box
                        )
                        for f in verdict.findings
                    ],
                    model_version=verdict.model_version,
                )
                await commit_events(
                    conn, [prepare(event, self._vault, now)], now, ledger_tips=self.ledger_tips
                )
            await self.on_verdict(conn, upload)  # review, hold, alert: this same transaction
        return ScanOutcome.ACCEPTED, upload

    def _store_files(self, image: bytes, kind: str, high: bytes | None, low: bytes | None) -> None:
        self.images.put(image, kind)
        if high is not None and low is not None:
            self.images.put(high, "png")
            self.images.put(low, "png")

    async def _resend(
        self,
        stored: ScanUpload,
        digest: bytes,
        meta: ScanMetadata,
        image: bytes | None,
        high: tuple[bytes | None, str | None],
        low: tuple[bytes | None, str | None],
    ) -> tuple[ScanOutcome, ScanUpload]:
        """Duplicate or conflict. A record stored before digests v2 holds the legacy form,
        which for a raw pair names the colour image made from it."""
        if stored.content_digest != digest:
            if image is None and high[0] is not None and low[0] is not None:
                image = await asyncio.to_thread(colourise_pair, high[0], low[0])
            if image is not None:
                sha = hashlib.sha256(image).hexdigest()
                if stored.content_digest == legacy_content_digest(meta, sha, high[1], low[1]):
                    return ScanOutcome.DUPLICATE, stored
        return self._same_or_conflict(stored, digest)

    @staticmethod
    def _same_or_conflict(stored: ScanUpload, digest: bytes) -> tuple[ScanOutcome, ScanUpload]:
        if stored.content_digest != digest:
            raise ConflictError(
                "a different scan was already uploaded under this scan_id", code="conflict"
            )
        return ScanOutcome.DUPLICATE, stored


def render_overlay(image: bytes, upload: ScanUpload) -> bytes:
    """The stored image with the verdict's boxes drawn on it, as PNG. Decoded as the detector
    decoded it (decode_image), so the boxes land on the pixels they were found on: OpenCV's
    colour decode would, for one, turn a JPEG by its EXIF orientation, which the detector's
    does not."""
    try:
        img = cv2.cvtColor(decode_image(image), cv2.COLOR_RGB2BGR)
    except ImageDecodeError as exc:  # pragma: no cover - only stored (decoded) images get here
        raise ServiceUnavailableError("stored image unreadable", code="image_unreadable") from exc
    for f in upload.findings:
        x1, y1, x2, y2 = (round(v) for v in f["box"])
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), 2)
        label = f"{f['class_name']} {f['score']:.2f}"
        cv2.putText(
            img,
            label,
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 255),
            1,
            cv2.LINE_AA,
        )
    ok, encoded = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover
        raise ServiceUnavailableError("could not render", code="image_unreadable")
    return bytes(encoded.tobytes())
