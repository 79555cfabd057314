"""Fixtures for the flagged-parcel tests: a gateway with the tiny ONNX detector and fast alert
timings, a real Standard Webhooks receiver on loopback, and upload/ingest helpers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from screening.alerts import ALERT_OPTIONS, ALERTS, AlertsComponent
from screening.alerts.policy import AlertPolicy
from screening.app import create_app
from screening.protection import PersonalDataVault
from screening.settings import Settings
from screening.storage import alerts as alert_store
from tests.conftest import Keys, RunningGateway, bounded_cleanup, make_keys
from tests.gateway.test_scans import png, tiny_detector

DARK = png(20)  # tiny detector: knife score ~0.92 -> flagged
BRIGHT = png(235)  # score ~0.08 -> clear

# Alert timings for tests: retries within a second, short leases, quick hold pushes.
FAST: dict[str, Any] = {
    "retry_schedule_s": (0.0, 0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3),
    "retry_jitter": 0.1,
    "relay_poll_s": 0.1,
    "relay_lease_s": 2.0,
    "webhook_timeout_s": 5.0,
    "hold_tick_s": 0.1,
    "hold_repush_s": 1.0,
    "tip_rate": 0.0,
    "clear_audit_share": 0.0,
    "cleared_audit_share": 0.0,
    "policy_ttl_s": 0.0,
}


async def wait_for(predicate: Callable[[], Any], within: float = 10.0, step: float = 0.02) -> None:
    """Poll state owned by other tasks (relays, receivers), bounded by ``within`` s."""
    async with asyncio.timeout(within):
        while not await _value(predicate()):  # noqa: ASYNC110 - state has no event to await
            await asyncio.sleep(step)


async def sse_message(resp: aiohttp.ClientResponse) -> dict[str, str]:
    """The fields of the next SSE message (comments skipped); {} once the stream has ended."""
    fields: dict[str, str] = {}
    async with asyncio.timeout(10):
        while True:
            raw = await resp.content.readline()
            if not raw:
                return fields
            line = raw.decode().rstrip("\n")
            if not line:
                if fields:
                    return fields
                continue
            if not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value


async def sse_events(resp: aiohttp.ClientResponse, n: int) -> list[dict[str, str]]:
    """The next ``n`` SSE messages that carry data (id-only messages skipped)."""
    out: list[dict[str, str]] = []
    while len(out) < n:
        message = await sse_message(resp)
        if not message:
            break
        if "data" in message:
            out.append(message)
    return out


async def _value(v: Any) -> Any:
    return await v if asyncio.iscoroutine(v) else v


@dataclass
class Receiver:
    """A police webhook endpoint on loopback that verifies every request with standardwebhooks."""

    secret: str = ""
    port: int = 0
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (id, payload)
    bad_signatures: int = 0
    signatures: list[str] = field(default_factory=list)  # every request's webhook-signature
    status: int = 200
    hang: asyncio.Event | None = None  # set: requests wait on it (a stuck delivery)
    hung: int = 0
    retry_after: str | None = None  # a Retry-After header on answers that are not 2xx
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def ids(self) -> list[str]:
        return [i for i, _ in self.received]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.signatures.append(request.headers.get("webhook-signature", ""))
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400)
        if self.hang is not None and not self.hang.is_set():
            self.hung += 1
            await self.hang.wait()
            return web.Response(status=503)  # its sender is gone; nobody reads this answer
        if 200 <= self.status < 300:
            self.received.append((request.headers["webhook-id"], payload))
            return web.Response(status=self.status)
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
        return web.Response(status=self.status, headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await bounded_cleanup(self._runner)
            self._runner = None


@dataclass
class AlertGateway:
    gw: RunningGateway
    runner: web.AppRunner
    endpoints: list[str] = field(default_factory=list)

    @property
    def alerts(self) -> AlertsComponent:
        return self.gw.app[ALERTS]

    @property
    def site(self) -> str:
        return self.gw.keys.site

    async def register(self, receiver: Receiver) -> str:
        """Register the receiver as this site's police endpoint; returns its id."""
        async with self.gw.http.post(
            f"{self.gw.url}/v1/webhook-endpoints",
            json={"url": receiver.url, "site_ids": [self.site]},
            headers=self.gw.auth("admin"),
        ) as resp:
            assert resp.status == 201, await resp.text()
            body = await resp.json()
        receiver.secret = body["secret"]
        self.endpoints.append(str(body["endpoint_id"]))
        return str(body["endpoint_id"])

    async def set_policy(self, police: float | None = 0.5, review: float = 0.3) -> None:
        async with self.gw.http.put(
            f"{self.gw.url}/v1/alerts/policy",
            json={"categories": {}, "default": {"review": review, "police": police}},
            headers=self.gw.auth("admin"),
        ) as resp:
            assert resp.status == 201, await resp.text()

    async def upload(
        self, image: bytes, waybill: str | None, occurred_at: datetime | None = None
    ) -> dict[str, Any]:
        meta = {
            "scan_id": str(uuid.uuid4()),
            "site_id": self.site,
            "scanner_id": "XR-1",
            "waybill_no": waybill,
            "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        }
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps(meta).encode(), filename="m.json")
        form.add_field("image", image, filename="image.png", content_type="image/png")
        async with self.gw.http.post(
            f"{self.gw.url}/v1/scans", data=form, headers=self.gw.auth()
        ) as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 201, body
        return body

    async def events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        async with self.gw.http.post(
            f"{self.gw.url}/v1/events", json=events, headers=self.gw.auth()
        ) as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 200, body
        return body

    async def call(
        self, method: str, path: str, role: str = "police", **kw: Any
    ) -> tuple[int, Any]:
        headers = {**self.gw.auth(role), **kw.pop("headers", {})}
        async with self.gw.http.request(
            method, f"{self.gw.url}{path}", headers=headers, **kw
        ) as resp:
            if resp.status == 204:
                return 204, None
            ctype = resp.headers.get("Content-Type", "")
            if "json" in ctype:
                return resp.status, await resp.json(content_type=None)
            return resp.status, await resp.read()

    async def alerts_of_site(self) -> list[dict[str, Any]]:
        status, body = await self.call("GET", "/v1/alerts")
        assert status == 200, body
        return list(body["alerts"])

    async def close(self) -> None:
        try:
            # The database is shared by the whole session: leave no live endpoint and the
            # default policy behind (other tests' gateways would alert or deliver under ours).
            async with self.gw.pool.acquire() as conn, conn.transaction():
                for endpoint_id in self.endpoints:
                    await alert_store.set_endpoint_enabled(
                        conn, uuid.UUID(endpoint_id), False, "test over"
                    )
                await alert_store.insert_policy(
                    conn, AlertPolicy().rules_json(), "tests", datetime.now(UTC)
                )
        finally:
            await self.gw.http.close()
            await bounded_cleanup(self.runner)


