"""Ingest benchmark (issue: gateway foundation), each figure a ratio against this machine's ceiling.

(a) durable single-event POSTs/s from a separate load process, against an aiohttp handler that
    does the same parsing, validation and sealing but no database (the HTTP ceiling). The load
    process is wrk (C, one thread; Debian's `wrk`) when it is installed, else bench.load: that
    Python client costs about twice wrk's CPU per request (55 against 26-31 µs), and on a 2-core
    machine that is CPU taken from the server under test. Each side runs at 64 and at 256
    connections; the ratio is of each side's best, as a durable path is latency-bound at low
    concurrency (each request waits for a group commit) while the ceiling is CPU-bound at any. Both
    sides run as one process (the setup of the reference figures in the design notes: one aiohttp
    process, the load on the other core) and, where the machine has more cores, as one process per
    core (`screening serve --workers N`; the ceiling likewise): there the ceiling has every core to
    itself while the gateway shares them with PostgreSQL;
(b) events/s in batches of 500 through the API, against raw asyncpg COPY of the same rows into
    the same events table in 500-row transactions from one connection (the database ceiling),
    with the gateway as one process and as one per core (the deployment: SCREENING_WORKERS),
    each at 4 and at 8 requests in flight per process, the best counting (with 4 and two
    commits in flight, one process sat a fifth idle while both waited for the database); for
    context also against COPY from one connection per gateway process;
(c) p95 latency of a one-month rates query for a site with one million dispatched parcels.

(a) and (b) run in rounds (``--rounds``, 2 by default), the ceiling and the gateway in turn,
and each side's best counts: on a shared machine the same code's CPU cost per event drifts by
a quarter between minutes, and a single pass pairs one side's fast minute with the other's slow
one.

Servers run as their own processes (CPU read from /proc: Linux).

Before (a), the events table is given ``--history`` earlier events of the bench site (2 million
by default): every figure of (a) and (b) is then taken on a table with a history, as a deployed
gateway's is. The loads' event ids are random in their first 32 bits, as a station's own UUIDs
are, and (b)'s COPY copies the very rows its load sends (bench.load.Bodies).

Usage: python -m bench.ingest [--duration S] [--rounds N] [--parcels N] [--workers N]
                              [--history EVENTS] [--python-load]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.common import BENCH_PII_KEYS, ServerProcess, bench_env, free_port, run_on_database
from bench.load import Bodies
from screening.api.schemas import EVENT_ADAPTER
from screening.domain.access import Role
from screening.protection import PersonalDataVault
from screening.services import access
from screening.services.ingest import prepare
from screening.storage.database import create_pool, migrate
from screening.storage.parcels import ROLLUP_STRIPES


class CpuMeter:
    """CPU seconds spent by each party of a run on this machine: the server under load (the
    gateway or the ceiling, each a process tree: a supervisor and its workers), the load
    generator (a waited-for child) and the PostgreSQL server processes (all read from /proc:
    Linux, and for PostgreSQL only when the server is local)."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool
        self.cores = os.cpu_count() or 1

    async def _server_pids(self) -> list[int]:
        async with self.pool.acquire() as conn:
            return [r[0] for r in await conn.fetch("SELECT pid FROM pg_stat_activity")]

    @staticmethod
    def _proc_seconds(pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _times(self, pids: list[int]) -> dict[int, float]:
        times = {pid: self._proc_seconds(pid) for pid in pids}
        return {pid: t for pid, t in times.items() if t is not None}

    async def sample(self, loaded: ServerProcess) -> dict[str, Any]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "wall": time.perf_counter(),
            "gateway": self._times(loaded.pids()),
            "load": children.ru_utime + children.ru_stime,
            "postgres": self._times(await self._server_pids()),
        }

    async def measure(
        self, run: Coroutine[Any, Any, dict[str, Any]], loaded: ServerProcess
    ) -> dict[str, Any]:
        """Run ``run`` (a load against ``loaded``) and add its CPU shares to the stats it
        returns."""
        before = await self.sample(loaded)
        stats = await run
        after = await self.sample(loaded)
        wall = after["wall"] - before["wall"]
        used = {"load": after["load"] - before["load"]}
        for party in ("gateway", "postgres"):  # a process new in the run counts from zero
            if after[party]:
                used[party] = sum(t - before[party].get(pid, 0.0)
                                  for pid, t in after[party].items())  # fmt: skip
        stats["cpu_cores"] = {k: v / wall for k, v in used.items()}
        events = stats["events"] or 1
        stats["cpu_us_per_event"] = {k: v / events * 1e6 for k, v in used.items()}
        return stats


