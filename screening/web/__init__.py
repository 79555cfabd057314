"""The web console for supervisors, reviewers and police, served by the gateway under /console/.

Plain HTML, CSS and ES modules (no build step). Sign-in posts an API key once; the answer sets a
session cookie (see ``screening.web.sessions``). The console's script then calls the JSON API
(``/v1/...``) directly: ``screening.api.auth.principal_of`` accepts the session cookie when no
Authorization header is sent, with the session's CSRF token on state-changing requests, so every
view goes through the same role and site checks as an API client. Images (``<img>``) and the
police live feed (``EventSource``) need exactly that, since neither can send a bearer header.

Routes (HTML and CSV, not part of the JSON API's OpenAPI document):

    GET    /console/                          the page (sign-in, then the views of the role)
    GET    /console/static/...                scripts, styles, strings (i18n/*.json)
    POST   /console/session                   sign in: {"api_key": ...} -> cookies
    GET    /console/session                   who is signed in, and the CSRF token
    DELETE /console/session                   sign out
    GET    /console/sites                     the sites this key may read
    GET    /console/export/{site_id}/violations.csv   CSV of violations (from, to, filters)
    GET    /console/reports/{site_id}/{yyyy-mm}       printable monthly report (?format=pdf)
"""

from __future__ import annotations

from aiohttp import web

from screening.api.auth import SESSION_LOOKUP
from screening.api.context import GATEWAY
from screening.domain.access import Principal
from screening.web import console, report_page, sessions
from screening.web.pdf import find_chromium
from screening.web.state import CONSOLE, ConsoleConfig


async def _session_principal(request: web.Request) -> Principal | None:
    session = await sessions.request_session(request, request.app[GATEWAY].pool)
    return None if session is None else session.principal


def add_console(
    app: web.Application,
    *,
    session_ttl_s: float = sessions.DEFAULT_TTL_S,
    chromium: str | None = None,
) -> None:
    """Register the console's routes and let the JSON API accept console sessions.

    ``chromium``: the browser binary for PDF reports; by default the first of ``chromium``,
    ``chromium-browser``, ``google-chrome`` found on PATH. Without one, PDF answers 501.
    """
    app[CONSOLE] = ConsoleConfig(session_ttl_s=session_ttl_s, chromium=find_chromium(chromium))
    app[SESSION_LOOKUP] = _session_principal
    r = app.router
    r.add_get("/console", console.redirect_to_index)
    r.add_get("/console/", console.index)
    r.add_get("/console/static/{path:.+}", console.static_file)
    r.add_post("/console/session", console.sign_in)
    r.add_get("/console/session", console.current_session)
    r.add_delete("/console/session", console.sign_out)
    r.add_get("/console/sites", console.list_sites)
    r.add_get("/console/export/{site_id}/violations.csv", console.export_violations)
    r.add_get("/console/reports/{site_id}/{month}", report_page.get_report)


__all__ = ["add_console"]
