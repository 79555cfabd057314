"""Bearer API key -> Principal, and the permission and site checks handlers call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from screening.api.context import GATEWAY
from screening.domain.access import Permission, Principal
from screening.errors import AuthenticationError, ForbiddenError

# The web console (screening.web) registers its session-cookie lookup here, so the API accepts a
# console session when no Authorization header is sent: None means "no session cookie"; a dead
# session or a state-changing request without the session's CSRF token raises.
SessionLookup = Callable[[web.Request], Awaitable[Principal | None]]
SESSION_LOOKUP: web.AppKey[SessionLookup] = web.AppKey("session_lookup")


async def principal_of(
    request: web.Request, permission: Permission, *, bearer_only: bool = False
) -> Principal:
    """Authenticate the request's key and check that its role grants ``permission``.

    ``bearer_only``: no console session. For a WebSocket: its handshake is a GET, so no CSRF
    token guards it, and browsers apply no same-origin rule to WebSockets: with the session
    cookie, any page of the same site could open the stream and write events as the signed-in
    user."""
    header = request.headers.get("Authorization", "")
    lookup = None if bearer_only else request.app.get(SESSION_LOOKUP)
    session = await lookup(request) if not header and lookup is not None else None
    if session is not None:
        principal = session
    else:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                "send 'Authorization: Bearer <API key>'", code="missing_credentials"
            )
        principal = await request.app[GATEWAY].authenticator.authenticate(token.strip())
    if not principal.may(permission):
        raise ForbiddenError(
            f"role {principal.role.value} may not {permission.value}", code="forbidden_role"
        )
    return principal


async def unscoped_principal_of(request: web.Request, permission: Permission) -> Principal:
    """As ``principal_of``, for settings that act on every site (the alert policy, police
    endpoints, replays, reviewer levels): a key scoped to some sites may not change them."""
    principal = await principal_of(request, permission)
    if principal.sites is not None:
        raise ForbiddenError(
            "this setting applies to every site; use a key without a site scope",
            code="site_scoped_key",
        )
    return principal
