"""Load generator, run as a separate process: POSTs events to a URL and prints JSON stats.

Every batch is new parcels with new event ids, and every run (``--run``) its own: a run that
reused an earlier run's waybills would add a second life to parcels that already have one, and
measure a different (heavier) workload than the run before it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
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


class Bodies:
    """Request bodies of ``n`` events each (one object when ``n`` is 1), filled into one
    serialised template: a few µs per batch instead of about 10 µs per event for building and
    encoding them, CPU that the load would otherwise take from the server it shares cores with.

    ``body(seq)`` is batch ``seq`` of run ``run``: event ids ``SSSSSSSS-RRRR-4III-8RRR-RRRR...``
    and waybills ``B<run><seq><parcel>`` (S: seq, I: index in the batch, R: the run's tag).
    """

    def __init__(self, site: str, n: int, run: str) -> None:
        if not 1 <= n <= 0xFFF or len(run) != 16 or not all(c in "0123456789abcdef" for c in run):
            raise ValueError("1 to 4095 events a batch; run: 16 lower-case hex digits")
        events = make_events(site, n, 0)
        for i, event in enumerate(events):
            event["event_id"] = f"@{i}@"
            event["waybill_no"] = f"@W{i // 6}@"
        text = json.dumps(events[0] if n == 1 else events).replace("%", "%%")
        for i in range(n):
            event_id = f"%(s)s-{run[:4]}-4{i:03x}-8{run[4:7]}-{run[7:16]}{0:03x}"
            text = text.replace(f'"@{i}@"', f'"{event_id}"', 1)
        for parcel in range((n + 5) // 6):
            text = text.replace(f'"@W{parcel}@"', f'"B{run[:6].upper()}%(d)s{parcel:04d}"')
        self._template = text

    def body(self, seq: int) -> bytes:
        if not 0 <= seq <= 99_999_999:
            raise ValueError("seq is 0 to 99,999,999 (8 digits)")
        return (self._template % {"s": f"{seq:08x}", "d": f"{seq:08d}"}).encode()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    done = 0
    errors = 0
    latencies: list[float] = []
    bodies = Bodies(args.site, args.batch, args.run or secrets.token_hex(8))
    deadline = time.perf_counter() + args.duration
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker(w: int) -> None:
            nonlocal done, errors
            seq = w * 100_000  # each worker its own 100,000 batches
            while time.perf_counter() < deadline:
                seq += 1
                body = bodies.body(seq)
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
    ap.add_argument("--run", help="16 hex digits naming the run (default: random)")
    args = ap.parse_args()
    if not 1 <= args.concurrency <= 999:
        ap.error("--concurrency is 1 to 999")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
