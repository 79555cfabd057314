"""Error middleware: every failure leaves as application/problem+json with a stable code."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from aiohttp.web_protocol import RequestPayloadError
from pydantic import ValidationError

from screening.domain.events import EventType
from screening.errors import (
    AuthenticationError,
    FieldError,
    InvalidEventError,
    ScreeningError,
    ServiceUnavailableError,
)
from screening.storage.errors import DatabaseUnavailableError, UnstorableEventError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# The Content-Encodings a request body may have: those aiohttp decodes (br and zstd only when
# their optional packages are installed). aiohttp hands a body in any other coding ("compress",
# "gzip, br", ...) to the handler undecoded, where it would be parsed as if it were plain;
# such a request is refused instead (415 with Accept-Encoding, RFC 9110 15.5.16).
BODY_CODINGS = (
    ("gzip", "deflate") + (("br",) if HAS_BROTLI else ()) + (("zstd",) if HAS_ZSTD else ())
)
ACCEPTED_ENCODINGS = ", ".join(BODY_CODINGS)
_READABLE_CODINGS = frozenset((*BODY_CODINGS, "identity"))

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}

# pydantic error types -> our stable codes; anything else keeps pydantic's own type name, which
# is itself stable across pydantic 2.x releases.
_PYDANTIC_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "timezone_aware": "naive_timestamp",
    "datetime_parsing": "invalid_timestamp",
    "datetime_from_date_parsing": "invalid_timestamp",
    "datetime_type": "invalid_timestamp",
    "timestamp_offset": "invalid_timestamp",
    "union_tag_invalid": "unknown_event_type",
    "union_tag_not_found": "missing_event_type",
    "model_attributes_type": "wrong_type",
    "model_type": "wrong_type",
    "dict_type": "wrong_type",
    "string_type": "wrong_type",
    "int_type": "wrong_type",
    "int_parsing": "wrong_type",
    "float_type": "wrong_type",
    "float_parsing": "wrong_type",
    "bool_type": "wrong_type",
    "list_type": "wrong_type",
    "tuple_type": "wrong_type",
    "uuid_parsing": "invalid_uuid",
    "uuid_type": "invalid_uuid",
    "enum": "invalid_value",
    "literal_error": "invalid_value",
    "string_pattern_mismatch": "invalid_format",
    "string_too_long": "too_long",
    "string_too_short": "too_short",
}


_EVENT_TAGS = frozenset(t.value for t in EventType)


def _code(kind: str, message: str) -> str:
    if kind == "json_invalid":
        # An event is validated from JSON text the gateway wrote itself from the parsed body
        # (screening.api.schemas.validate_event), which can fail only two ways, neither with a
        # field path: nesting past the validator's depth, and a lone surrogate escape
        # (\\uD800-\\uDFFF unpaired: not Unicode text), whose messages vary.
        return "nested_too_deeply" if "recursion" in message else "string_unicode"
    return _PYDANTIC_CODES.get(kind, kind)


# Errors listed for one event at most; a body can hold a thousand events, and an error costs
# far more to build and send than to find.
MAX_FIELD_ERRORS = 20

# Messages of ours for pydantic errors whose own message quotes the input.
_FIXED_MESSAGES = {
    "union_tag_invalid": "type is not one of the event types",
}


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Flatten pydantic errors into (code, dotted path, message); never echoes input values.
    At most ``MAX_FIELD_ERRORS``, the last then saying how many more there were."""
    out: list[FieldError] = []
    total = exc.error_count()
    for err in exc.errors(include_input=False, include_url=False):
        if len(out) == MAX_FIELD_ERRORS - 1 and total > MAX_FIELD_ERRORS:
            more = total - len(out)
            out.append(FieldError("too_many_errors", prefix, f"{more} more errors not listed"))
            break
        kind = str(err["type"])
        loc = [str(p) for p in err["loc"]]
        # Discriminated unions put the tag name in the path; it is noise for the client.
        if loc and loc[0] in _EVENT_TAGS:
            loc = loc[1:]
        field = (err.get("ctx") or {}).get("field")  # a model-level rule names its field
        if field is not None:
            loc.append(str(field))
        path = ".".join([prefix, *loc] if prefix else loc) or (
            "type" if kind.startswith("union_tag") else ""
        )
        message = _FIXED_MESSAGES.get(kind, str(err["msg"]))
        out.append(FieldError(_code(kind, str(err["msg"])), path, message))
    return out


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": f"https://errors.screening.invalid/{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if errors:
        body["errors"] = [e.as_dict() for e in errors]
    if extra:
        body.update(extra)
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def unsupported_coding() -> web.Response:
    return problem_response(
        415,
        "unsupported_content_encoding",
        "Unsupported content encoding",
        f"the body's Content-Encoding cannot be decoded here; send {ACCEPTED_ENCODINGS} or none",
        headers={"Accept-Encoding": ACCEPTED_ENCODINGS},
    )


