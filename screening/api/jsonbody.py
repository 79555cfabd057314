"""Request bodies as JSON: one parser for every endpoint and the station stream."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259 §6); Python's parser accepts them unless told."""
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every body: json.loads with any keyword builds a new JSONDecoder per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_json(raw: bytes | str) -> Any:
    """json.loads(raw), refusing NaN and Infinity, with every failure a ValueError: bad
    encodings, malformed text, an integer too long to convert, nesting too deep to parse."""
    try:
        if isinstance(raw, bytes | bytearray):
            # What json.loads does with bytes: UTF-8, -16 or -32, as RFC 8259 §8.1 allows.
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
        return _DECODER.decode(raw)
    except RecursionError:  # '[[[[...' deeper than the interpreter's stack
        raise ValueError("the JSON is nested too deeply") from None


async def read_json(request: web.Request) -> Any:
    """The request's body through ``parse_json``: the charset a Content-Type names is not
    consulted (JSON is UTF-8, -16 or -32, told apart by its first bytes: RFC 8259 §8.1)."""
    return parse_json(await request.read())
