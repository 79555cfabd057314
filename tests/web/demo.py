"""Demo data for the console tests and screenshots: two weeks of parcels at two sites with a mix
of violations, X-ray uploads on three machines (dark images are flagged by the tiny detector),
a reviewer's confirmation that raises a police alert, and keys for every role."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from screening.alerts import ALERT_OPTIONS
from screening.api.protocol import GatewayRunner
from screening.app import create_app
from screening.domain.access import Role
from screening.protection import PersonalDataVault
from screening.services import access
from screening.settings import Settings
from screening.web.state import CONSOLE
from tests.conftest import Keys, RunningGateway, make_keys
from tests.gateway.events import parcel_flow
from tests.gateway.test_scans import png, tiny_detector

DARK = png(20)  # tiny detector: knife score ~0.92 -> flagged, reviewed
BRIGHT = png(235)  # score ~0.08 -> clear
SCANNERS = ("XR-1", "XR-2", "XR-3")
FLOWS = ("air", "rail", "international", "inter_province", "intra_province", "same_city")
FLOW_WEIGHTS = (1, 1, 1, 4, 3, 2)

# Alert component settings for tests: no projected threats or random audits, quick policy reads.
QUIET_ALERTS: dict[str, Any] = {
    "tip_rate": 0.0,
    "clear_audit_share": 0.0,
    "cleared_audit_share": 0.0,
    "policy_ttl_s": 0.0,
    "relay_enabled": False,
    "hold_tick_s": 0.2,
}


@dataclass
class Demo:
    gateway: RunningGateway
    runner: web.AppRunner
    keys: Keys
    supervisor_both: str = ""  # a supervisor key covering both sites (for the ranking)
    waybills: dict[str, list[str]] = field(default_factory=dict)  # site -> waybills
    flagged: list[str] = field(default_factory=list)  # waybills whose scan was flagged


async def start_console_gateway(
    data_dir: Path,
    pool: asyncpg.Pool[Any],
    vault: PersonalDataVault,
    alert_options: dict[str, Any] | None = None,
) -> tuple[RunningGateway, web.AppRunner]:
    settings = Settings(
        data_dir=data_dir,
        api_key_cache_s=0.0,
        model_path=tiny_detector(data_dir / "tiny.onnx"),
        max_image_bytes=200_000,
        max_image_pixels=1_000_000,
        ledger_checkpoint_interval_s=3600.0,  # tests sign checkpoints themselves
    )
    keys = await make_keys(pool)
    app = create_app(settings, pool=pool, vault=vault)
    app[ALERT_OPTIONS] = {**QUIET_ALERTS, **(alert_options or {})}
    if CONSOLE not in app:  # screening.app wires the console; older trees may not yet
        from screening.web import add_console

        add_console(app)
    # Open SSE streams would hold a graceful shutdown for its full default minute.
    runner = GatewayRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    http = aiohttp.ClientSession()
    return RunningGateway(f"http://127.0.0.1:{port}", http, pool, app, keys), runner


async def post_events(gw: RunningGateway, events: list[dict[str, Any]], other: bool) -> None:
    for i in range(0, len(events), 1000):
        async with gw.http.post(
            f"{gw.url}/v1/events", json=events[i : i + 1000], headers=gw.auth(other=other)
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["rejected"] == 0, body


def scan_form(
    site: str, waybill: str | None, at: datetime, image: bytes, scanner: str
) -> aiohttp.FormData:
    """A station's ``POST /v1/scans`` body: metadata and a pseudo-colour PNG."""
    meta = {
        "scan_id": str(uuid.uuid4()),
        "site_id": site,
        "scanner_id": scanner,
        "waybill_no": waybill,
        "occurred_at": at.isoformat(),
    }
    form = aiohttp.FormData()
    form.add_field(
        "metadata", json.dumps(meta).encode(), filename="m.json", content_type="application/json"
    )
    form.add_field("image", image, filename="x.png", content_type="image/png")
    return form


