"""What one endpoint is: its method, path, handler, roles and what the OpenAPI document says.

Kept apart from the route table (screening.api.routes) so that handler modules can declare
their own routes without importing the table that imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    roles: tuple[str, ...] = ()
    # A pydantic model or annotated type; or a function of the configured batch limit that
    # gives one (``schemas.events_body``).
    body: Any = None
    response: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    websocket: bool = False
    raw_response: str | None = None  # content type of a non-JSON response
    success: tuple[tuple[str, str], ...] = (("200", "OK"),)
    multipart: bool = False
    # A GET also answers HEAD (RFC 9110 §9.3.2) unless reading it changes something (a lease).
    head: bool = True

    @property
    def answers_head(self) -> bool:
        """Whether HEAD is routed to the handler too: not for a stream, whose answer (a
        WebSocket, server-sent events) never ends."""
        streams = self.websocket or self.raw_response == "text/event-stream"
        return self.method == "GET" and self.head and not streams
