"""Load generator, run as a separate process: POSTs events to a URL and prints JSON stats."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp


def make_events(site: str, n: int, seq: int) -> list[dict[str, Any]]:
    """n events spread over n/6 parcels, each parcel a full life (realistic mix of types)."""
    now = datetime.now(UTC) - timedelta(minutes=10)
    out: list[dict[str, Any]] = []
    kinds = [
        ("parcel.received", {"carrier": "SF", "flow": "inter_province"}),
        ("realname.registered", {"contract_customer_ref": "C000123"}),
        ("inspection.completed", {"clerk_id": "c1", "result": "pass"}),
        ("parcel.sealed", {"clerk_id": "c1"}),
        ("xray.scanned", {"scanner_id": "x1", "verdict": "clear"}),
        ("parcel.dispatched", {}),
    ]
    for i in range(n):
        kind, fields = kinds[i % 6]
        waybill = f"BN{seq:06d}{i // 6:08d}"
        out.append(
            {
                "type": kind,
                "event_id": str(uuid.uuid4()),
                "site_id": site,
                "waybill_no": waybill,
                "occurred_at": (now + timedelta(seconds=i % 6)).isoformat(),
                **fields,
            }
        )
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    done = 0
    errors = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + args.duration
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker(w: int) -> None:
            nonlocal done, errors
            seq = w * 1_000_000
            while time.perf_counter() < deadline:
                seq += 1
                events = make_events(args.site, args.batch, seq)
                body = json.dumps(events[0] if args.batch == 1 else events).encode()
                t0 = time.perf_counter()
                async with http.post(args.url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        errors += 1
                        continue
                latencies.append(time.perf_counter() - t0)
                done += args.batch

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def p(q: float) -> float | None:
        return latencies[int(q * (len(latencies) - 1))] if latencies else None

    return {
        "events": done,
        "errors": errors,
        "seconds": elapsed,
        "events_per_s": done / elapsed,
        "p50_ms": (p(0.5) or 0) * 1000,
        "p99_ms": (p(0.99) or 0) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", default="none")
    ap.add_argument("--site", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--duration", type=float, default=10.0)
    print(json.dumps(asyncio.run(run(ap.parse_args()))))


if __name__ == "__main__":
    main()