async def upload_scan(
    gw: RunningGateway,
    site: str,
    waybill: str | None,
    at: datetime,
    image: bytes,
    scanner: str,
    other: bool = False,
) -> dict[str, Any]:
    form = scan_form(site, waybill, at, image, scanner)
    async with gw.http.post(f"{gw.url}/v1/scans", data=form, headers=gw.auth(other=other)) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 201, body
        return body


async def seed(
    gw: RunningGateway,
    *,
    days: int = 14,
    per_day: int = 6,
    scans_per_day: int = 2,
    flagged: int = 2,
    seed_value: int = 7,
    now: datetime | None = None,
) -> Demo:
    """Parcels for ``days`` days at both test sites (the other site complies worse), X-ray uploads,
    ``flagged`` dark scans waiting for review."""
    rng = random.Random(seed_value)
    now = now or datetime.now(UTC)
    demo = Demo(gw, None, gw.keys)  # type: ignore[arg-type]  # runner set by the caller
    demo.supervisor_both = (
        await access.create_key(
            gw.pool, Role.SUPERVISOR, [gw.keys.site, gw.keys.other_site], "both"
        )
    )[1]
    run = uuid.uuid4().hex[:6].upper()
    for other, site, badness in ((False, gw.keys.site, 0.25), (True, gw.keys.other_site, 0.5)):
        events: list[dict[str, Any]] = []
        waybills: list[str] = []
        uploads: list[tuple[str, datetime, bytes, str]] = []
        for day in range(days):
            # Compliance drifts: worse a week ago, better lately (a visible trend).
            drift = badness * (1.4 if 4 <= day <= 9 else 0.8)
            for i in range(per_day):
                waybill = f"SF{run}{'B' if other else 'A'}{day:02d}{i:03d}"
                start = now - timedelta(days=day, hours=5) + timedelta(minutes=7 * i)
                kind: dict[str, Any] = {}
                if rng.random() < drift:
                    kind = rng.choice(
                        [
                            {"skip": frozenset({"realname"})},
                            {"seal_first": True},
                            {"skip": frozenset({"xray"})},
                            {"skip": frozenset({"inspection"})},
                            {"inspection_result": "refused"},
                        ]
                    )
                flow = rng.choices(FLOWS, FLOW_WEIGHTS)[0]
                scanned = not other and i < scans_per_day and "skip" not in kind
                skip = set(kind.pop("skip", frozenset()))
                if scanned:
                    skip.add("xray")  # the upload makes the xray.scanned event
                evs = parcel_flow(
                    site, waybill, start=start, flow=flow, skip=frozenset(skip), **kind
                )
                for e in evs:
                    if e["type"] == "xray.scanned":
                        e["scanner_id"] = rng.choice(SCANNERS)
                if scanned:
                    uploads.append(
                        (
                            waybill,
                            start + timedelta(minutes=4),
                            BRIGHT,
                            SCANNERS[(day + i) % len(SCANNERS)],
                        )
                    )
                events.extend(evs)
                waybills.append(waybill)
        await post_events(gw, events, other)
        for waybill, at, image, scanner in uploads:
            await upload_scan(gw, site, waybill, at, image, scanner, other)
        demo.waybills[site] = waybills
    # Flagged scans: held, not dispatched, waiting in the review queue.
    for k in range(flagged):
        waybill = f"SF{run}F{k:03d}"
        start = now - timedelta(hours=2, minutes=10 * k)
        evs = parcel_flow(gw.keys.site, waybill, start=start, skip=frozenset({"xray", "dispatch"}))
        await post_events(gw, evs, False)
        await upload_scan(
            gw,
            gw.keys.site,
            waybill,
            start + timedelta(minutes=4),
            DARK,
            SCANNERS[k % len(SCANNERS)],
        )
        demo.flagged.append(waybill)
    return demo
