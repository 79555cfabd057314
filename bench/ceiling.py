"""The HTTP ceiling of bench.ingest (a): the gateway's request parsing, validation and sealing,
with no database and no auth, served like the gateway (`screening serve --workers N`): N
processes on one port under screening.workers' supervisor.

Usage: python -m bench.ceiling --port P [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from screening.api.schemas import validate_event, validate_whole_body, validation_context
from screening.background import cancel_and_wait
from screening.protection import PersonalDataVault
from screening.runtime import run_server, stop_on_signals, tune_collector
from screening.services.ingest import prepare
from screening.settings import Settings
from screening.workers import Supervisor, watch_parent


def ceiling_app(vault: PersonalDataVault) -> web.Application:
    """Same request parsing, validation and sealing as the gateway; no database, no auth."""

    async def handler(request: web.Request) -> web.Response:
        raw = await request.read()
        now = datetime.now(UTC)
        context = validation_context(now, 300.0)
        whole = validate_whole_body(raw, context, 1000)  # the gateway's path for a valid body
        items: list[Any] = whole[1] if whole is not None else json.loads(raw)
        if not isinstance(items, list):
            items = [items]
        results = []
        for i, item in enumerate(items):
            try:
                event = item if whole is not None else validate_event(item, context)
            except ValidationError:
                results.append({"index": i, "result": "rejected"})
                continue
            prepare(event, vault, now)
            results.append({"index": i, "event_id": str(event.event_id), "result": "accepted"})
        return web.json_response({"results": results}, status=201 if len(items) == 1 else 200)

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/events", handler)
    return app


async def serve_one(port: int, supervisor: int | None) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop, second_ends=supervisor is None)
    watchdog = None if supervisor is None else asyncio.create_task(watch_parent(stop, supervisor))
    runner = web.AppRunner(ceiling_app(PersonalDataVault.generate()), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=supervisor is not None).start()
    tune_collector()
    print(f"ceiling listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await cancel_and_wait(watchdog)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.ceiling")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.workers > 1 and args.worker_of is None:
        command = [sys.executable, "-m", "bench.ceiling", "--port", str(args.port),
                   "--worker-of", str(os.getpid())]  # fmt: skip
        return asyncio.run(Supervisor(args.workers, command, dict(os.environ)).run())
    # On the event loop a gateway started with the same environment takes
    # (SCREENING_EVENT_LOOP), so that the ceiling and the gateway run the same HTTP stack.
    run_server(serve_one(args.port, args.worker_of), Settings().event_loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
