"""POST /v1/scans (multipart X-ray upload) and GET /v1/scans/{scan_id}/image."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from aiohttp import BodyPartReader, web
from pydantic import ValidationError

from screening.api.auth import principal_of
from screening.api.context import GATEWAY, public_base
from screening.api.jsonbody import parse_json
from screening.api.problems import field_errors
from screening.api.schemas import (
    FindingOut,
    ScanMetadataIn,
    ScanOut,
    VerdictOut,
    validation_context,
)
from screening.domain.access import Permission
from screening.errors import (
    BadRequestError,
    InvalidEventError,
    NotFoundError,
    PayloadTooLargeError,
)
from screening.services.scans import ScanMetadata, render_overlay
from screening.storage.errors import StorageError
from screening.storage.scans import ScanUpload, scan_image_url

PARTS = ("metadata", "image", "high", "low")


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    """Read one part, refusing it as soon as it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"part {part.name!r} exceeds {limit} bytes", code="image_too_large"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_parts(request: web.Request, image_limit: int) -> dict[str, bytes]:
    reader = await request.multipart()
    parts: dict[str, bytes] = {}
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise BadRequestError("nested multipart is not supported", code="invalid_body")
        if part.name not in PARTS:
            raise BadRequestError(f"unknown part {part.name!r}", code="unknown_part")
        if part.name in parts:
            raise BadRequestError(f"part {part.name!r} sent twice", code="duplicate_part")
        limit = 64 * 1024 if part.name == "metadata" else image_limit
        parts[part.name] = await _read_part(part, limit)
    return parts


def scan_out(upload: ScanUpload, result: str, base: str) -> ScanOut:
    return ScanOut(
        scan_id=str(upload.scan_id),
        site_id=upload.site_id,
        result="accepted" if result == "accepted" else "duplicate",
        waybill_no=upload.waybill_no,
        bound=upload.waybill_no is not None,
        event_id=str(upload.event_id) if upload.event_id else None,
        occurred_at=upload.occurred_at,
        width=upload.width,
        height=upload.height,
        verdict=VerdictOut(
            result="flagged" if upload.verdict == "flagged" else "clear",
            findings=[FindingOut(**f) for f in upload.findings],
            model_version=upload.model_version,
            max_scores=upload.max_scores,
        ),
        image_url=scan_image_url(base, upload.scan_id, upload.site_id),
    )


async def post_scan(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal = await principal_of(request, Permission.WRITE_EVENTS)
    if not request.content_type.startswith("multipart/"):
        raise BadRequestError("send multipart/form-data", code="not_multipart")
    try:
        parts = await _read_parts(request, gw.scans.limits.max_image_bytes)
    except ValueError as exc:
        # aiohttp's multipart reader: no boundary, a body that does not open with it, or one
        # that ends inside a part (a truncated upload)
        raise BadRequestError(
            f"malformed multipart body: {exc}", code="malformed_multipart"
        ) from None
    if "metadata" not in parts:
        raise BadRequestError("the metadata part is missing", code="missing_part")
    now = datetime.now(UTC)
    try:
        raw = parse_json(parts["metadata"])
    except ValueError as exc:
        raise BadRequestError(f"metadata is not JSON: {exc}", code="malformed_json") from None
    try:
        meta = ScanMetadataIn.model_validate(
            raw, context=validation_context(now, gw.settings.max_future_skew_s)
        )
    except ValidationError as exc:
        errors = field_errors(exc, prefix="metadata")
        raise InvalidEventError("invalid scan metadata", errors) from None
    outcome, upload = await gw.scans.submit(
        principal,
        ScanMetadata(
            meta.scan_id, meta.site_id, meta.scanner_id, meta.waybill_no, meta.occurred_at
        ),
        parts.get("image"),
        parts.get("high"),
        parts.get("low"),
        now,
    )
    gw.metrics.scans.labels(outcome.value, upload.verdict).inc()
    if outcome.value == "accepted":
        gw.metrics.inference_seconds.observe(upload.inference_ms / 1000.0)
    base = public_base(request)
    body = scan_out(upload, outcome.value, base)
    return web.json_response(
        body.model_dump(mode="json"), status=201 if outcome.value == "accepted" else 200
    )


async def get_scan(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal = await principal_of(request, Permission.READ_PARCELS)
    upload = await gw.scans.find(principal, _scan_id(request), request.query.get("site_id"))
    base = public_base(request)
    return web.json_response(scan_out(upload, "duplicate", base).model_dump(mode="json"))


async def get_scan_image(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    principal = await principal_of(request, Permission.READ_PARCELS)
    upload = await gw.scans.find(principal, _scan_id(request), request.query.get("site_id"))
    overlay = request.query.get("overlay", "")
    if overlay not in ("", "none", "boxes"):
        raise BadRequestError("overlay is boxes or none", code="invalid_query")
    # Off the event loop: a large image takes a good part of a second to read, decode, draw on
    # and encode, and every other request of this process would wait meanwhile.
    try:
        data = await asyncio.to_thread(gw.scans.images.get, upload.image_sha256, upload.image_type)
    except StorageError as exc:
        raise NotFoundError(str(exc), code="image_missing") from exc
    if overlay == "boxes":
        png = await asyncio.to_thread(render_overlay, data, upload)
        return web.Response(body=png, content_type="image/png")
    return web.Response(body=data, content_type=f"image/{upload.image_type}")


def _scan_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["scan_id"])
    except ValueError as exc:
        raise NotFoundError("no such scan", code="unknown_scan") from exc