def verdict(ratio: float, target: float) -> str:
    """A ratio against its target, judged unrounded: 0.3958 prints as 0.396 and is a miss."""
    return f"{ratio:.3f}  (target >= {target}: {'met' if ratio >= target else 'missed'})"


def cpu_line(stats: dict[str, Any], cores: int) -> str:
    per = stats["cpu_us_per_event"]
    busy = stats["cpu_cores"]
    parts = ", ".join(f"{k} {per[k]:.0f} µs ({busy[k]:.2f} cores)" for k in per)
    return f"CPU per event: {parts}; {sum(busy.values()):.2f} of {cores} cores busy"


async def load(url: str, key: str, site: str, batch: int, conc: int, dur: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.load",
        "--url",
        url,
        "--key",
        key,
        "--site",
        site,
        "--batch",
        str(batch),
        "--concurrency",
        str(conc),
        "--duration",
        str(dur),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    result: dict[str, Any] = json.loads(out)
    return result


WRK_SCRIPT = Path(__file__).with_name("wrk_events.lua")
_WRK_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk_ms(out: str, pct: str) -> float:
    found = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    return float(found[1]) * _WRK_UNIT_MS[found[2]] if found else float("nan")


async def wrk_load(url: str, key: str, site: str, conc: int, dur: float) -> dict[str, Any]:
    """(a)'s load from wrk: single-event POSTs (bench/wrk_events.lua), stats as bench.load's."""
    occurred = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{conc}", f"-d{max(int(dur), 1)}s", "--timeout", "10s", "--latency",
        "-s", str(WRK_SCRIPT), url, "--", key, site, uuid.uuid4().hex[:8], occurred,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out = (await proc.communicate())[0].decode()
    summary = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", out)
    if proc.returncode != 0 or summary is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-500:]}")
    seconds = float(summary[2]) * _WRK_UNIT_MS[summary[3]] / 1000
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    refused = int(failed[1]) if failed else 0
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        out)  # fmt: skip
    errors = refused + (sum(map(int, sockets.groups())) if sockets else 0)
    events = int(summary[1]) - refused
    return {"events": events, "errors": errors, "seconds": seconds,
            "events_per_s": events / seconds, "p50_ms": _wrk_ms(out, "50"),
            "p99_ms": _wrk_ms(out, "99")}  # fmt: skip


