"""`screening demo`: embedded PostgreSQL, the gateway, and simulated courier stations.

Stations post realistic parcel lives over HTTP with real API keys; a configurable share of
parcels breaks a rule. The terminal shows each site's live rates, read back through the API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import cv2
from aiohttp import web
from stdnum.iso7064 import mod_11_2

from firmware_bridge.station import Station, start_station
from screening.api.protocol import GatewayRunner
from screening.app import create_app
from screening.cli import database
from screening.domain.access import Role
from screening.domain.events import Flow
from screening.errors import NotFoundError
from screening.inference import DEFAULT_MODEL_PATH
from screening.runtime import SHUTDOWN_DRAIN_S, StartupError, stop_on_signals, tune_collector
from screening.services import access
from screening.settings import Settings
from screening.storage import alerts as alert_store
from screening.storage.database import create_pool, migrate

CARRIERS = ("SF", "ZTO", "YTO", "STO", "YD", "JD", "EMS")
FLOW_WEIGHTS = {
    Flow.INTER_PROVINCE: 45,
    Flow.INTRA_PROVINCE: 25,
    Flow.SAME_CITY: 15,
    Flow.AIR: 8,
    Flow.RAIL: 4,
    Flow.INTERNATIONAL: 3,
}
BREAKS = ("skip_inspection", "seal_before_inspection", "invalid_id", "no_xray", "no_realname")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
# Contract customers each demo site has a security agreement with: (ref, name, USCC).
CONTRACTS = (
    ("C000001", "武汉光谷电子商务有限公司", "91420100MA4K00001U"),
    ("C000002", "武汉江城图书发行有限公司", "91420100MA4K00002Y"),
    ("C000003", "湖北楚天服饰贸易有限公司", "91420100MA4K000032"),
)
REGIONS = ("110105", "310115", "420106", "440305", "330106", "510107", "320102", "500103")


def resident_id(rng: random.Random) -> str:
    birth = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))  # noqa: DTZ001
    body = f"{rng.choice(REGIONS)}{birth:%Y%m%d}{rng.randrange(0, 1000):03d}"
    return body + mod_11_2.calc_check_digit(body)


@dataclass
class StationStats:
    parcels: int = 0
    events: int = 0
    rejected: int = 0
    scans: int = 0
    flagged: int = 0
    breaks: dict[str, int] = field(default_factory=dict)


def parcel_events(
    rng: random.Random, site: str, waybill: str, now: datetime, break_share: float
) -> tuple[list[dict[str, Any]], str | None]:
    """One parcel's life, possibly with a rule break; the events are timestamped in the past."""
    brk = rng.choice(BREAKS) if rng.random() < break_share else None
    flow = rng.choices(list(FLOW_WEIGHTS), weights=list(FLOW_WEIGHTS.values()))[0]
    start = now - timedelta(seconds=rng.uniform(60, 120))
    t = [start + timedelta(seconds=10 * i + rng.uniform(0, 5)) for i in range(6)]

    def ev(kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "event_id": str(uuid.uuid4()),
            "site_id": site,
            "waybill_no": waybill,
            "occurred_at": at.isoformat(),
            **fields,
        }

    events = [
        ev(
            "parcel.received",
            t[0],
            carrier=rng.choice(CARRIERS),
            flow=flow.value,
            declared_contents=rng.choice(["衣物", "书籍", "电子产品", "食品", "文件"]),
            weight_g=rng.randrange(100, 20000),
        ),
    ]
    if brk != "no_realname":
        if rng.random() < 0.1:
            events.append(
                ev(
                    "realname.registered",
                    t[1],
                    contract_customer_ref=rng.choice(CONTRACTS)[0],
                )
            )
        else:
            sender = {
                "document_type": "resident_id",
                "document_number": resident_id(rng),
                "name": rng.choice(SURNAMES) + rng.choice(SURNAMES),
                "phone": f"1{rng.choice('3578')}{rng.randrange(10**9):09d}",
            }
            extra: dict[str, Any] = {}
            if brk == "invalid_id":
                extra = {"verification": "failed"}
            events.append(ev("realname.registered", t[1], sender=sender, **extra))
    clerk = f"clerk-{rng.randrange(1, 6)}"
    if brk != "skip_inspection":
        at = t[3] if brk == "seal_before_inspection" else t[2]
        events.append(ev("inspection.completed", at, clerk_id=clerk, result="pass"))
    seal_at = t[2] if brk == "seal_before_inspection" else t[3]
    events.append(ev("parcel.sealed", seal_at, clerk_id=clerk))
    if brk != "no_xray":
        events.append(ev("xray.scanned", t[4], scanner_id=f"{site}-XR1", verdict="clear"))
    events.append(ev("parcel.dispatched", t[5]))
    return events, brk


