"""README screenshots of every console view: ``python -m tests.web.screenshots [--out DIR]``.

Starts an embedded PostgreSQL and a gateway with the shipped detector, fills four weeks of demo
data at three sites (synthetic dual-energy X-ray images from ``models.synth``, so the boxes are
the real model's), has a reviewer confirm some flagged images and police handle one alert, signs
a ledger checkpoint, then photographs each view in headless Chromium (zh-CN, and one in English).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
from aiohttp import web

from screening.alerts import ALERT_OPTIONS, ALERTS, AlertsComponent
from screening.api.ledger import LEDGER_SIGNER
from screening.app import create_app
from screening.domain.access import Role
from screening.protection import PersonalDataVault
from screening.services import access
from screening.services import ledger as ledger_service
from screening.settings import Settings
from screening.storage.database import create_pool, embedded_postgres, migrate
from tests.gateway.events import event, parcel_flow
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.web.demo import FLOW_WEIGHTS, FLOWS, QUIET_ALERTS, scan_form

SITES = (
    ("WH-HS-001", "武汉洪山网点", 0.10),
    ("WH-JX-002", "武汉江夏网点", 0.22),
    ("XG-XN-003", "孝感孝南网点", 0.35),
)
SCANNERS = ("XR-A1", "XR-A2", "XR-B1")
VIEW = {"width": 1360, "height": 860}
DEMO_CLASSES = (
    "firearm",
    "ammunition",
    "knife",
    "explosive_device",
    "gas_can",
    "liquid_container",
    "organic_mass",
    "lithium_battery",
)
DEMO_THRESHOLD = 0.28


def synthetic_images(count: int, threat: bool, start: int) -> list[bytes]:
    from models.synth.colour import STYLES
    from models.synth.dataset import TEST_SEEDS_START, render_sample

    out: list[bytes] = []
    seed = TEST_SEEDS_START + start
    while len(out) < count:
        sample = render_sample(seed, list(STYLES), threat_rate=1.0 if threat else 0.0)
        seed += 1
        if threat and not sample.labels:
            continue
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(sample.image[..., ::-1]))
        if ok:
            out.append(bytes(buf.tobytes()))
    return out


async def post(http: aiohttp.ClientSession, url: str, key: str, body: Any) -> Any:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 300:
            raise RuntimeError(f"{url}: {resp.status} {data}")
        return data


async def upload(
    http: aiohttp.ClientSession,
    url: str,
    key: str,
    site: str,
    waybill: str,
    at: datetime,
    image: bytes,
    scanner: str,
) -> dict[str, Any]:
    form = scan_form(site, waybill, at, image, scanner)
    async with http.post(
        f"{url}/v1/scans", data=form, headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        body: dict[str, Any] = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"upload: {resp.status} {body}")
        return body


async def fill(url: str, pool: Any, http: aiohttp.ClientSession) -> dict[str, Any]:
    rng = random.Random(11)
    now = datetime.now(UTC)
    keys: dict[str, Any] = {"station": {}}
    for site, name, _ in SITES:
        await access.add_site(pool, site, name)
        keys["station"][site] = (await access.create_key(pool, Role.STATION, [site]))[1]
    all_sites = [s for s, _, _ in SITES]
    for role in ("supervisor", "reviewer", "police"):
        keys[role] = (await access.create_key(pool, Role(role), all_sites, role))[1]
    print("rendering synthetic X-ray images ...", flush=True)
    clear_images = await asyncio.to_thread(synthetic_images, 6, False, 900)
    threat_images = await asyncio.to_thread(synthetic_images, 6, True, 1200)
    waybills: list[str] = []
    for s, (site, _, badness) in enumerate(SITES):
        events: list[dict[str, Any]] = []
        for day in range(28):
            drift = badness * (1.6 if 8 <= day <= 15 else 1.0 if day > 15 else 0.5)
            for i in range(12 + rng.randrange(6)):
                waybill = f"SF{s}{day:02d}{i:03d}{rng.randrange(10**6):06d}"
                start = now - timedelta(days=day, hours=9) + timedelta(minutes=11 * i)
                kind: dict[str, Any] = {}
                if rng.random() < drift:
                    kind = rng.choice(
                        [
                            {"skip": frozenset({"realname"})},
                            {"seal_first": True},
                            {"skip": frozenset({"xray"})},
                            {"inspection_result": "refused"},
                        ]
                    )
                evs = parcel_flow(
                    site, waybill, start=start, flow=rng.choices(FLOWS, FLOW_WEIGHTS)[0], **kind
                )
                for e in evs:
                    if e["type"] == "xray.scanned":
                        e["scanner_id"] = rng.choices(SCANNERS, (5, 3, 1))[0]
                events.extend(evs)
                waybills.append(waybill)
        for i in range(0, len(events), 1000):
            await post(http, f"{url}/v1/events", keys["station"][site], events[i : i + 1000])
    # Clear uploads at the first site, then flagged ones waiting for review. Demo thresholds:
    # whatever model is in models/ at the time, its boxes on the threat images get reviewed.
    site = SITES[0][0]
    await pool.execute(
        "UPDATE sites SET xray_thresholds = $2::jsonb WHERE site_id = $1",
        site,
        json.dumps(dict.fromkeys(DEMO_CLASSES, DEMO_THRESHOLD)),
    )
    station = keys["station"][site]
    for i, image in enumerate(clear_images + threat_images):
        waybill = f"SFX{i:03d}{rng.randrange(10**8):08d}"
        start = now - timedelta(hours=3, minutes=9 * i)
        skip = frozenset({"xray", "dispatch"})
        await post(
            http,
            f"{url}/v1/events",
            station,
            parcel_flow(site, waybill, start=start, flow="air", skip=skip),
        )
        scan = await upload(
            http, url, station, site, waybill, start + timedelta(minutes=4), image, SCANNERS[i % 2]
        )
        if i < len(clear_images):  # dispatched after its scan: a timeline with the image
            await post(
                http,
                f"{url}/v1/events",
                station,
                [
                    event(
                        "parcel.dispatched",
                        site,
                        waybill,
                        start + timedelta(minutes=6),
                        carrier="SF",
                    )
                ],
            )
            keys.setdefault("scanned", waybill)
        del scan
    # The reviewer confirms three, police acknowledge one and close another.
    reviewer = {"Authorization": f"Bearer {keys['reviewer']}"}
    confirmed = 0
    for _ in range(3):
        async with http.get(f"{url}/v1/review/next", headers=reviewer) as resp:
            if resp.status != 200:
                break
            item = await resp.json()
        category = (item["findings"] or [{}])[0].get("category") or "controlled_knives"
        await post(
            http,
            f"{url}/v1/review/items/{item['item_id']}/decision",
            keys["reviewer"],
            {"decision": "confirm", "category": category, "note": ""},
        )
        confirmed += 1
    police = {"Authorization": f"Bearer {keys['police']}"}
    async with http.get(f"{url}/v1/alerts", headers=police) as resp:
        alerts = (await resp.json())["alerts"]
    if len(alerts) >= 2:
        await post(
            http,
            f"{url}/v1/alerts/{alerts[-1]['alert_id']}/close",
            keys["police"],
            {"disposition": "seized", "note": "管制刀具，已查扣"},
        )
        await post(
            http,
            f"{url}/v1/alerts/{alerts[-2]['alert_id']}/acknowledge",
            keys["police"],
            {"note": ""},
        )
    keys["alerts"] = alerts
    keys["waybills"] = waybills
    print(f"{len(waybills)} parcels, {confirmed} confirmed, {len(alerts)} alerts", flush=True)
    return keys


# Reviewers meeting projected threats (TIP) for the Reviewers panel: True = confirmed (a hit).
TIP_REVIEWERS = (
    ("张伟", [True] * 11 + [False]),
    ("王芳", [True, False, True, True, False, True, True, False, True, True]),
    ("刘洋", [False, True, True]),
)


async def judge_projected_threats(
    url: str, pool: Any, http: aiohttp.ClientSession, alerts: AlertsComponent
) -> None:
    """Labelled reviewers judge projected threats, hitting and missing as TIP_REVIEWERS say."""
    sites = [s for s, _, _ in SITES]
    alerts.review.tip_rate = 1.0
    try:
        async with asyncio.timeout(120):
            alerts.tips.ensure_started()
            while not alerts.tips.ready:  # noqa: ASYNC110 - rendered in the background
                await asyncio.sleep(0.1)
        for label, hits in TIP_REVIEWERS:
            key = (await access.create_key(pool, Role.REVIEWER, sites, label))[1]
            auth = {"Authorization": f"Bearer {key}"}
            for hit in hits:
                async with http.get(f"{url}/v1/review/next", headers=auth) as resp:
                    item = await resp.json()
                decision = (
                    {"decision": "confirm", "category": "controlled_knives"}
                    if hit
                    else {"decision": "clear"}
                )
                await post(http, f"{url}/v1/review/items/{item['item_id']}/decision", key, decision)
    finally:
        alerts.review.tip_rate = 0.0


async def shoot(url: str, keys: dict[str, Any], out: Path) -> list[Path]:
    from playwright.async_api import async_playwright

    site = SITES[0][0]
    worst = SITES[2][0]
    month = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m")
    taken: list[Path] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)

        async def page_for(key: str | None, lang: str = "zh-CN") -> Any:
            context = await browser.new_context(
                viewport=VIEW, locale=lang, device_scale_factor=1, bypass_csp=True
            )
            await context.add_init_script(f"localStorage.setItem('console.lang', '{lang}')")
            page = await context.new_page()
            await page.goto(f"{url}/console/")
            if key:
                await page.fill("#api-key", key)
                await page.click("#signin button[type=submit]")
                await page.wait_for_selector("main[data-ready]")
            return page

        async def snap(page: Any, name: str, full: bool = True) -> None:
            await page.wait_for_load_state("networkidle")
            path = out / name
            await page.screenshot(path=str(path), full_page=full)
            taken.append(path)
            print("wrote", path, flush=True)

        page = await page_for(None)
        await page.wait_for_selector("#signin")
        await snap(page, "console-signin.png", full=False)

        page = await page_for(keys["supervisor"])
        await page.goto(f"{url}/console/#/overview?site={site}")
        await page.wait_for_selector("main[data-ready=overview] #ranking")
        await snap(page, "supervisor-rates.png")
        await page.goto(f"{url}/console/#/overview?site={site}&gran=week")
        await page.wait_for_selector("main[data-ready=overview] #ranking")
        await snap(page, "supervisor-rates-weekly.png")
        await page.goto(f"{url}/console/#/violations?site={worst}&limit=20")
        await page.wait_for_selector("main[data-ready=violations]")
        await snap(page, "supervisor-violations.png")
        await page.goto(f"{url}/console/#/parcel/{keys['scanned']}?site={site}")
        await page.wait_for_selector("main[data-ready=parcel]")
        await page.wait_for_function("document.querySelector('#timeline img')?.complete")
        await snap(page, "supervisor-parcel-timeline.png")
        await page.goto(f"{url}/console/reports/{site}/{month}")
        await snap(page, "monthly-report.png")

        await page.goto(f"{url}/console/#/reviewers")
        await page.wait_for_selector("main[data-ready=reviewers] #reviewer-table")
        await snap(page, "supervisor-reviewers.png")

        page = await page_for(keys["reviewer"])
        await page.wait_for_selector("#review-pane [data-item]")
        await page.wait_for_function("document.querySelector('#review-image')?.complete")
        await snap(page, "reviewer-queue.png", full=False)

        page = await page_for(keys["police"])
        await page.wait_for_selector("#live.on")
        alerts = keys["alerts"]
        if alerts:
            await page.goto(f"{url}/console/#/alerts/{alerts[0]['alert_id']}")
            await page.wait_for_selector("#alert-detail #alert-status")
            await page.wait_for_function("document.querySelector('#alert-image')?.complete")
        await snap(page, "police-alerts.png", full=False)

        page = await page_for(keys["supervisor"], lang="en")
        await page.goto(f"{url}/console/#/overview?site={site}")
        await page.wait_for_selector("main[data-ready=overview] #ranking")
        await snap(page, "supervisor-rates-en.png")
        await browser.close()
    return taken


async def run(out: Path, dsn: str, data_dir: Path) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn)
    settings = Settings(data_dir=data_dir, api_key_cache_s=0.0, ledger_checkpoint_interval_s=3600.0)
    app = create_app(settings, pool=pool, vault=PersonalDataVault.generate())
    # Projected threats only while judge_projected_threats runs (a pool of real synthetic ones).
    app[ALERT_OPTIONS] = {**QUIET_ALERTS, "tip_rate": 1.0, "tip_pool_size": 4}
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    app[ALERTS].review.tip_rate = 0.0
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            keys = await fill(url, pool, http)
            await judge_projected_threats(url, pool, http, app[ALERTS])
        for site, _, _ in SITES:
            await ledger_service.make_checkpoint(pool, site, app[LEDGER_SIGNER])
        await shoot(url, keys, out)
    finally:
        await runner.cleanup()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="screening-shots-"))
    try:
        with embedded_postgres(root / "pgdata") as dsn:
            asyncio.run(run(args.out, dsn, root / "data"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
