"""The benchmarks' load client against a real aiohttp server on loopback: what it counts."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime

from aiohttp import web

from bench.common import free_port, serve
from bench.load import Bodies, run
from screening.api.schemas import EVENT_ADAPTER, validation_context


async def test_load_counts_answered_events_and_refusals_apart_across_closed_connections() -> None:
    seen: list[dict[str, object]] = []

    async def events(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer k"
        batch = json.loads(await request.read())
        seen.append({"batch": batch, "length": request.content_length})
        if len(seen) % 3 == 0:  # every third request refused, with a body to skip over
            return web.json_response({"code": "nope", "detail": "x" * 5000}, status=422)
        answer = web.json_response({"results": [{"result": "accepted"}] * len(batch)})
        if len(seen) % 4 == 0:  # and every fourth answered, then its connection closed
            answer.force_close()
        return answer

    app = web.Application()
    app.router.add_post("/v1/events", events)
    runner, base = await serve(app)
    try:
        args = argparse.Namespace(
            url=f"{base}/v1/events", key="k", site="S-1", batch=6, concurrency=3,
            duration=0.3, run="0123456789abcdef",
        )  # fmt: skip
        stats = await run(args)
    finally:
        await runner.cleanup()
    refused = len(seen) // 3
    assert stats["errors"] == refused > 0
    assert stats["events"] == (len(seen) - refused) * 6
    ids = [e["event_id"] for r in seen for e in r["batch"]]  # type: ignore[attr-defined]
    assert len(set(ids)) == len(ids)  # every request its own events
    assert all(len(r["batch"]) == 6 for r in seen)  # type: ignore[arg-type]


async def test_load_against_a_port_that_refuses_counts_errors_and_still_reports() -> None:
    args = argparse.Namespace(
        url=f"http://127.0.0.1:{free_port()}/v1/events", key="k", site="S-1", batch=1,
        concurrency=2, duration=0.2, run="0123456789abcdef",
    )  # fmt: skip
    stats = await run(args)  # nothing listens there: every connection is refused
    assert stats["events"] == 0
    assert stats["errors"] > 0


def test_batch_bodies_hold_unique_valid_events_at_random_places_in_the_key() -> None:
    """Each body is a batch of valid wire events; ids never repeat within or across batches of
    a run, and their first 32 bits are random (a station's own UUIDs land all over the log's
    primary key; ids in sequence would always insert at one end of it)."""
    bodies = Bodies("S-1", 500, "0123456789abcdef")
    batches = [json.loads(bodies.body(seq)) for seq in (0, 1, 99_999_999)]
    events = [e for batch in batches for e in batch]
    assert all(len(batch) == 500 for batch in batches)
    for e in events:
        EVENT_ADAPTER.validate_python(e, context=validation_context(datetime.now(UTC), 300))
    ids = [uuid.UUID(e["event_id"]) for e in events]
    assert len(set(ids)) == len(ids)
    assert len({i.bytes[:4] for i in ids}) > len(ids) * 0.99
    assert len({e["waybill_no"] for e in events}) == 3 * 84  # six events a parcel, 84 a batch