def _write_model(model: Path) -> None:
    model.parent.mkdir(parents=True, exist_ok=True)
    if not model.exists():
        tiny_detector(model)


async def start_alert_gateway(
    tmp_path: Path,
    pool: asyncpg.Pool[Any],
    vault: PersonalDataVault,
    keys: Keys | None = None,
    **options: Any,
) -> AlertGateway:
    model = tmp_path / "tiny.onnx"
    await asyncio.to_thread(_write_model, model)
    settings = Settings(
        data_dir=tmp_path,
        api_key_cache_s=0.0,
        model_path=model,
        max_image_bytes=200_000,
        max_image_pixels=1_000_000,
    )
    keys = keys or await make_keys(pool)
    app = create_app(settings, pool=pool, vault=vault)
    app[ALERT_OPTIONS] = {**FAST, **options}
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    http = aiohttp.ClientSession()
    gw = RunningGateway(f"http://127.0.0.1:{port}", http, pool, app, keys)
    return AlertGateway(gw, runner)


@pytest.fixture
async def agw(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> AsyncIterator[AlertGateway]:
    g = await start_alert_gateway(tmp_path, pool, vault)
    try:
        yield g
    finally:
        await g.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        if r.hang is not None:
            r.hang.set()
        await r.stop()


def soon(seconds: float = 0.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
