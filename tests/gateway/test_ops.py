"""Operational endpoints (/healthz, /readyz, /metrics) and group commit seen through the metrics."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from screening.alerts import AlertsComponent
from screening.api.context import GATEWAY
from screening.app import create_app
from screening.protection import PersonalDataVault
from screening.settings import Settings
from tests.conftest import RunningGateway
from tests.gateway.events import event

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gw: RunningGateway) -> Samples:
    async with gw.http.get(f"{gw.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def post_one(gw: RunningGateway) -> int:
    item = event(
        "parcel.received", gw.keys.site, f"GC{uuid.uuid4().hex[:12]}", carrier="SF", flow="air"
    )
    async with gw.http.post(f"{gw.url}/v1/events", json=item, headers=gw.auth()) as resp:
        await resp.read()
        return resp.status


async def test_healthz_answers_ok(gateway: RunningGateway) -> None:
    async with gateway.http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"


async def test_readyz_answers_ok_with_the_database_checked(gateway: RunningGateway) -> None:
    async with gateway.http.get(f"{gateway.url}/readyz") as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["writer"] == "ok"


async def test_metrics_are_prometheus_text_counting_ingested_events(
    gateway: RunningGateway,
) -> None:
    assert await post_one(gateway) == 201
    samples = await scrape(gateway)
    names = {name for name, _ in samples}
    assert value(samples, "screening_events_total", type="parcel.received", result="accepted") == 1
    assert "screening_group_commit_events_count" in names
    assert "screening_group_commit_events_bucket" in names
    assert value(samples, "screening_group_commit_events_sum") == 1


async def test_concurrent_single_event_posts_share_transactions(gateway: RunningGateway) -> None:
    requests = 200
    before = await scrape(gateway)

    statuses = await asyncio.gather(*(post_one(gateway) for _ in range(requests)))

    assert statuses == [201] * requests  # 201 = committed
    after = await scrape(gateway)
    commits = value(after, "screening_group_commit_events_count") - value(
        before, "screening_group_commit_events_count"
    )
    committed = value(after, "screening_group_commit_events_sum") - value(
        before, "screening_group_commit_events_sum"
    )
    assert committed == requests
    assert 1 <= commits < requests
    assert value(
        after, "screening_events_total", type="parcel.received", result="accepted"
    ) - value(before, "screening_events_total", type="parcel.received", result="accepted") == (
        requests
    )


async def test_a_start_failing_late_stops_every_part_already_started(
    settings: Settings, pool: asyncpg.Pool[Any], vault: PersonalDataVault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A failure after the writer has started (here the alert component's start, as a database
    that refuses its LISTEN connection would fail it) stops the writer and every other part
    started before it, so the process can exit instead of waiting on what they hold."""

    async def refused(self: AlertsComponent) -> None:
        raise ConnectionRefusedError("LISTEN connection refused")

    monkeypatch.setattr(AlertsComponent, "start", refused)
    before = asyncio.all_tasks()  # a session-scoped gateway of other tests may be running
    app = create_app(settings, pool=pool, vault=vault)
    runner = web.AppRunner(app)
    with pytest.raises(ConnectionRefusedError):
        await runner.setup()
    writer = app[GATEWAY].writer
    assert not writer.running  # started, then stopped by the failure
    assert {t.get_name() for t in asyncio.all_tasks() - before}.isdisjoint(
        {"group-commit-writer", "ledger-checkpoints", "queue-depth"}
    )
    async with pool.acquire() as conn:  # the shared pool (not the app's) is left working
        assert await conn.fetchval("SELECT 1") == 1
