"""Load generator, run as a separate process: POSTs events to a URL and prints JSON stats.

Every batch is new parcels with new event ids, and every run (``--run``) its own: a run that
reused an earlier run's waybills would add a second life to parcels that already have one, and
measure a different (heavier) workload than the run before it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit


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

    ``body(seq)`` is batch ``seq`` of run ``run``: event ids
    ``XXXXXXXX-RRRR-4III-8RRR-SSSSSSSSRRRR`` and waybills ``B<run><seq><parcel>`` (X: random,
    S: seq, I: index in the batch, R: the run's tag). The random first 32 bits put each event at
    its own place in the log's primary key, as a station's own random UUIDs do; the rest keeps
    every id of a run unique by construction.
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
            event_id = f"@R@-{run[:4]}-4{i:03x}-8{run[4:7]}-%(s)s{run[7:11]}"
            text = text.replace(f'"@{i}@"', f'"{event_id}"', 1)
        for parcel in range((n + 5) // 6):
            text = text.replace(f'"@W{parcel}@"', f'"B{run[:6].upper()}%(d)s{parcel:04d}"')
        self._pieces = text.split("@R@")  # n + 1 pieces around the ids' random parts

    def body(self, seq: int) -> bytes:
        if not 0 <= seq <= 99_999_999:
            raise ValueError("seq is 0 to 99,999,999 (8 digits)")
        noise = secrets.token_hex(4 * (len(self._pieces) - 1))
        parts = [self._pieces[0]]
        for k, piece in enumerate(self._pieces[1:]):
            parts += (noise[8 * k : 8 * k + 8], piece)
        return ("".join(parts) % {"s": f"{seq:08x}", "d": f"{seq:08d}"}).encode()


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: send a request, wait for its whole response, again.

    It does only what the load needs: writes prepared bytes and reads the status line and
    Content-Length. aiohttp's client cost 120-190 µs of CPU a request, CPU that on a small
    machine is taken from the server under test (the load shares its cores); this one costs
    about 55 µs (wrk, where installed: 26-31 µs).
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._lost: BaseException | None = None
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            status = self._response()
        except ValueError as exc:
            waiter.set_exception(exc)
            return
        if status is not None:
            waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("the server closed the connection")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def _response(self) -> int | None:
        """The status of the response complete in the buffer (taken out of it), else None."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self._buffer[:end]).lower()
        length = re.search(rb"\r\ncontent-length: *(\d+)", head)
        if not head.startswith(b"http/1.1 ") or length is None:
            raise ValueError(f"not an HTTP/1.1 response with a Content-Length: {head[:200]!r}")
        total = end + 4 + int(length[1])
        if len(self._buffer) < total:
            return None
        del self._buffer[:total]
        if re.search(rb"\r\nconnection: *close", head):  # the server closes it after this answer
            self._closing = True
        return int(head[9:12])

    @property
    def open(self) -> bool:
        """Whether a request may still be sent on it (the server may have closed it since)."""
        return self._lost is None and self._transport is not None and not self._closing

    async def request(self, data: bytes) -> int:
        """Send one request; its response's status. ConnectionError when the connection is
        lost on the way, ValueError when the answer is not one this client reads."""
        if not self.open:
            raise ConnectionResetError("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


# As wrk's --timeout in bench.ingest: a request unanswered this long counts as an error.
REQUEST_TIMEOUT_S = 10.0


async def _connect(host: str, port: int) -> _Connection:
    _, conn = await asyncio.get_running_loop().create_connection(_Connection, host, port)
    return conn


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    head = (
        f"POST {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {args.key}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()
    done = 0
    errors = 0
    latencies: list[float] = []
    bodies = Bodies(args.site, args.batch, args.run or secrets.token_hex(8))
    deadline = time.perf_counter() + args.duration

    async def worker(w: int) -> None:
        nonlocal done, errors
        seq = w * 100_000  # each worker its own 100,000 batches
        conn: _Connection | None = None
        try:
            while time.perf_counter() < deadline:
                seq += 1
                body = bodies.body(seq)
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        if conn is None or not conn.open:  # none yet, or closed by the server
                            if conn is not None:
                                conn.close()
                            conn = None
                            conn = await _connect(host, port)
                        status = await conn.request(b"%s%d\r\n\r\n%s" % (head, len(body), body))
                except (OSError, TimeoutError, ValueError):
                    # Refused, lost, unanswered or unreadable: an error, and the connection with
                    # it (its next bytes could be this request's late answer). A pause, so that
                    # a server that refuses connections is not hammered by a tight loop.
                    errors += 1
                    if conn is not None:
                        conn.close()
                        conn = None
                    await asyncio.sleep(0.01)
                    continue
                if status >= 300:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                done += args.batch
        finally:
            if conn is not None:
                conn.close()

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