def with_typo(event: dict[str, Any]) -> dict[str, Any]:
    """The same registration with the ID's check character mistyped."""
    number = event["sender"]["document_number"]
    wrong = "0" if number[-1] != "0" else "1"
    sender = {**event["sender"], "document_number": number[:-1] + wrong}
    return {**event, "event_id": str(uuid.uuid4()), "sender": sender}


async def post_typo(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], events: list[dict[str, Any]]
) -> int:
    registrations = [e for e in events if e["type"] == "realname.registered" and "sender" in e]
    if not registrations:
        return 0
    async with http.post(
        f"{url}/v1/events", json=with_typo(registrations[0]), headers=headers
    ) as r:
        return 1 if r.status == 422 else 0


def prerender_images(count: int) -> list[bytes]:
    """Synthetic X-ray frames from held-out generator seeds, some with threats (PNG bytes)."""
    from models.synth.colour import STYLES
    from models.synth.dataset import TEST_SEEDS_START, render_sample

    images = []
    for i in range(count):
        sample = render_sample(TEST_SEEDS_START + 500 + i, list(STYLES), threat_rate=0.25)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
        if ok:
            images.append(bytes(buf.tobytes()))
    return images


async def upload_scan(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    event: dict[str, Any],
    image: bytes,
) -> str | None:
    """Upload the parcel's X-ray frame; the gateway judges it. Returns the verdict."""
    meta = {
        "scan_id": str(uuid.uuid4()),
        "site_id": event["site_id"],
        "scanner_id": event["scanner_id"],
        "waybill_no": event["waybill_no"],
        "occurred_at": event["occurred_at"],
    }
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(meta), filename="m.json", content_type="application/json")
    form.add_field("image", image, filename="scan.png", content_type="image/png")
    async with http.post(f"{url}/v1/scans", data=form, headers=headers) as resp:
        if resp.status not in (200, 201):
            return None
        verdict: str = (await resp.json())["verdict"]["result"]
        return verdict


async def run_station(
    http: aiohttp.ClientSession,
    url: str,
    key: str,
    site: str,
    rate: float,
    break_share: float,
    stats: StationStats,
    seed: int,
    images: list[bytes],
) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    run = datetime.now(UTC).strftime("%y%m%d%H%M")  # waybills stay unique across demo runs
    n = 0
    while True:
        await asyncio.sleep(rng.expovariate(rate))
        n += 1
        waybill = f"{site.replace('-', '')}{run}{n:06d}"
        events, brk = parcel_events(rng, site, waybill, datetime.now(UTC), break_share)
        if brk:
            stats.breaks[brk] = stats.breaks.get(brk, 0) + 1
        if rng.random() < 0.05:  # a clerk typo in an ID number: rejected, then fixed
            stats.rejected += await post_typo(http, url, headers, events)
        scans = [e for e in events if e["type"] == "xray.scanned"]
        dispatch = [e for e in events if e["type"] == "parcel.dispatched"]
        if images:  # the X-ray frame goes to the gateway's detector instead of a verdict event
            events = [e for e in events if e["type"] not in ("xray.scanned", "parcel.dispatched")]
        if rng.random() < 0.1:  # an offline terminal uploads its backlog in any order
            rng.shuffle(events)
        async with http.post(f"{url}/v1/events", json=events, headers=headers) as resp:
            body = await resp.json()
            if resp.status == 200:
                stats.events += body["accepted"]
                stats.rejected += body["rejected"]
        stats.parcels += 1
        if not images:
            continue
        verdict = "clear"
        if scans:
            verdict = await upload_scan(http, url, headers, scans[0], rng.choice(images)) or ""
            stats.scans += 1
        if verdict == "flagged":
            stats.flagged += 1  # held at the station for review, not dispatched
            continue
        async with http.post(f"{url}/v1/events", json=dispatch, headers=headers) as resp:
            if resp.status in (200, 201):
                stats.events += len(dispatch)


