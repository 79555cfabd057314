"""Console sign-in: cookie flags, sign-out, revoked keys, CSRF on state-changing requests, login
from another origin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from yarl import URL

from screening.domain.access import Principal, Role
from screening.services import access
from screening.web import console, sessions
from tests.web.conftest import OpenConsole
from tests.web.demo import Demo


async def sign_in(demo: Demo, key: str) -> tuple[aiohttp.ClientSession, dict[str, Any]]:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(f"{demo.gateway.url}/console/session", json={"api_key": key}) as resp:
        assert resp.status == 200, await resp.text()
        return http, await resp.json()


async def test_sign_in_sets_strict_httponly_cookies_and_sign_out_ends_the_session(
    fresh: Demo, open_console: OpenConsole
) -> None:
    gw = fresh.gateway
    page = await open_console(gw.url, gw.keys.by_role["supervisor"])
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session, csrf = cookies["scr_session"], cookies["scr_csrf"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["secure"] is False  # plain http on loopback; https sets Secure
    assert session["expires"] > 0
    assert len(session["value"]) >= 43  # 256 random bits
    assert csrf["httpOnly"] is False  # the script echoes it in X-CSRF-Token
    assert csrf["sameSite"] == "Strict"
    # The key itself is nowhere in the browser.
    storage = await page.evaluate("JSON.stringify(localStorage) + document.cookie")
    assert gw.keys.by_role["supervisor"] not in storage
    assert await page.text_content("header .role") == "监管人员"

    await page.click("#signout")
    await page.wait_for_selector("#signin")
    assert "scr_session" not in {c["name"] for c in await page.context.cookies()}
    # The old cookie is dead on the server too, not only forgotten by the browser.
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gw.url}/v1/sites/{gw.keys.site}/rates",
            headers={"Cookie": f"scr_session={session['value']}"},
        ) as resp,
    ):
        assert resp.status == 401
        assert (await resp.json())["code"] == "session_expired"


async def test_a_bad_key_is_refused_with_a_message(browser: Any, demo: Demo) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{demo.gateway.url}/console/")
    await page.fill("#api-key", "scr_supervisor_aaaaaaaaaa_" + "x" * 43)
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#signin-error:not([hidden])")
    assert "登录失败" in (await page.text_content("#signin-error") or "")
    assert await context.cookies() == []
    await context.close()


async def test_a_revoked_key_ends_its_sessions_at_once(fresh: Demo) -> None:
    gw = fresh.gateway
    http, body = await sign_in(fresh, gw.keys.by_role["police"])
    async with http:
        async with http.get(f"{gw.url}/console/session") as resp:
            assert resp.status == 200
        await access.revoke_key(gw.pool, body["key_id"])
        async with http.get(f"{gw.url}/console/session") as resp:
            assert resp.status == 401


async def test_state_changing_requests_need_the_sessions_csrf_token(fresh: Demo) -> None:
    gw = fresh.gateway
    http, body = await sign_in(fresh, gw.keys.by_role["police"])
    assert body["role"] == "police"
    assert "handle_alerts" in body["permissions"]
    target = f"{gw.url}/v1/alerts/00000000-0000-0000-0000-000000000000/acknowledge"
    async with http:
        # Reads need no token: the session cookie alone authenticates GETs.
        async with http.get(f"{gw.url}/v1/alerts") as resp:
            assert resp.status == 200
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            async with http.post(target, json={"note": ""}, headers=headers) as resp:
                assert resp.status == 403
                assert (await resp.json())["code"] == "csrf_failed"
        async with http.post(
            target, json={"note": ""}, headers={"X-CSRF-Token": body["csrf_token"]}
        ) as resp:
            assert resp.status == 404  # past the CSRF check: no such alert
        # Signing out is state-changing too.
        async with http.delete(f"{gw.url}/console/session") as resp:
            assert resp.status == 403
        async with http.delete(
            f"{gw.url}/console/session", headers={"X-CSRF-Token": body["csrf_token"]}
        ) as resp:
            assert resp.status == 204


async def test_the_station_stream_takes_a_key_never_the_console_session(fresh: Demo) -> None:
    """Found by review: a WebSocket handshake is a GET (no CSRF token) and browsers apply no
    same-origin rule to WebSockets, so with the session cookie any page of the same site (the
    gateway host's other port, say) could open the stream and write events as the user."""
    gw = fresh.gateway
    http, _ = await sign_in(fresh, gw.keys.admin)
    async with http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with http.ws_connect(f"{gw.url}/v1/stations/stream"):
                pass
        assert refused.value.status == 401
        headers = {"Authorization": f"Bearer {gw.keys.by_role['station']}"}
        async with http.ws_connect(f"{gw.url}/v1/stations/stream", headers=headers) as ws:
            assert not ws.closed


async def test_sign_in_from_another_origin_or_as_a_form_is_refused(demo: Demo) -> None:
    gw = demo.gateway
    key = gw.keys.by_role["supervisor"]
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{gw.url}/console/session",
            json={"api_key": key},
            headers={"Origin": "https://evil.example"},
        ) as resp:
            assert resp.status == 403
            assert (await resp.json())["code"] == "cross_origin"
            assert "scr_session" not in resp.cookies
        async with http.post(f"{gw.url}/console/session", data={"api_key": key}) as resp:
            assert resp.status == 400
        async with http.get(f"{gw.url}/console/session") as resp:
            assert resp.status == 401


