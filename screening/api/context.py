"""Typed application state shared by the handlers (aiohttp AppKeys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from screening.api.pacing import Pacer
from screening.background import SingleFlight
from screening.protection import PersonalDataVault
from screening.services.access import KeyAuthenticator
from screening.services.ingest import GroupCommitWriter
from screening.services.scans import ScanService
from screening.settings import Settings


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter(
            "screening_events_total", "Events by ingest outcome", ["type", "result"], registry=r
        )
        self.requests = Histogram(
            "screening_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.commit_size = Histogram(
            "screening_group_commit_events",
            "Events per group commit",
            registry=r,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
        )
        self.commit_seconds = Histogram(
            "screening_group_commit_seconds", "Group commit transaction time", registry=r
        )
        self.writer_depth = Gauge(
            "screening_ingest_queue_depth",
            "Submissions waiting for the writer",
            registry=r,
            multiprocess_mode="livesum",  # with several workers: the sum of the live ones
        )
        self.scans = Counter(
            "screening_scans_total",
            "X-ray uploads by outcome and verdict",
            ["result", "verdict"],
            registry=r,
        )
        self.inference_seconds = Histogram(
            "screening_inference_seconds",
            "Detector session.run time of the batch a scan was in",
            registry=r,
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
        )
        self.station_streams = Gauge(
            "screening_station_streams",
            "Open station WebSockets",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._event_series: dict[tuple[str, str], Any] = {}

    def count_events(self, event_type: str, result: str, n: int) -> None:
        """Add n to the events counter of (type, result); the labelled child is looked up once
        (labels() takes a lock and builds the label tuple on every call)."""
        series = self._event_series.get((event_type, result))
        if series is None:
            series = self._event_series[(event_type, result)] = self.events.labels(
                event_type, result
            )
        series.inc(n)


@dataclass
class Gateway:
    """Everything a handler needs, built once in create_app."""

    settings: Settings
    pool: asyncpg.Pool[Any]
    vault: PersonalDataVault
    writer: GroupCommitWriter
    authenticator: KeyAuthenticator
    metrics: Metrics
    scans: ScanService
    known_sites: set[str] = field(default_factory=set)
    pacer: Pacer | None = None
    # Lookups of sites not yet known, one per site however many requests ask at once (a
    # restarted gateway meets every station's first request together).
    site_lookups: SingleFlight[str, bool] = field(
        default_factory=lambda: SingleFlight("site-lookup")
    )
    # Open station WebSockets per site; hold orders (a later feature) are pushed down these.
    station_streams: dict[str, set[web.WebSocketResponse]] = field(default_factory=dict)


GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)


def public_base(request: web.Request) -> str:
    """The gateway's address as its clients see it, for the links and image addresses it
    answers with and the origin a browser signs in from: ``public_base_url`` when set (behind
    a TLS-terminating proxy the request itself says http and the proxy's upstream host), else
    this request's own scheme and host."""
    configured = request.app[GATEWAY].settings.public_base_url
    if configured:
        return configured.rstrip("/")
    return f"{request.scheme}://{request.host}"


def public_origin(request: web.Request) -> str:
    """``public_base`` without its path: what a browser sends as Origin."""
    parts = urlsplit(public_base(request))
    return f"{parts.scheme}://{parts.netloc}"
