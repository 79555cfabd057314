"""Console HTTP handlers: the page shell, sign-in and sign-out, the sites a key sees, and the
streamed CSV export of violations. Every handler authenticates through ``principal_of`` (bearer
key or console session) and checks the site scope server-side."""

from __future__ import annotations

import csv
import functools
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from screening.api.auth import principal_of
from screening.api.context import GATEWAY, public_origin
from screening.api.jsonbody import read_json
from screening.api.problems import field_errors
from screening.api.reads import date_param, text_param
from screening.domain.access import Permission, Principal
from screening.errors import AuthenticationError, BadRequestError, ForbiddenError, InvalidEventError
from screening.services import access, queries
from screening.web import sessions
from screening.web.state import CONSOLE

STATIC_DIR = Path(__file__).parent / "static"
EXPORT_PAGE = 1000  # violations per database round trip while streaming a CSV

# The console loads only its own scripts, styles and images; nothing may frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
NO_STORE = {"Cache-Control": "no-store"}


class SignInIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    api_key: str = Field(min_length=1, max_length=200)


def session_json(principal: Principal, csrf: str, expires_at: datetime) -> dict[str, Any]:
    return {
        "key_id": principal.key_id,
        "role": principal.role.value,
        "sites": None if principal.sites is None else sorted(principal.sites),
        "permissions": sorted(p.value for p in Permission if principal.may(p)),
        "csrf_token": csrf,
        "expires_at": expires_at.isoformat(),
    }


async def index(request: web.Request) -> web.StreamResponse:
    """The single page; it signs in or shows the views the session's role may use."""
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS | NO_STORE)


async def static_file(request: web.Request) -> web.StreamResponse:
    """A script, style or strings file of the console. One that is not there is a problem
    document like any other 404 (aiohttp's own static route answers an empty body)."""
    root = STATIC_DIR.resolve()
    try:
        path = (root / request.match_info["path"]).resolve()
        found = path.is_relative_to(root) and path.is_file()
    except (ValueError, OSError):  # a NUL in the name, a name too long for the file system
        found = False
    if not found:
        raise web.HTTPNotFound()
    # The page's own headers on every file: the static directory holds index.html too, which
    # served from here without them could be framed, and no file is to be sniffed.
    return web.FileResponse(path, headers=PAGE_HEADERS)


async def redirect_to_index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


def _same_origin(request: web.Request) -> bool:
    # Sign-in carries no session yet, so SameSite cannot protect it: refuse cross-site posts
    # (login CSRF). Browsers send Origin on every POST; non-browser clients may omit it.
    # Behind a TLS proxy the browser's origin is the public one (public_base_url).
    origin = request.headers.get("Origin")
    return origin is None or _origin_key(origin) in {
        _origin_key(f"{request.scheme}://{request.host}"),
        _origin_key(public_origin(request)),
    }


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(origin: str) -> tuple[str, str, int | None]:
    """An origin as browsers compare them: scheme and host in lower case, default port dropped
    (a public_base_url written `https://GW.example.cn:443` is `https://gw.example.cn`)."""
    try:
        parts = urlsplit(origin)
        scheme, port = parts.scheme.lower(), parts.port
    except ValueError:  # a port that is no number
        return (origin, "", None)
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return (scheme, (parts.hostname or "").lower(), port)


async def sign_in(request: web.Request) -> web.Response:
    """POST the API key once; the answer sets the session and CSRF cookies."""
    if not _same_origin(request):
        raise ForbiddenError("sign in from the console's own origin", code="cross_origin")
    if request.content_type != "application/json":
        raise BadRequestError("send the key as application/json", code="invalid_body")
    try:
        body = SignInIn.model_validate(await read_json(request))
    except ValueError as exc:  # UnicodeDecodeError and ValidationError among them
        if isinstance(exc, ValidationError):
            raise InvalidEventError("invalid sign-in body", field_errors(exc)) from None
        raise BadRequestError("the body is not valid JSON", code="malformed_json") from None
    gw = request.app[GATEWAY]
    principal = await gw.authenticator.authenticate(body.api_key.strip())
    async with gw.pool.acquire() as conn:
        session_id, session = await sessions.create_session(
            conn, principal, datetime.now(UTC), request.app[CONSOLE].session_ttl_s
        )
    response = web.json_response(
        session_json(principal, session.csrf_token, session.expires_at), headers=NO_STORE
    )
    sessions.set_cookies(response, request, session_id, session)
    return response


