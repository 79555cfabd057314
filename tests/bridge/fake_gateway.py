"""A real aiohttp server on 127.0.0.1 implementing the gateway's station contract, for tests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

KEY = "test-station-key"
METADATA_FIELDS = {
    "scan_id",
    "site_id",
    "scanner_id",
    "waybill_no",
    "occurred_at",
    "line_count",
    "pixels_per_line",
}


def problem(status: int, code: str, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": code, "status": status, "code": code, "detail": detail}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


@dataclass
class FakeGateway:
    scans: dict[str, dict[str, Any]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    images: dict[str, dict[str, bytes]] = field(default_factory=dict)
    posts: int = 0
    duplicates: int = 0
    conflicts: int = 0
    overload_next: int = 0  # answer this many POSTs with 503 + Retry-After
    fail_next: int = 0  # answer this many POSTs with 500
    bad_gateway_next: int = 0  # answer this many POSTs with a proxy's 502 page in GBK
    portal_next: int = 0  # answer this many POSTs with a captive portal's 200 page
    retry_after: str = "0"  # the Retry-After sent with each 503
    acks: list[str] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/scans", self.post_scan)
        app.router.add_get("/v1/stations/stream", self.stream)
        return app

    async def start(self, port: int = 0) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port or self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {KEY}"

    async def post_scan(self, request: web.Request) -> web.Response:
        self.posts += 1
        if not self._authorised(request):
            return problem(401, "unauthorized", "bad station key")
        if self.fail_next > 0:
            self.fail_next -= 1
            return problem(500, "internal", "database unavailable")
        if self.bad_gateway_next > 0:
            self.bad_gateway_next -= 1
            # a reverse proxy's error page: not JSON, not UTF-8, and no charset declared
            page = "<html><body><h1>502 网关错误</h1></body></html>".encode("gbk")
            return web.Response(status=502, body=page, content_type="text/html")
        if self.portal_next > 0:
            self.portal_next -= 1
            # a hotel-style captive portal or a misrouted proxy: 200, and nothing stored
            page = "<html><body>请先登录 / please sign in</body></html>"
            return web.Response(status=200, text=page, content_type="text/html")
        if self.overload_next > 0:
            self.overload_next -= 1
            resp = problem(503, "overloaded", "inference busy")
            resp.headers["Retry-After"] = self.retry_after
            return resp
        parts: dict[str, bytes] = {}
        types: dict[str, str] = {}
        reader = await request.multipart()
        async for part in reader:
            if not hasattr(part, "read") or part.name is None:
                continue
            parts[part.name] = await part.read()  # type: ignore[union-attr]
            types[part.name] = part.headers.get("Content-Type", "")
        if "metadata" not in parts or "image" not in parts:
            return problem(422, "validation_error", "metadata and image parts are required")
        if types["metadata"] != "application/json" or types["image"] != "image/png":
            return problem(415, "unsupported_media_type", str(types))
        meta = json.loads(parts["metadata"])
        if set(meta) != METADATA_FIELDS:
            return problem(422, "validation_error", f"fields {sorted(meta)}")
        if meta["site_id"] != "site-1":
            return problem(403, "forbidden", "site not bound to this key")
        digest = hashlib.sha256(
            json.dumps(meta, sort_keys=True).encode() + b"".join(parts[k] for k in sorted(parts))
        ).hexdigest()
        scan_id = meta["scan_id"]
        if scan_id in self.digests:
            if self.digests[scan_id] != digest:
                self.conflicts += 1
                return problem(409, "conflict", "same scan_id, different content")
            self.duplicates += 1
            return web.json_response({"scan_id": scan_id, "result": "duplicate"}, status=200)
        self.digests[scan_id] = digest
        self.scans[scan_id] = meta
        self.images[scan_id] = {k: v for k, v in parts.items() if k != "metadata"}
        verdict = {"classes": [], "flagged": False}
        return web.json_response(
            {"scan_id": scan_id, "result": "accepted", "verdict": verdict}, status=201
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return problem(401, "unauthorized", "bad station key")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if data.get("type") == "hold.ack":
                        self.acks.append(data["hold_id"])
                    elif data.get("type") == "hold.release.ack":
                        self.acks.append(data["release_id"])
        finally:
            self.sockets.remove(ws)
        return ws

    async def push_release(
        self, release_id: str, hold_id: str, waybill_no: str, resolution: str = "released"
    ) -> int:
        message = {"type": "hold.release", "release_id": release_id, "hold_id": hold_id,
                   "waybill_no": waybill_no, "resolution": resolution}
        for ws in self.sockets:
            await ws.send_str(json.dumps(message))
        return len(self.sockets)

    async def push_hold(self, hold_id: str, waybill_no: str, reason: str = "flagged") -> int:
        message = {"type": "hold", "hold_id": hold_id, "waybill_no": waybill_no, "reason": reason}
        for ws in self.sockets:
            await ws.send_str(json.dumps(message))
        return len(self.sockets)