def from_error(exc: ScreeningError) -> web.Response:
    headers = None
    if isinstance(exc, ServiceUnavailableError):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, AuthenticationError):
        # RFC 9110 §11.6.1: a 401 carries the challenge.
        headers = {"WWW-Authenticate": 'Bearer realm="screening"'}
    errors = exc.errors if isinstance(exc, InvalidEventError) else None
    return problem_response(
        exc.status,
        exc.code,
        exc.title,
        exc.detail,
        errors=errors,
        headers=headers,
        extra=exc.extra or None,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What a database outage raises where a request reads before the writer (its key, its site, a
# contract's agreements): the connection lost or refused, the server starting, stopping or out
# of connections, a connect that timed out. A 503 with Retry-After, as the writer answers the
# same outage, not a 500.
DATABASE_OUTAGE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,  # admin shutdown, cannot connect now, query canceled
    asyncpg.InsufficientResourcesError,  # too many connections, the server's disk full
    ConnectionError,
    TimeoutError,
)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if "%00" in request.raw_path:
        # U+0000 in a path or query value: PostgreSQL text cannot hold it, and no id, waybill
        # or parameter of this API has it. Refused here, before any handler sends it to SQL.
        return problem_response(
            400, "invalid_character", "Invalid request", "the URL must not contain U+0000 (%00)"
        )
    coding = request.headers.get("Content-Encoding")
    if coding is not None and request.body_exists and coding.lower() not in _READABLE_CODINGS:
        return unsupported_coding()
    try:
        return await handler(request)
    except ScreeningError as exc:
        return from_error(exc)
    except asyncpg.DataError as exc:
        # The server refused a value the request carried (out of range, not in its character
        # set): the request's fault, not an outage. Its text is not echoed (it may quote it).
        log.warning("%s %s: the database refused a value: %s", request.method, request.path,
                    exc.__class__.__name__)  # fmt: skip
        return problem_response(
            400, "invalid_value", "Invalid value", "a value in the request is out of range"
        )
    except UnstorableEventError:
        # As above, the database's text is not echoed: it may quote the value.
        return problem_response(
            422,
            "unstorable_value",
            "Invalid event",
            "the database refused a value in this request; nothing in it was committed",
        )
    except DatabaseUnavailableError as exc:
        return from_error(ServiceUnavailableError(str(exc), code="database_unavailable"))
    except DATABASE_OUTAGE as exc:
        if isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError):
            # asyncpg's client-side DataError: a value from the request it cannot encode (an
            # integer past bigint, say). The request's fault, not an outage.
            return problem_response(
                400, "invalid_value", "Invalid value", "a value in the request is out of range"
            )
        if isinstance(exc, ConnectionError) and _client_gone(request):
            # The client hung up mid-request (a flaky station line, a load tool stopping): not
            # the database's fault, and nobody is left to answer.
            log.info("client went away during %s %s", request.method, request.path)
            return problem_response(
                400, "client_disconnected", "Client disconnected", "the request was cut off"
            )
        log.exception("database unreachable while serving %s", request.path, exc_info=exc)
        return from_error(
            ServiceUnavailableError("the database is unreachable", code="database_unavailable")
        )
    except web.HTTPRequestEntityTooLarge as exc:
        return problem_response(413, "body_too_large", "Payload too large", exc.text or "")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        allow = exc.headers.get("Allow")  # a 405 names the methods the route takes
        return problem_response(
            exc.status, code, exc.reason, exc.reason, headers={"Allow": allow} if allow else None
        )
    except RequestPayloadError as exc:
        # The body could not be read as sent: a Content-Encoding it does not decode with, a
        # chunked framing that breaks off. The client's fault; nothing was read or done.
        log.info("%s %s: unreadable body: %s", request.method, request.path, exc)
        response = problem_response(
            400, "malformed_body", "Bad request", "the body could not be read as sent"
        )
        # The rest of the body cannot be read past, so the connection ends with this answer:
        # sent here, then closed (aiohttp would otherwise try to read the body's remainder).
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
        return response
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        raise
    except Exception:  # a bug or an unforeseen database answer: still a problem document
        log.exception("unhandled error while serving %s %s", request.method, request.path)
        return problem_response(
            500, "internal_error", "Internal error", "the gateway failed; nothing was reported done"
        )


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
