"""The console's typed application state (an aiohttp AppKey), set once by ``add_console``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    session_ttl_s: float  # absolute session lifetime, seconds
    chromium: str | None  # path of the Chromium binary for PDF reports; None: PDF unavailable


CONSOLE: web.AppKey[ConsoleConfig] = web.AppKey("console", ConsoleConfig)