@dataclass
class PoliceDesk:
    """The demo's police side: a Standard Webhooks receiver and a live-feed follower."""

    webhooks: list[dict[str, Any]] = field(default_factory=list)  # each message, once
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest revision per alert
    bad_signatures: int = 0
    feed: int = 0  # new alerts on the live feed
    feed_updates: int = 0  # alerts a reviewer confirmed after they were raised
    feed_seen: set[str] = field(default_factory=set)  # alert ids the feed has shown
    feed_confirmed: set[str] = field(default_factory=set)  # ... and those shown confirmed
    secret: str = ""

    async def receive(self, request: web.Request) -> web.Response:
        from standardwebhooks import Webhook
        from standardwebhooks.webhooks import WebhookVerificationError

        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400)
        if all(w["webhook_id"] != request.headers["webhook-id"] for w in self.webhooks[-200:]):
            data = payload["data"]
            self.webhooks.append({"webhook_id": request.headers["webhook-id"], **data})
            # Messages may arrive out of order: keep the highest revision of each alert.
            known = self.alerts.get(data["alert_id"])
            if known is None or data["revision"] > known["revision"]:
                self.alerts[data["alert_id"]] = data
        return web.Response(status=204)

    async def follow(self, http: aiohttp.ClientSession, url: str, key: str) -> None:
        """Count alerts on GET /v1/alerts/stream (SSE), resuming with Last-Event-ID."""
        last: str | None = None
        while True:
            headers = {"Authorization": f"Bearer {key}"}
            if last:
                headers["Last-Event-ID"] = last
            try:
                async with http.get(f"{url}/v1/alerts/stream", headers=headers) as resp:
                    async for raw in resp.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("data: "):
                            data = json.loads(line[6:])
                            alert_id = data.get("alert_id")
                            if alert_id not in self.feed_seen:
                                self.feed_seen.add(alert_id)
                                self.feed += 1
                            elif data.get("confirmation") and alert_id not in self.feed_confirmed:
                                self.feed_updates += 1  # the same alert again, confirmed
                            if data.get("confirmation"):
                                self.feed_confirmed.add(alert_id)
            except aiohttp.ClientError:
                await asyncio.sleep(1.0)


DEMO_LABEL = "demo"  # the first word of every key label the demo makes
DEMO_RECEIVER_PATH = "/police-webhook"


async def retire_demo_runs(pool: asyncpg.Pool[Any]) -> None:
    """Revoke the keys and disable the police endpoints that demo runs made (an earlier run's
    at a start, a run killed before it could clean up; this run's at its end): the printed keys
    stop working, and no relay keeps retrying a receiver that has gone for 72 hours."""
    for key in await access.list_keys(pool):
        if key.revoked_at is None and key.label.split(" ", 1)[0] == DEMO_LABEL:
            with contextlib.suppress(NotFoundError):
                await access.revoke_key(pool, key.key_id)
    async with pool.acquire() as conn:
        for endpoint in await alert_store.list_endpoints(conn, datetime.now(UTC)):
            url = str(endpoint["url"])
            if endpoint["enabled"] and url.startswith("http://127.0.0.1:") and url.endswith(
                DEMO_RECEIVER_PATH
            ):
                await alert_store.set_endpoint_enabled(
                    conn, endpoint["endpoint_id"], False, "a demo run's receiver, gone"
                )


