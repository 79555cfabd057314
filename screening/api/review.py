"""The image reviewers' endpoints: lease the next item, see its image with boxes, decide or skip
it; per reviewer TIP scores for supervisors; reviewer levels for admins."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Literal, cast

from aiohttp import web
from pydantic import Field

from screening.alerts import ALERTS
from screening.api.alerts import _Body, read_body
from screening.api.auth import principal_of, unscoped_principal_of
from screening.api.context import public_base
from screening.api.endpoints import Param, Route
from screening.api.reads import date_param
from screening.domain.access import Permission
from screening.errors import BadRequestError, NotFoundError
from screening.services import queries
from screening.services.scans import render_overlay
from screening.storage.errors import StorageError
from screening.storage.review import ReviewItem
from screening.storage.scans import ScanUpload


@dataclass(frozen=True, slots=True)
class _Boxes:
    findings: list[dict[str, Any]]


class DecisionIn(_Body):
    decision: Literal["confirm", "clear", "escalate"]
    category: str | None = Field(default=None, max_length=64, description="for confirm")
    note: str = Field(default="", max_length=1000)


class LevelIn(_Body):
    level: Literal[1, 2]


def item_json(item: ReviewItem, base: str) -> dict[str, Any]:
    """What a reviewer sees: never whether the item is projected (TIP), never the sender."""
    return {
        "item_id": str(item.item_id),
        "site_id": item.site_id,
        "level": item.level,
        "findings": item.findings,
        "lease_until": item.lease_until.isoformat() if item.lease_until else None,
        "image_url": f"{base}/v1/review/items/{item.item_id}/image",
    }


def _item_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["item_id"])
    except ValueError as exc:
        raise NotFoundError("no such review item", code="unknown_review_item") from exc


async def next_review_item(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.REVIEW_SCANS)
    item = await request.app[ALERTS].review.next(principal)
    if item is None:
        return web.Response(status=204)
    return web.json_response(item_json(item, public_base(request)))


async def review_item_image(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.REVIEW_SCANS)
    review = request.app[ALERTS].review
    item = await review.get(principal, _item_id(request))
    try:
        data = await asyncio.to_thread(review.images.get, item.image_sha256, item.image_type)
    except StorageError as exc:
        raise NotFoundError(str(exc), code="image_missing") from exc
    if request.query.get("overlay", "boxes") == "none":
        return web.Response(body=data, content_type=f"image/{item.image_type}")
    # render_overlay reads only the findings of what it is given.
    boxes = cast(ScanUpload, _Boxes(item.findings))
    png = await asyncio.to_thread(render_overlay, data, boxes)
    return web.Response(body=png, content_type="image/png")


async def decide_review_item(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.REVIEW_SCANS)
    body = await read_body(request, DecisionIn)
    if body.decision == "confirm" and body.category is not None and not body.category.strip():
        raise BadRequestError("category must not be blank", code="invalid_category")
    d = await request.app[ALERTS].review.decide(
        principal, _item_id(request), body.decision, body.category, body.note
    )
    return web.json_response(
        {
            "item_id": str(d.item_id),
            "decision": d.decision,
            "reviewer": d.reviewer,
            "decided_at": d.decided_at.isoformat(),
            "level": d.level,
        }
    )


async def skip_review_item(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.REVIEW_SCANS)
    item_id = _item_id(request)
    await request.app[ALERTS].review.skip(principal, item_id)
    return web.json_response({"item_id": str(item_id), "skipped": True})


async def review_stats(request: web.Request) -> web.Response:
    principal = await principal_of(request, Permission.READ_REVIEW_STATS)
    site_id = request.query.get("site_id") or None
    if site_id is not None:
        queries.require_cover(principal, site_id)  # before the query's parameters are judged
    first, last = date_param(request, "from"), date_param(request, "to")
    rows = await request.app[ALERTS].review.stats(principal, site_id, first, last)
    return web.json_response(
        {
            "site_id": site_id,
            "from": None if first is None else first.isoformat(),
            "to": None if last is None else last.isoformat(),
            "reviewers": rows,
        }
    )


async def set_reviewer_level(request: web.Request) -> web.Response:
    await unscoped_principal_of(request, Permission.MANAGE_ALERTING)
    body = await read_body(request, LevelIn)
    key_id = request.match_info["key_id"]
    await request.app[ALERTS].review.set_level(key_id, body.level)
    return web.json_response({"key_id": key_id, "level": body.level})


_DATE = {"type": "string", "format": "date"}
_ITEM = Param("item_id", "path", "Review item id", {"type": "string", "format": "uuid"}, True)

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/review/next",
        next_review_item,
        "Lease the next image to judge (204 when the queue is empty); the lease expires",
        roles=("reviewer", "admin"),
        success=(("200", "An item, leased to you"), ("204", "Nothing to review")),
        head=False,  # a HEAD would lease an item nobody sees
    ),
    Route(
        "GET",
        "/v1/review/items/{item_id}/image",
        review_item_image,
        "The item's image with the model's boxes (overlay=none for the bare image)",
        roles=("reviewer", "admin"),
        raw_response="image/png",
        params=(
            _ITEM,
            Param(
                "overlay", "query", "boxes or none", {"type": "string", "enum": ["boxes", "none"]}
            ),
        ),
    ),
    Route(
        "POST",
        "/v1/review/items/{item_id}/decision",
        decide_review_item,
        "Confirm (with a category), clear, or escalate to level 2 — while you hold the lease",
        roles=("reviewer", "admin"),
        body=DecisionIn,
        params=(_ITEM,),
    ),
    Route(
        "POST",
        "/v1/review/items/{item_id}/skip",
        skip_review_item,
        "Give the item back now (not a decision): anyone may take it; you get it again only "
        "after every other waiting item",
        roles=("reviewer", "admin"),
        params=(_ITEM,),
    ),
    Route(
        "GET",
        "/v1/review/stats",
        review_stats,
        "Per reviewer (key label and level): decisions, confirms, clears, projected-threat "
        "hits and misses, false alarms — over your sites or one of them, optionally for a period",
        roles=("supervisor", "admin"),
        params=(
            Param("site_id", "query", "Only this site (one your key covers); default all of yours"),
            Param("from", "query", "First day (each site's time zone); default unbounded", _DATE),
            Param("to", "query", "Last day (each site's time zone); default unbounded", _DATE),
        ),
    ),
    Route(
        "PUT",
        "/v1/review/reviewers/{key_id}/level",
        set_reviewer_level,
        "Set a reviewer's level (1 or 2)",
        roles=("admin",),
        body=LevelIn,
        params=(Param("key_id", "path", "The reviewer's API key id", required=True),),
    ),
)