async def copy_ceiling(
    pool: asyncpg.Pool[Any], vault: PersonalDataVault, site: str, n: int, streams: int = 1
) -> float:
    """Events/s for raw COPY of the rows our ingest writes to `events` for the batches the (b)
    load sends (bench.load.Bodies, a run of its own), 500 rows a transaction, from ``streams``
    connections at once (each its own share of the rows)."""
    now = datetime.now(UTC)
    bodies = Bodies(site, 500, secrets.token_hex(8))
    rows = []
    for seq in range(n // 500):
        for item in json.loads(bodies.body(seq)):
            p = prepare(EVENT_ADAPTER.validate_python(item), vault, now)
            rows.append(
                (
                    p.site_id,
                    p.event_id,
                    p.event_type.value,
                    p.waybill_no,
                    p.occurred_at,
                    p.received_at,
                    json.dumps(p.payload),
                    p.digest,
                )
            )
    cols = [
        "site_id",
        "event_id",
        "event_type",
        "waybill_no",
        "occurred_at",
        "received_at",
        "payload",
        "payload_digest",
    ]
    batches = [rows[i : i + 500] for i in range(0, n, 500)]

    async def stream(mine: list[list[tuple[Any, ...]]]) -> None:
        async with pool.acquire() as conn:
            for batch in mine:
                async with conn.transaction():
                    await conn.copy_records_to_table("events", records=batch, columns=cols)

    started = time.perf_counter()
    await asyncio.gather(*(stream(batches[k::streams]) for k in range(streams)))
    return n / (time.perf_counter() - started)


async def event_rows(pool: asyncpg.Pool[Any]) -> int:
    """Rows in `events` now, printed beside each (b) figure: COPY slows as the table grows."""
    rows = await pool.fetchval("SELECT count(*) FROM events")
    assert isinstance(rows, int)
    return rows


# Earlier events of the bench site: a station's parcel receipts, random ids, waybills no load
# sends. A run writes 2-3 million events; measured into a table of a few hundred thousand
# rows, COPY ran 84,000-90,000 events/s in its first round and 59,000-66,000 in its second,
# and the best round counts, while the gateway moved by 4 %: this puts every figure on a table
# that has a history, as a deployed one has.
FILL_HISTORY = """
INSERT INTO events (site_id, event_id, event_type, waybill_no, occurred_at, received_at,
                    payload, payload_digest)
SELECT $1::text, id, 'parcel.received', waybill, at, at,
       jsonb_build_object('type', 'parcel.received', 'event_id', id, 'site_id', $1::text,
                          'waybill_no', waybill, 'occurred_at', at, 'carrier', 'SF',
                          'flow', 'inter_province'),
       sha256(convert_to(id::text, 'UTF8'))
FROM (SELECT gen_random_uuid() AS id, 'HIST' || lpad(g::text, 10, '0') AS waybill,
             now() - interval '60 days' + g * interval '1 second' AS at
      FROM generate_series($2::bigint, $3::bigint) AS g) AS s
"""


async def fill_history(pool: asyncpg.Pool[Any], site: str, rows: int) -> None:
    """Give the events table ``rows`` earlier events of ``site`` (FILL_HISTORY), then vacuum
    and analyze it, as autovacuum would have by then."""
    for first in range(1, rows + 1, 250_000):
        await pool.execute(FILL_HISTORY, site, first, min(rows, first + 249_999))
    await pool.execute("VACUUM ANALYZE events")


FILL_PARCELS = """
INSERT INTO parcels (site_id, waybill_no, flow, carrier, first_seen_at, updated_at,
    dispatched_at, dispatch_day, rate_flow, xray_required, realname_ok, inspection_ok, xray_ok,
    compliant, problems)
SELECT $1, 'BIG' || lpad(g::text, 9, '0'), f, 'SF', t, t, t,
       (t AT TIME ZONE 'Asia/Shanghai')::date, f, true, r, i, x, r AND i AND x, '{}'
FROM (
    SELECT g,
           (ARRAY['air', 'rail', 'international', 'inter_province', 'intra_province',
                  'same_city'])[1 + g % 6] AS f,
           timestamptz '2026-10-01 00:00+08' + (g % (30 * 86400)) * interval '1 second' AS t,
           g % 50 <> 0 AS r, g % 40 <> 0 AS i, g % 30 <> 0 AS x
    FROM generate_series(1, $2) AS g
) s
"""
FILL_ROLLUP = """
INSERT INTO site_daily_rates (site_id, day, flow, stripe, dispatched, realname_ok, inspection_ok,
                              xray_ok, all_ok, xray_required)
SELECT site_id, dispatch_day, rate_flow, abs(hashtext(waybill_no) % $2), count(*),
       count(*) FILTER (WHERE realname_ok), count(*) FILTER (WHERE inspection_ok),
       count(*) FILTER (WHERE xray_ok), count(*) FILTER (WHERE compliant),
       count(*) FILTER (WHERE xray_required)
FROM parcels WHERE site_id = $1
GROUP BY site_id, dispatch_day, rate_flow, abs(hashtext(waybill_no) % $2)
"""


async def rates_latency(
    pool: asyncpg.Pool[Any], http: aiohttp.ClientSession, base: str, key: str, parcels: int
) -> tuple[float, float, int]:
    site = f"BIG-{uuid.uuid4().hex[:6]}"
    await access.add_site(pool, site, "busy site")
    async with pool.acquire() as conn:
        await conn.execute(FILL_PARCELS, site, parcels)
        # The same counters the ingest path maintains incrementally, built in one pass here,
        # spread over every stripe as a busy site's many connections spread them.
        await conn.execute(FILL_ROLLUP, site, ROLLUP_STRIPES)
        await conn.execute("ANALYZE site_daily_rates")
    _, admin = await access.create_key(pool, Role.ADMIN, [])
    url = f"{base}/v1/sites/{site}/rates?from=2026-10-01&to=2026-10-31&group_by=day"
    headers = {"Authorization": f"Bearer {admin}"}
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        async with http.get(url, headers=headers) as resp:
            body = await resp.json()
        times.append(time.perf_counter() - t0)
    times.sort()
    return (
        times[int(0.95 * (len(times) - 1))] * 1000,
        statistics.median(times) * 1000,
        body["total"]["dispatched"],
    )


async def run(args: argparse.Namespace, dsn: str) -> None:
    pool = await create_pool(dsn, min_size=2, max_size=10)
    try:
        await _run(args, dsn, pool)
    finally:
        await pool.close()


async def _run(args: argparse.Namespace, dsn: str, pool: asyncpg.Pool[Any]) -> None:
    async with pool.acquire() as conn:
        await migrate(conn)
    site = f"BN-{uuid.uuid4().hex[:6]}"
    await access.add_site(pool, site, "bench site")
    await access.add_contract(  # the contract customer bench.load's registrations name
        pool, site, "C000123", name="bench customer", uscc="91420100MA4K00001U",
        agreement_no="SA-BENCH", valid_from=date(2026, 1, 1),
    )  # fmt: skip
    _, key = await access.create_key(pool, Role.STATION, [site])
    vault = BENCH_PII_KEYS  # the COPY ceiling's rows are made as the gateway's are
    meter = CpuMeter(pool)
    d = args.duration
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    loader = "wrk, 1 thread" if use_wrk else "bench.load (Python; install wrk for a C one)"
    data_dir = tempfile.mkdtemp()

    def gateway(n: int, port: int) -> ServerProcess:
        env = bench_env(database_url=dsn, data_dir=data_dir, port=str(port), log_level="WARNING")
        command = [sys.executable, "-m", "screening.cli", "serve", "--workers", str(n)]
        return ServerProcess(command, env, b"gateway listening", n)

    def ceiling(n: int, port: int) -> ServerProcess:
        command = [sys.executable, "-m", "bench.ceiling", "--port", str(port), "--workers", str(n)]
        return ServerProcess(command, dict(os.environ), b"ceiling listening", n)

    def single(url: str, conc: int) -> Coroutine[Any, Any, dict[str, Any]]:
        if use_wrk:
            return wrk_load(url, key, site, conc, d)
        return load(url, key, site, 1, conc, d)

    counts = sorted({1, args.workers})
    print(f"this machine has {meter.cores} cores; the gateway and the HTTP ceiling run as "
          f"{' and as '.join(map(str, counts))} process(es) on one port "
          f"(screening serve --workers N)")  # fmt: skip
    rounds = args.rounds
    if args.history:
        started = time.perf_counter()
        await fill_history(pool, site, args.history)
        print(f"the events table holds {await event_rows(pool):,} earlier events of the bench "
              f"site ({time.perf_counter() - started:.0f} s to make)", flush=True)  # fmt: skip
    print(f"(a) single-event POSTs, {d:.0f} s each, load from {loader}; {rounds} round(s), "
          "the ceiling and the gateway in turn, the best of each", flush=True)  # fmt: skip
    for n in counts:
        gw_port, ceil_port = free_port(), free_port()
        best: dict[str, float] = {"ceiling": 0.0, "gateway": 0.0}
        async with gateway(n, gw_port) as gw, ceiling(n, ceil_port) as ceil:
            for rnd, conc in ((r, c) for r in range(1, rounds + 1) for c in (64, 256)):
                ceil_a = await meter.measure(
                    single(f"http://127.0.0.1:{ceil_port}/v1/events", conc), ceil
                )
                real_a = await meter.measure(
                    single(f"http://127.0.0.1:{gw_port}/v1/events", conc), gw
                )
                print(f"    {n} process(es) each, {conc} connections, round {rnd}")
                print(
                    f"    HTTP ceiling (no DB):  {ceil_a['events_per_s']:8.0f} events/s  "
                    f"p50 {ceil_a['p50_ms']:.1f} ms, errors {ceil_a['errors']}"
                )
                print(f"      {cpu_line(ceil_a, meter.cores)}")
                print(
                    f"    gateway, durable:      {real_a['events_per_s']:8.0f} events/s  "
                    f"p50 {real_a['p50_ms']:.1f} ms, p99 {real_a['p99_ms']:.1f} ms, "
                    f"errors {real_a['errors']}"
                )
                print(f"      {cpu_line(real_a, meter.cores)}")
                best["ceiling"] = max(best["ceiling"], ceil_a["events_per_s"])
                best["gateway"] = max(best["gateway"], real_a["events_per_s"])
        print(
            f"    {n} process(es) each, ratio of the best: {best['gateway']:.0f} / "
            f"{best['ceiling']:.0f} = {verdict(best['gateway'] / best['ceiling'], 0.6)}",
            flush=True,
        )

    print(f"(b) batches of 500 events, {d:.0f} s each; {rounds} round(s), COPY and the gateway "
          "in turn, the best of each", flush=True)  # fmt: skip
    copy_b = 0.0
    copy_n = {n: 0.0 for n in counts if n > 1}
    best_b = {n: 0.0 for n in counts}
    for rnd in range(1, rounds + 1):
        before = await event_rows(pool)
        rate = await copy_ceiling(pool, vault, site, 50_000)
        copy_b = max(copy_b, rate)
        print(f"    round {rnd}: raw COPY ceiling: {rate:8.0f} events/s  (one connection: "
              f"the target's; into {before:,} rows)")  # fmt: skip
        # For context: COPY from as many connections as the gateway has processes, which the
        # one-connection figure leaves one core of a 2-core machine free for.
        for n in copy_n:
            rate = await copy_ceiling(pool, vault, site, 50_000, streams=n)
            copy_n[n] = max(copy_n[n], rate)
            print(f"    round {rnd}: raw COPY, {n} connections: {rate:8.0f} events/s")
        for n in counts:
            gw_port = free_port()
            async with gateway(n, gw_port) as gw:
                url = f"http://127.0.0.1:{gw_port}/v1/events"
                # Like (a)'s two connection counts: few requests in flight leave one process
                # idle while its commits wait for the database; more keep it busy.
                levels = [args.batch_concurrency] if args.batch_concurrency else [4 * n, 8 * n]
                for conc_b in levels:
                    before = await event_rows(pool)
                    real_b = await meter.measure(load(url, key, site, 500, conc_b, d), gw)
                    best_b[n] = max(best_b[n], real_b["events_per_s"])
                    print(
                        f"    round {rnd}: gateway, {n} process(es), {conc_b} requests in "
                        f"flight: {real_b['events_per_s']:8.0f} events/s  "
                        f"p50 {real_b['p50_ms']:.0f} ms per batch, errors {real_b['errors']}; "
                        f"into {before:,} rows"
                    )
                    print(f"      {cpu_line(real_b, meter.cores)}", flush=True)
    for n in counts:
        also = (f"; {best_b[n] / copy_n[n]:.2f} of COPY from {n} connections ({copy_n[n]:.0f})"
                if n in copy_n else "")  # fmt: skip
        print(f"    {n} process(es), ratio of the best: {best_b[n]:.0f} / {copy_b:.0f} = "
              f"{verdict(best_b[n] / copy_b, 0.4)}{also}", flush=True)  # fmt: skip

    rates_port = free_port()
    async with gateway(1, rates_port):
        print(
            f"(c) one-month rates query, site with {args.parcels:,} dispatched parcels", flush=True
        )
        async with aiohttp.ClientSession() as http:
            p95, p50, total = await rates_latency(
                pool, http, f"http://127.0.0.1:{rates_port}", key, args.parcels
            )
        print(
            f"    {total:,} parcels in range; p50 {p50:.1f} ms, p95 {p95:.1f} ms  (target < 50 ms)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.ingest")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--parcels", type=int, default=1_000_000)
    ap.add_argument("--history", type=int, default=2_000_000, metavar="EVENTS",
                    help="(a), (b): earlier events in the table before any figure")  # fmt: skip
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes of the gateway and of the HTTP ceiling (default: the cores)")
    ap.add_argument("--rounds", type=int, default=2, choices=range(1, 10), metavar="N",
                    help="(a), (b): rounds, each side in turn; each side's best counts "
                         "(this machine's speed drifts between runs)")  # fmt: skip
    ap.add_argument("--batch-concurrency", type=int, default=0,
                    help="(b): requests in flight (default: 4 and 8 per worker, the best counts)")
    ap.add_argument("--python-load", action="store_true",
                    help="(a): load from bench.load even where wrk is installed")
    args = ap.parse_args(argv if argv is not None else [])
    return run_on_database(lambda dsn: run(args, dsn))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
