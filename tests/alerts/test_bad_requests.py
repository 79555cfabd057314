"""Hostile or broken requests to the routes beyond ingest: each gets a 4xx problem document with
a stable code (never a 500), nothing is written for it, and the gateway keeps serving."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.alerts.conftest import AlertGateway

NESTED = b"[" * 3000 + b"]" * 3000  # deeper than Python's parser recurses


async def assert_serving(agw: AlertGateway) -> None:
    status, _ = await agw.call("GET", "/healthz")
    assert status == 200


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("POST", "/v1/watchlist", "admin"),
        ("PUT", "/v1/alerts/policy", "admin"),
        ("POST", "/v1/webhook-endpoints", "admin"),
        ("PUT", "/v1/review/reviewers/k/level", "admin"),
        ("POST", "/console/session", "admin"),  # needs no key at all
    ],
)
async def test_a_body_nested_too_deeply_is_malformed_json(
    agw: AlertGateway, method: str, path: str, role: str
) -> None:
    status, body = await agw.call(
        method, path, role=role, data=NESTED, headers={"Content-Type": "application/json"}
    )
    assert (status, body["code"]) == (400, "malformed_json"), body
    await assert_serving(agw)


async def test_a_charset_parameter_does_not_decide_how_json_is_read(agw: AlertGateway) -> None:
    # JSON is UTF-8 (or -16/-32, told by its first bytes): a charset it names is not consulted.
    status, body = await agw.call(
        "POST",
        "/v1/watchlist/remove",
        role="admin",
        data=b'{"digests": ["' + b"0" * 64 + b'"]}',
        headers={"Content-Type": "application/json; charset=bogus-xyz"},
    )
    assert status == 200, body


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decode_with_its_content_encoding_is_malformed(
    agw: AlertGateway, encoding: str
) -> None:
    for path, role, ctype in (
        ("/v1/events", "station", "application/json"),
        ("/v1/watchlist", "admin", "application/json"),
        ("/v1/scans", "station", "multipart/form-data; boundary=b0undary"),
    ):
        status, body = await agw.call(
            "POST",
            path,
            role=role,
            data=b"not compressed at all",
            headers={"Content-Type": ctype, "Content-Encoding": encoding},
        )
        assert (status, body["code"]) == (400, "malformed_body"), (path, body)
    await assert_serving(agw)


async def test_a_violations_cursor_nested_too_deeply_is_an_invalid_cursor(
    agw: AlertGateway,
) -> None:
    raw = b'["2026-11-20T00:00:00+00:00","a",' + b"[" * 2500 + b"]" * 2500 + b"]"
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    status, body = await agw.call(
        "GET", f"/v1/sites/{agw.site}/violations?cursor={cursor}", role="supervisor"
    )
    assert (status, body["code"]) == (400, "invalid_cursor"), body


async def test_a_digest_listed_twice_in_one_watchlist_addition_is_refused(
    agw: AlertGateway,
) -> None:
    digest = uuid.uuid4().hex * 2
    status, body = await agw.call(
        "POST",
        "/v1/watchlist",
        role="admin",
        json={"entries": [{"digest": digest}, {"digest": digest, "label": "dup"}]},
    )
    assert (status, body["code"]) == (422, "duplicate_entry"), body
    assert [e["path"] for e in body["errors"]] == ["entries"]
    listed = await agw.gw.pool.fetchval(
        "SELECT count(*) FROM watchlist WHERE document_hmac = $1", bytes.fromhex(digest)
    )
    assert listed == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://" + "x" * 1990,  # one label past the 63 characters a name lookup takes
        "http://[::1",
        "http://a b/hook",
        "http://x\r\nHost: y",
        "https://",
        "https://a..b/hook",
        "http://example.com:0/hook",
        "http://ex%20ample.com/hook",
    ],
)
async def test_a_webhook_url_no_delivery_could_reach_is_refused(
    agw: AlertGateway, url: str
) -> None:
    status, body = await agw.call(
        "POST", "/v1/webhook-endpoints", role="admin", json={"url": url, "site_ids": []}
    )
    assert (status, body["code"]) == (422, "invalid_url"), body


async def test_a_level_for_a_key_that_cannot_review_is_not_found(agw: AlertGateway) -> None:
    for key_id in ("xyz", "%20", "k" * 3000):
        status, body = await agw.call(
            "PUT", f"/v1/review/reviewers/{key_id}/level", role="admin", json={"level": 2}
        )
        assert (status, body["code"]) == (404, "unknown_key"), (key_id[:10], body)
    written = await agw.gw.pool.fetchval(
        "SELECT count(*) FROM reviewer_levels l WHERE NOT EXISTS"
        " (SELECT 1 FROM api_keys k WHERE k.key_id = l.key_id)"
    )
    assert written == 0


async def test_head_answers_a_get_route_and_a_405_names_the_allowed_methods(
    agw: AlertGateway,
) -> None:
    async with agw.gw.http.head(f"{agw.gw.url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.read() == b""
    async with agw.gw.http.head(
        f"{agw.gw.url}/v1/alerts", headers=agw.gw.auth("police")
    ) as resp:
        assert resp.status == 200
    status, body = await agw.call("DELETE", "/healthz")
    assert (status, body["code"]) == (405, "method_not_allowed")
    async with agw.gw.http.delete(f"{agw.gw.url}/healthz") as resp:
        allowed = {m.strip() for m in resp.headers.get("Allow", "").split(",")}
    assert {"GET", "HEAD"} <= allowed
    # A GET that leases a review item answers no HEAD: the lease would go to nobody.
    async with agw.gw.http.head(
        f"{agw.gw.url}/v1/review/next", headers=agw.gw.auth("reviewer")
    ) as resp:
        assert resp.status == 405
