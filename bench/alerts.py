"""Alert latency benchmark (issue 5): from a scan upload to the police webhook received, p50 and
p99, while event ingest runs at half its measured capacity. Target: p99 <= model p99 + 250 ms.

The gateway runs in this process with a real outbox relay and a real Standard Webhooks receiver
on loopback; ingest load comes from a separate, paced process. With the shipped model the scans
are synthetic threat parcels from models.synth; without it (no models/xray-detector.onnx yet) a
tiny ONNX graph stands in, whose latency is then the "model latency".

Usage: python -m bench.alerts [--scans N] [--rate PER_S] [--model PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook

from bench.common import BENCH_PII_KEYS, run_on_database, serve
from bench.load import make_events
from screening.alerts import ALERT_OPTIONS
from screening.app import create_app
from screening.domain.access import Role
from screening.inference import DEFAULT_MODEL_PATH, Detector, DetectorConfig
from screening.services import access
from screening.settings import Settings
from screening.storage.database import create_pool, migrate


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


async def paced_load(url: str, key: str, site: str, rate: float, duration: float) -> dict[str, Any]:
    """Single-event POSTs at ``rate`` events/s (open loop), for the ``--load`` subprocess."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    sent = errors = 0
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:

        async def one(event: dict[str, Any]) -> None:
            nonlocal errors
            async with http.post(url, data=json.dumps(event).encode(), headers=headers) as r:
                await r.read()
                errors += r.status >= 300

        started = time.perf_counter()
        seq = 0
        while (elapsed := time.perf_counter() - started) < duration:
            due = int(elapsed * rate)
            while sent < due:
                if sent % 600 == 0:
                    seq += 1
                    batch = make_events(site, 600, 500_000 + seq)
                task = asyncio.create_task(one(batch[sent % 600]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    return {"sent": sent, "errors": errors, "events_per_s": sent / duration}


async def capacity(url: str, key: str, site: str, seconds: float) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.load", "--url", url, "--key", key, "--site", site,
        "--batch", "1", "--concurrency", "64", "--duration", str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return float(json.loads(out)["events_per_s"])


def scan_images(real_model: bool, n: int) -> list[bytes]:
    import cv2
    import numpy as np

    if not real_model:
        ok, buf = cv2.imencode(".png", np.full((480, 640, 3), 20, np.uint8))
        assert ok
        return [bytes(buf.tobytes())] * n
    from screening.alerts.tip import render_synthetic

    out: list[bytes] = []
    seed = 3_500_000
    while len(out) < min(n, 16):
        tip = render_synthetic(seed)
        seed += 1
        if tip is not None:
            out.append(tip.png)
    return [out[i % len(out)] for i in range(n)]


async def model_latency(model: Path, images: list[bytes]) -> float:
    detector = Detector(DetectorConfig(model_path=model))
    await detector.start()
    try:
        times = []
        for image in images[:30]:
            t0 = time.perf_counter()
            await detector.detect(image)
            times.append(time.perf_counter() - t0)
    finally:
        await detector.close()
    return pct(times, 0.99) * 1000


async def run(args: argparse.Namespace, dsn: str) -> None:
    tmp = Path(tempfile.mkdtemp())
    model = Path(args.model) if args.model else DEFAULT_MODEL_PATH
    real_model = model.exists()
    if not real_model:
        from tests.gateway.test_scans import tiny_detector

        model = tiny_detector(tmp / "tiny.onnx")
    pool = await create_pool(dsn, min_size=2, max_size=12)
    async with pool.acquire() as conn:
        await migrate(conn)
    site, load_site = f"BA-{uuid.uuid4().hex[:6]}", f"BL-{uuid.uuid4().hex[:6]}"
    for s in (site, load_site):
        await access.add_site(pool, s, "bench site")
    _, station = await access.create_key(pool, Role.STATION, [site])
    _, loader = await access.create_key(pool, Role.STATION, [load_site])
    _, admin = await access.create_key(pool, Role.ADMIN, [])
    settings = Settings(data_dir=tmp, model_path=model, log_json=False)
    app = create_app(settings, pool=pool, vault=BENCH_PII_KEYS)
    app[ALERT_OPTIONS] = {"tip_rate": 0.0, "clear_audit_share": 0.0}
    runner, base = await serve(app)

    received: dict[str, float] = {}
    secret = ""

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        payload = Webhook(secret).verify(body, dict(request.headers))
        received.setdefault(payload["data"]["waybill_no"], time.perf_counter())
        return web.Response(status=204)

    receiver_app = web.Application()
    receiver_app.router.add_post("/hook", hook)
    receiver, receiver_base = await serve(receiver_app)
    hook_url = f"{receiver_base}/hook"

    images = scan_images(real_model, args.scans)
    try:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {admin}"}
            async with http.post(
                f"{base}/v1/webhook-endpoints",
                json={"url": hook_url, "site_ids": [site]},
                headers=auth,
            ) as r:
                secret = (await r.json())["secret"]
            async with http.put(
                f"{base}/v1/alerts/policy",
                json={"categories": {}, "default": {"review": 0.0, "police": 0.0}},
                headers=auth,
            ) as r:
                assert r.status == 201, await r.text()
            model_p99 = await model_latency(model, images)
            print(
                f"model: {model.name} ({'shipped' if real_model else 'tiny stand-in'}), "
                f"p99 {model_p99:.1f} ms per image",
                flush=True,
            )
            cap = await capacity(f"{base}/v1/events", loader, load_site, 5.0)
            half = cap / 2
            print(f"ingest capacity {cap:.0f} events/s; loading at {half:.0f} events/s", flush=True)
            load = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.alerts", "--load", f"{base}/v1/events", loader,
                load_site, str(half), str(args.scans / args.rate + 4.0),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await asyncio.sleep(2.0)  # let the load settle
            sent: dict[str, float] = {}
            for i, image in enumerate(images):
                waybill = f"BA{i:010d}"
                form = aiohttp.FormData()
                meta = {
                    "scan_id": str(uuid.uuid4()),
                    "site_id": site,
                    "scanner_id": "XR-B",
                    "waybill_no": waybill,
                    "occurred_at": datetime.now(UTC).isoformat(),
                }
                form.add_field("metadata", json.dumps(meta).encode(), filename="m.json")
                form.add_field("image", image, filename="i.png", content_type="image/png")
                t0 = time.perf_counter()
                async with http.post(
                    f"{base}/v1/scans", data=form, headers={"Authorization": f"Bearer {station}"}
                ) as r:
                    body = await r.json()
                if r.status == 201 and body["verdict"]["findings"]:
                    sent[waybill] = t0
                await asyncio.sleep(1.0 / args.rate)
            deadline = time.perf_counter() + 10.0
            while set(sent) - set(received) and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            out, _ = await load.communicate()
            load_stats = json.loads(out)
        lat = [(received[w] - t) * 1000 for w, t in sent.items() if w in received]
        lost = len(sent) - len(lat)
        print(
            f"ingest during the run: {load_stats['events_per_s']:.0f} events/s, "
            f"errors {load_stats['errors']}"
        )
        if not lat:
            print("no scan raised an alert (the model found nothing)")
            return
        p50, p99 = statistics.median(lat), pct(lat, 0.99)
        target = model_p99 + 250.0
        print(
            f"scan upload -> webhook received, {len(lat)} alerts ({lost} missing): "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; target p99 <= {target:.0f} ms "
            f"(ratio {p99 / target:.2f})"
        )
    finally:
        await runner.cleanup()
        await receiver.cleanup()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--load"]:
        url, key, site, rate, duration = argv[1:6]
        print(json.dumps(asyncio.run(paced_load(url, key, site, float(rate), float(duration)))))
        return 0
    ap = argparse.ArgumentParser(prog="bench.alerts")
    ap.add_argument("--scans", type=int, default=60)
    ap.add_argument("--rate", type=float, default=4.0, help="scan uploads per second")
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    return run_on_database(lambda dsn: run(args, dsn))


if __name__ == "__main__":
    raise SystemExit(main())
