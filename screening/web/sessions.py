"""Console sessions: sign-in with an API key, the session cookie, its CSRF token, and the lookup
that lets the JSON API accept the cookie in place of a bearer key.

The session id is 256 random bits in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS);
PostgreSQL keeps only its SHA-256 with the key id, the CSRF token and an absolute expiry, so every
gateway process behind a load balancer sees the same sessions and sign-out or key revocation takes
effect at once. State-changing requests carrying the cookie must also carry ``X-CSRF-Token`` equal
to the session's token (double submit: the token is also in a script-readable cookie).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from screening.api.context import public_origin
from screening.domain.access import Principal, Role
from screening.errors import AuthenticationError, ForbiddenError
from screening.storage import Conn

SESSION_COOKIE = "scr_session"
CSRF_COOKIE = "scr_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_TTL_S = 8 * 3600.0  # one shift; an absolute limit, not sliding

INSERT_SESSION = """
INSERT INTO console_sessions (session_hash, key_id, csrf_token, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5)
"""
SELECT_SESSION = """
SELECT s.csrf_token, s.expires_at, k.key_id, k.role, k.site_ids
FROM console_sessions s JOIN api_keys k ON k.key_id = s.key_id
WHERE s.session_hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL
"""
DELETE_SESSION = "DELETE FROM console_sessions WHERE session_hash = $1"
DELETE_EXPIRED = "DELETE FROM console_sessions WHERE expires_at <= $1"


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf_token: str
    expires_at: datetime


def _hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def _principal(row: asyncpg.Record) -> Principal:
    # The same mapping as KeyAuthenticator: an admin key without sites covers every site.
    role = Role(row["role"])
    sites = tuple(row["site_ids"])
    return Principal(
        key_id=row["key_id"],
        role=role,
        sites=None if role is Role.ADMIN and not sites else frozenset(sites),
    )


async def create_session(
    conn: Conn, principal: Principal, now: datetime, ttl_s: float
) -> tuple[str, Session]:
    """A new session for ``principal``; returns the cookie value (shown once) and the session."""
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=ttl_s)
    await conn.execute(DELETE_EXPIRED, now)
    await conn.execute(INSERT_SESSION, _hash(session_id), principal.key_id, csrf, now, expires)
    return session_id, Session(principal, csrf, expires)


async def find_session(conn: Conn, session_id: str, now: datetime) -> Session | None:
    row = await conn.fetchrow(SELECT_SESSION, _hash(session_id), now)
    if row is None:
        return None
    return Session(_principal(row), row["csrf_token"], row["expires_at"])


async def delete_session(conn: Conn, session_id: str) -> None:
    await conn.execute(DELETE_SESSION, _hash(session_id))


def csrf_matches(request: web.Request, session: Session) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    return bool(sent) and hmac.compare_digest(sent.encode(), session.csrf_token.encode())


async def request_session(request: web.Request, pool: asyncpg.Pool[Any]) -> Session | None:
    """The request's console session, None without a session cookie.

    A cookie that names no live session is a 401; a state-changing request without the session's
    CSRF token is a 403 (``csrf_failed``).
    """
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    async with pool.acquire() as conn:
        session = await find_session(conn, session_id, datetime.now(UTC))
    if session is None:
        raise AuthenticationError(
            "the console session has expired or was signed out", code="session_expired"
        )
    if request.method not in SAFE_METHODS and not csrf_matches(request, session):
        raise ForbiddenError(
            f"send the session's CSRF token in the {CSRF_HEADER} header", code="csrf_failed"
        )
    if _from_a_sibling_page(request):
        raise ForbiddenError(
            "a console session answers the console's own pages only", code="csrf_failed"
        )
    return session


def _from_a_sibling_page(request: web.Request) -> bool:
    """A request another site of the same registrable domain made from its page (an <img>, a
    script's fetch, a frame, a form it submits): SameSite=Strict still sends the cookie there,
    and a GET such as /v1/review/next changes state (it leases an item). Only a console page
    the user opens from there (a link followed: a top-level document, user-activated) is
    allowed; the API never is."""
    if request.headers.get("Sec-Fetch-Site") != "same-site":
        return False
    followed = (
        request.headers.get("Sec-Fetch-Mode") == "navigate"
        and request.headers.get("Sec-Fetch-Dest") == "document"
        and request.headers.get("Sec-Fetch-User") == "?1"
    )
    return not (followed and request.path.startswith("/console/"))


def set_cookies(
    response: web.StreamResponse, request: web.Request, session_id: str, session: Session
) -> None:
    max_age = max(0, int((session.expires_at - datetime.now(UTC)).total_seconds()))
    common: dict[str, Any] = {
        "path": "/",
        "max_age": max_age,
        "samesite": "Strict",
        # Secure when the browser is on https, directly or through a TLS proxy.
        "secure": request.secure or public_origin(request).startswith("https://"),
    }
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, **common)
    # Script-readable on purpose: the console's JS echoes it in the CSRF header.
    response.set_cookie(CSRF_COOKIE, session.csrf_token, httponly=False, **common)


def clear_cookies(response: web.StreamResponse) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.del_cookie(name, path="/", samesite="Strict")
