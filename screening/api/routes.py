"""The route table: every endpoint in one place, with what the OpenAPI document says about it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from screening.api import alerts, ingest, ledger, reads, review, scans
from screening.api.endpoints import Param, Route
from screening.api.schemas import (
    HealthOut,
    IngestResponse,
    ParcelOut,
    Problem,
    RatesOut,
    ScanOut,
    ViolationsOut,
    events_body,
)
from screening.domain.compliance import Reason, Rule
from screening.services.queries import RATE_BUCKETS

_DATE = {"type": "string", "format": "date"}


def _one_of(values: Iterable[str]) -> dict[str, Any]:
    return {"type": "string", "enum": sorted(values)}


_PERIOD = (
    Param("from", "query", "First day (site time zone); default 29 days before `to`", _DATE),
    Param("to", "query", "Last day (site time zone); default today", _DATE),
)
_SITE = Param("site_id", "path", "Site id", required=True)

# A scan id is the station's, unique within its site: with a key for several sites, the site
# says which scan is meant when two of them used the same id.
_SCAN_SITE = Param("site_id", "query", "The scan's site (needed when its id is not unique)")

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/events",
        ingest.post_events,
        "Ingest one event or an array of events; one result per event, accepted = committed",
        roles=("station", "admin"),
        body=events_body,
        response=IngestResponse,
        success=(("200", "A batch, or a duplicate single event"), ("201", "One event accepted")),
    ),
    Route(
        "GET",
        "/v1/stations/stream",
        ingest.station_stream,
        "Station WebSocket: send events as JSON text frames, receive one ack per event",
        roles=("station", "admin"),
        websocket=True,
    ),
    Route(
        "GET",
        "/v1/parcels/{waybill_no}",
        reads.get_parcel,
        "A parcel's three-100% status, violations, what is missing before dispatch, timeline",
        roles=("station", "reviewer", "supervisor", "police", "admin"),
        response=ParcelOut,
        params=(
            Param("waybill_no", "path", "Waybill number", required=True),
            Param("site_id", "query", "Site, when the waybill is known at several of yours"),
        ),
    ),
    Route(
        "GET",
        "/v1/sites/{site_id}/rates",
        reads.get_rates,
        "Compliance rates per rule and for all three, per day or per flow",
        roles=("station", "supervisor", "police", "admin"),
        response=RatesOut,
        params=(
            _SITE,
            *_PERIOD,
            Param("group_by", "query", "day or flow", {"type": "string", "enum": ["day", "flow"]}),
        ),
    ),
    Route(
        "GET",
        "/v1/sites/{site_id}/violations",
        reads.get_violations,
        "Violations of dispatched parcels, filtered and paged (keyset cursor)",
        roles=("station", "supervisor", "police", "admin"),
        response=ViolationsOut,
        params=(
            _SITE,
            *_PERIOD,
            Param("reason", "query", "Reason code", _one_of(r.value for r in Reason)),
            Param("rule", "query", "realname, inspection or xray", _one_of(r.value for r in Rule)),
            Param("flow", "query", "Flow bucket", _one_of(RATE_BUCKETS)),
            Param("cursor", "query", "next_cursor of the previous page"),
            Param(
                "limit",
                "query",
                "Page size, 1-1000",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            ),
        ),
    ),
    Route(
        "POST",
        "/v1/scans",
        scans.post_scan,
        "Upload an X-ray image (multipart: metadata JSON, image PNG/JPEG or a high/low 16-bit "
        "pair); the detector's verdict is stored as an xray.scanned event",
        roles=("station", "admin"),
        response=ScanOut,
        multipart=True,
        success=(("200", "A resend (duplicate)"), ("201", "Scan accepted")),
    ),
    Route(
        "GET",
        "/v1/scans/{scan_id}",
        scans.get_scan,
        "A stored scan and its verdict",
        roles=("station", "reviewer", "supervisor", "police", "admin"),
        response=ScanOut,
        params=(
            Param("scan_id", "path", "Scan id", {"type": "string", "format": "uuid"}, True),
            _SCAN_SITE,
        ),
    ),
    Route(
        "GET",
        "/v1/scans/{scan_id}/image",
        scans.get_scan_image,
        "The scan's image, optionally with the verdict's boxes drawn (overlay=boxes)",
        roles=("station", "reviewer", "supervisor", "police", "admin"),
        raw_response="image/png",
        params=(
            Param("scan_id", "path", "Scan id", {"type": "string", "format": "uuid"}, True),
            Param(
                "overlay", "query", "boxes or none", {"type": "string", "enum": ["boxes", "none"]}
            ),
            _SCAN_SITE,
        ),
    ),
    *alerts.ROUTES,
    *review.ROUTES,
    *ledger.ROUTES,
    Route("GET", "/healthz", reads.healthz, "Liveness", response=HealthOut),
    Route("GET", "/readyz", reads.readyz, "Readiness (database and writer)", response=HealthOut),
    Route("GET", "/metrics", reads.metrics, "Prometheus metrics", raw_response="text/plain"),
)


def add_routes(app: web.Application) -> None:
    from screening.api.openapi import openapi_handler

    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
        if route.answers_head:
            app.router.add_route("HEAD", route.path, route.handler)
    app.router.add_get("/v1/openapi.json", openapi_handler)


__all__ = ["ROUTES", "Param", "Problem", "Route", "add_routes"]