async def start_police_desk(
    pool: asyncpg.Pool[Any], url: str, admin_key: str, http: aiohttp.ClientSession
) -> tuple[PoliceDesk, web.AppRunner, str]:
    desk = PoliceDesk()
    app = web.Application()
    app.router.add_post(DEMO_RECEIVER_PATH, desk.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver = f"http://127.0.0.1:{port}{DEMO_RECEIVER_PATH}"
    async with http.post(
        f"{url}/v1/webhook-endpoints",
        json={"url": receiver, "site_ids": []},
        headers={"Authorization": f"Bearer {admin_key}"},
    ) as resp:
        desk.secret = (await resp.json())["secret"]
    return desk, runner, receiver


async def review_desk(
    http: aiohttp.ClientSession, url: str, key: str, stats: dict[str, int]
) -> None:
    """A simulated image reviewer: leases flagged scans and confirms the confident ones (which
    alerts police) or clears them, a few seconds an image."""
    headers = {"Authorization": f"Bearer {key}"}
    while True:
        async with http.get(f"{url}/v1/review/next", headers=headers) as resp:
            item = await resp.json() if resp.status == 200 else None
        if item is None:
            await asyncio.sleep(2.0)
            continue
        await asyncio.sleep(1.5)  # looking at the image
        findings = sorted(item.get("findings") or [], key=lambda f: -float(f["score"]))
        if findings and float(findings[0]["score"]) >= 0.6:
            decision = {"decision": "confirm", "category": findings[0]["category"]}
        else:
            decision = {"decision": "clear", "note": "nothing prohibited on the image"}
        async with http.post(
            f"{url}/v1/review/items/{item['item_id']}/decision", json=decision, headers=headers
        ) as resp:
            if resp.status < 300:
                stats[decision["decision"]] = stats.get(decision["decision"], 0) + 1


async def tunnel_operator(tunnels: dict[str, Station]) -> None:
    """At each X-ray tunnel, an operator takes a held parcel aside and restarts the belt."""
    while True:
        await asyncio.sleep(8.0)
        for tunnel in tunnels.values():
            if str((await tunnel.bridge.status())["belt"]).startswith("stopped"):
                tunnel.bridge.resume_belt("demo operator (held parcel taken aside)")


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


async def render(
    http: aiohttp.ClientSession,
    url: str,
    key: str,
    sites: list[str],
    stats: dict[str, StationStats],
    tunnels: dict[str, Station],
    desk: PoliceDesk,
    police_key: str,
) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    lines = [
        f"{'site':<8} {'parcels':>7} {'dispatched':>10} {'realname':>8} {'inspect':>8} "
        f"{'x-ray':>8} {'3x100%':>8} {'violations':>10} {'scans':>6} {'flagged':>7}",
    ]
    for site in sites:
        async with http.get(f"{url}/v1/sites/{site}/rates?group_by=day", headers=headers) as r:
            rates = await r.json()
        async with http.get(f"{url}/v1/sites/{site}/violations?limit=1000", headers=headers) as r:
            violations = await r.json()
        total = rates["total"]
        lines.append(
            f"{site:<8} {stats[site].parcels:>7} {total['dispatched']:>10} "
            f"{_pct(total['realname_rate']):>8} {_pct(total['inspection_rate']):>8} "
            f"{_pct(total['xray_rate']):>8} {_pct(total['three_100_rate']):>8} "
            f"{len(violations['items']):>10} {stats[site].scans:>6} {stats[site].flagged:>7}"
        )
    async with http.get(
        f"{url}/v1/holds?status=open", headers={"Authorization": f"Bearer {police_key}"}
    ) as r:
        holds = (await r.json()).get("holds", []) if r.status == 200 else []
    confirmed = sum(1 for a in desk.alerts.values() if a.get("confirmation"))
    lines.append(
        f"  police: {desk.feed} alerts on the live feed (+{desk.feed_updates} confirmed later by "
        f"a reviewer); {len(desk.alerts)} alerts by signed webhook, {confirmed} of them "
        f"confirmed, in {len(desk.webhooks)} messages ({desk.bad_signatures} bad signatures); "
        f"{len(holds)} parcels on hold"
    )
    for alert in list(desk.alerts.values())[-3:]:
        lines.append(
            f"    alert {alert['category']:<24} {alert['site_id']} {alert['waybill_no']} "
            f"score {alert['score']} ({alert['cause']}, revision {alert['revision']})"
        )
    for site, tunnel in tunnels.items():
        st = await tunnel.bridge.status()
        lines.append(
            f"  X-ray tunnel {site}: link {st['link']}, belt {st['belt']}, "
            f"{st['lines_per_s']:.0f} lines/s, {st['scans']} parcels imaged "
            f"({st['unbound_scans']} unbound), {st['uploads']} uploaded, "
            f"spool {st['spool']['pending']} pending"
        )
    return "\n".join(lines)


async def _demo(settings: Settings, args: argparse.Namespace, dsn: str) -> int:
    pool: asyncpg.Pool[Any] = await create_pool(dsn, min_size=2, max_size=settings.pool_max_size)
    async with pool.acquire() as conn:
        await migrate(conn)
    sites = [f"WH-{i + 1:03d}" for i in range(args.sites)]
    for i, site in enumerate(sites):
        await access.add_site(pool, site, f"武汉寄递网点 {i + 1}")
        for ref, name, uscc in CONTRACTS:
            await access.add_contract(
                pool,
                site,
                ref,
                name=name,
                uscc=uscc,
                agreement_no=f"SA-{site}-{ref}",
                valid_from=date(2026, 1, 1),
            )
    await retire_demo_runs(pool)
    station_keys = {
        s: (await access.create_key(pool, Role.STATION, [s], "demo station"))[1] for s in sites
    }
    _, supervisor_key = await access.create_key(pool, Role.SUPERVISOR, sites, "demo supervisor")
    _, admin_key = await access.create_key(pool, Role.ADMIN, [], "demo admin")
    _, police_key = await access.create_key(pool, Role.POLICE, sites, "demo police")
    _, reviewer_key = await access.create_key(pool, Role.REVIEWER, sites, "demo reviewer")

    app = create_app(settings, pool=pool)
    runner = GatewayRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_DRAIN_S)
    await runner.setup()
    listener = web.TCPSite(runner, settings.host, settings.port)
    try:
        await listener.start()
    except OSError as exc:  # a port in use (8080 often is on a workstation)
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
            "(choose another with --port)"
        ) from exc
    tune_collector(settings.gc_young_threshold)
    url = f"http://{settings.host}:{settings.port}"
    print(f"gateway: {url}   (OpenAPI: {url}/v1/openapi.json, metrics: {url}/metrics)")
    print(f"supervisor key: {supervisor_key}")
    print(f"admin key:      {admin_key}")
    print(f"police key:     {police_key}")
    print(f"reviewer key:   {reviewer_key}")
    print(f"console:        {url}/console/  (sign in with one of the keys above)")
    for s, k in station_keys.items():
        print(f"station {s}:  {k}")
    print(
        f"example: curl -H 'Authorization: Bearer {supervisor_key}' "
        f"{url}/v1/sites/{sites[0]}/rates\n"
    )

    stop = asyncio.Event()
    stop_on_signals(stop)
    loop = asyncio.get_running_loop()
    stats = {s: StationStats() for s in sites}
    images: list[bytes] = []
    model = settings.model_path or DEFAULT_MODEL_PATH
    if not model.exists():
        print(f"no X-ray model at {model}: stations report verdict events instead (make train)")
    elif not args.no_xray_images:
        print("rendering synthetic X-ray frames for the stations ...", flush=True)
        images = await asyncio.to_thread(prerender_images, 24)
    tunnels: dict[str, Station] = {}
    logging.getLogger("firmware_bridge").setLevel(logging.WARNING)  # the table shows its state
    if model.exists():
        # A virtual line-scan X-ray tunnel and its firmware bridge at the first sites: line data
        # -> calibrated parcel images -> POST /v1/scans -> verdicts, as at a real station.
        workdir = settings.data_dir / "demo-bridges"
        workdir.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(sites[: args.scanners]):
            tunnels[s] = await start_station(
                s, url, station_keys[s], workdir=workdir, seed=i + 1, status_interval=3600
            )
    async with aiohttp.ClientSession() as http:
        desk, desk_runner, receiver = await start_police_desk(pool, url, admin_key, http)
        print(f"police webhook receiver: {receiver}")
        follower = asyncio.create_task(desk.follow(http, url, police_key))
        reviews: dict[str, int] = {}
        helpers = [
            follower,
            asyncio.create_task(review_desk(http, url, reviewer_key, reviews)),
            asyncio.create_task(tunnel_operator(tunnels)),
        ]
        tasks = [
            asyncio.create_task(
                run_station(
                    http,
                    url,
                    station_keys[s],
                    s,
                    args.rate,
                    args.break_share,
                    stats[s],
                    seed=i + 1,
                    images=images,
                )
            )
            for i, s in enumerate(sites)
        ]
        started = loop.time()
        shown = 0
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=2.0)
                table = await render(
                    http, url, supervisor_key, sites, stats, tunnels, desk, police_key
                )
                table += (
                    f"\n  reviewer: {reviews.get('confirm', 0)} confirmed, "
                    f"{reviews.get('clear', 0)} cleared"
                )
                if shown and sys.stdout.isatty():
                    print(f"\x1b[{shown}F", end="")
                print(table, flush=True)
                shown = table.count("\n") + 1
                if args.duration is not None and loop.time() - started >= args.duration:
                    break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for tunnel in tunnels.values():
                await tunnel.stop()
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await desk_runner.cleanup()
    await runner.cleanup()
    await retire_demo_runs(pool)
    await pool.close()
    breaks = {k: sum(s.breaks.get(k, 0) for s in stats.values()) for k in BREAKS}
    print(
        f"\nstopped. parcels: {sum(s.parcels for s in stats.values())}, "
        f"events accepted: {sum(s.events for s in stats.values())}, "
        f"rejected (typos): {sum(s.rejected for s in stats.values())}, rule breaks: {breaks}"
    )
    return 0


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    if settings.database_url is not None:
        # The demo renames its sites, overwrites its contract customers, revokes earlier demo
        # keys, makes an admin key and logs simulated events for good: never in a real database
        # (a shell that sourced the gateway's environment file has its URL).
        raise StartupError(
            "the demo runs on its own embedded PostgreSQL only: unset SCREENING_DATABASE_URL"
        )
    with database(settings) as dsn:
        return asyncio.run(_demo(settings, args, dsn))
