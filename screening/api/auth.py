"""Bearer API key -> Principal, and the permission and site checks handlers call."""

from __future__ import annotations

from aiohttp import web

from screening.api.context import GATEWAY
from screening.domain.access import Permission, Principal
from screening.errors import AuthenticationError, ForbiddenError


async def principal_of(request: web.Request, permission: Permission) -> Principal:
    """Authenticate the request's key and check that its role grants ``permission``."""
    header = request.headers.get("Authorization", "")
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