async def current_session(request: web.Request) -> web.Response:
    """Who is signed in (401 without a live session): role, sites, permissions, CSRF token."""
    session = await sessions.request_session(request, request.app[GATEWAY].pool)
    if session is None:
        raise AuthenticationError("not signed in", code="missing_credentials")
    return web.json_response(
        session_json(session.principal, session.csrf_token, session.expires_at), headers=NO_STORE
    )


async def sign_out(request: web.Request) -> web.Response:
    """End the session (CSRF header required like any state-changing request)."""
    pool = request.app[GATEWAY].pool
    session = await sessions.request_session(request, pool)
    if session is not None:
        async with pool.acquire() as conn:
            await sessions.delete_session(conn, request.cookies[sessions.SESSION_COOKIE])
    response = web.Response(status=204, headers=NO_STORE)
    sessions.clear_cookies(response)
    return response


async def list_sites(request: web.Request) -> web.Response:
    """The sites this key may read (for the site picker and the supervisors' ranking)."""
    principal = await principal_of(request, Permission.READ_PARCELS)
    sites = await access.list_sites(request.app[GATEWAY].pool)
    return web.json_response(
        {
            "sites": [
                {"site_id": s.site_id, "name": s.name, "timezone": s.policy.timezone}
                for s in sites
                if principal.covers(s.site_id)
            ]
        }
    )


CSV_COLUMNS = (
    "site_id",
    "waybill_no",
    "reason",
    "rule",
    "flow",
    "dispatch_day",
    "dispatched_at",
    "detected_at",
)


def _cell(value: str) -> str:
    # Spreadsheets run cells starting with these as formulas (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def export_violations(request: web.Request) -> web.StreamResponse:
    """CSV of a site's violations for a period (same filters as the JSON list), streamed."""
    gw = request.app[GATEWAY]
    principal = await principal_of(request, Permission.READ_VIOLATIONS)
    site_id = request.match_info["site_id"]
    queries.require_cover(principal, site_id)  # before the query's parameters are judged
    first, last = date_param(request, "from"), date_param(request, "to")
    filters = {k: text_param(request, k) for k in ("reason", "rule", "flow")}

    async def page(
        cursor: str | None, first: date | None, last: date | None
    ) -> queries.ViolationsPage:
        return await queries.site_violations(
            gw.pool,
            principal,
            site_id,
            first=first,
            last=last,
            cursor=cursor,
            limit=EXPORT_PAGE,
            now=datetime.now(UTC),
            **filters,
        )

    # The first page checks scope and filters before any byte of the answer is sent, and
    # resolves an open end of the period (the site's today; 30 days): the later pages and
    # the file's name take the period it resolved.
    current = await page(None, first, last)
    rows, cursor = current.rows, current.cursor
    name = f"violations-{site_id}-{current.first}-{current.last}.csv"
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
            **NO_STORE,
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
    buffer.write("\ufeff")  # BOM: spreadsheet programs then read the UTF-8 correctly
    writer.writerow(CSV_COLUMNS)
    while True:
        for r in rows:
            writer.writerow(
                [
                    _cell(site_id),
                    _cell(r.waybill_no),
                    r.reason,
                    r.rule,
                    _cell(r.flow),
                    r.dispatch_day.isoformat(),
                    r.dispatched_at.isoformat(),
                    r.detected_at.isoformat(),
                ]
            )
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        if cursor is None:
            break
        current = await page(cursor, current.first, current.last)
        rows, cursor = current.rows, current.cursor
    await response.write_eof()
    return response


@functools.cache
def strings(lang: str) -> dict[str, str]:
    """The UI strings of one language (the same files the console's script loads), read once."""
    name = "en" if lang == "en" else "zh-CN"
    loaded: dict[str, str] = json.loads((STATIC_DIR / "i18n" / f"{name}.json").read_text("utf-8"))
    return loaded