async def test_the_page_forbids_framing_and_foreign_scripts(demo: Demo) -> None:
    # The page, and its copy in the static directory (found by review: served from there
    # without these headers, the working console could be framed).
    for path in ("/console/", "/console/static/index.html", "/console/static/console.js"):
        async with demo.gateway.http.get(f"{demo.gateway.url}{path}") as resp:
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("configured", "sent"),
    [
        ("https://GW.example.cn:443", "https://gw.example.cn"),
        ("https://gw.example.cn", "https://GW.EXAMPLE.CN:443"),
        ("http://gw.example.cn:80/base/", "http://gw.example.cn"),
    ],
)
def test_an_origin_is_compared_as_browsers_compare_them(configured: str, sent: str) -> None:
    assert console._origin_key(configured) == console._origin_key(sent)
    assert console._origin_key("https://gw.example.cn:8443") != console._origin_key(sent)
    assert console._origin_key("http://gw.example.cn") != console._origin_key(
        "https://gw.example.cn"
    )


async def test_static_files_are_served_and_a_missing_one_is_a_problem_document(
    demo: Demo,
) -> None:
    base = f"{demo.gateway.url}/console/static"
    for name, kind in (("console.js", "javascript"), ("i18n/zh-CN.json", "json")):
        async with demo.gateway.http.get(f"{base}/{name}") as resp:
            assert resp.status == 200
            assert kind in resp.headers["Content-Type"]
            assert await resp.read()
        async with demo.gateway.http.head(f"{base}/{name}") as resp:
            assert resp.status == 200
    # Missing, a directory, or outside the static directory (encoded dots reach the handler).
    for name in ("missing.js", "i18n", "%2e%2e/console.py", "..%2F..%2Fsettings.py", "x" * 300):
        async with demo.gateway.http.get(URL(f"{base}/{name}", encoded=True)) as resp:
            assert resp.status == 404, name
            assert resp.headers["Content-Type"].startswith("application/problem+json")
            assert (await resp.json())["code"] == "not_found"


async def test_an_expired_session_is_refused(fresh: Demo) -> None:
    gw = fresh.gateway
    signed_in, body = await sign_in(fresh, gw.keys.by_role["supervisor"])
    await signed_in.close()
    principal = Principal(body["key_id"], Role.SUPERVISOR, frozenset({gw.keys.site}))
    long_ago = datetime.now(UTC) - timedelta(hours=9)
    async with gw.pool.acquire() as conn:
        cookie, _ = await sessions.create_session(conn, principal, long_ago, 8 * 3600.0)
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gw.url}/v1/sites/{gw.keys.site}/rates", headers={"Cookie": f"scr_session={cookie}"}
        ) as resp,
    ):
        assert resp.status == 401
        assert (await resp.json())["code"] == "session_expired"


async def test_a_sibling_sites_page_cannot_use_the_session_but_a_link_from_it_can(
    fresh: Demo,
) -> None:
    """Found by review: SameSite=Strict still sends the cookie to requests another site of
    the same registrable domain makes from its pages, and GET /v1/review/next leases an item:
    an <img> there could drain the queue while a reviewer is signed in."""
    gw = fresh.gateway
    http, _ = await sign_in(fresh, gw.keys.by_role["reviewer"])
    async with http:
        url = f"{gw.url}/v1/review/next"
        img = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"}
        frame = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate",
                 "Sec-Fetch-Dest": "iframe"}  # fmt: skip
        followed = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate",
                    "Sec-Fetch-Dest": "document", "Sec-Fetch-User": "?1"}  # fmt: skip
        for headers in (img, frame, followed):  # the API: never from a sibling's page
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 403, headers
                assert (await resp.json())["code"] == "csrf_failed"
        own = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
        for headers in (followed, own):  # a console page the user opens from there, or its own
            async with http.get(f"{gw.url}/console/session", headers=headers) as resp:
                assert resp.status == 200, headers
