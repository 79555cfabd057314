"""HTTP requests that never reach a handler, answered as problem documents too.

aiohttp answers a request it cannot parse (a request line or header past its 8190-byte limit, a
malformed method, chunk size or Content-Length, a body in a Content-Encoding it cannot decode)
from its connection handler, before any middleware runs, with a text/plain body that echoes
the offending bytes. The API promises application/problem+json with a stable ``code`` for every
error, and logs must never carry an ID number, which a request line can hold. The runner here
makes aiohttp's connection handler answer those requests with problem documents and log only
their kind. Every answer, these and the application's, names the server without versions.

The hook is aiohttp's ``RequestHandler.handle_error`` (its answer to a request it could not
parse, or to a failure outside the application's middlewares), reached through the runner's
server; tests/gateway/test_protocol_errors.py holds it to the aiohttp in use.
"""

from __future__ import annotations

import logging

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from screening.api.problems import problem_response, unsupported_coding

log = logging.getLogger(__name__)

# What every answer names as its server: aiohttp's default names Python's and aiohttp's
# versions, which tell a scanner which published flaws to try (OWASP API8, misconfiguration).
SERVER_HEADER = "screening-gateway"

# (status, code, title, detail) by what aiohttp raised; the first match in order wins (the
# classes form a hierarchy: BadHttpMethod is a BadStatusLine, all are BadHttpMessage).
_PROTOCOL_PROBLEMS: tuple[tuple[type[BaseException], int, str, str, str], ...] = (
    (http_exceptions.LineTooLong, 400, "line_too_long", "Request too large",
     "the request line or a header is longer than 8190 bytes"),
    (http_exceptions.BadHttpMethod, 400, "malformed_request", "Bad request",
     "the request method is not a valid HTTP token"),
    (http_exceptions.InvalidHeader, 400, "malformed_request", "Bad request",
     "a header is not valid HTTP"),
    (http_exceptions.ContentLengthError, 400, "malformed_request", "Bad request",
     "the Content-Length does not describe the body"),
    (http_exceptions.TransferEncodingError, 400, "malformed_request", "Bad request",
     "the chunked transfer encoding of the body is malformed"),
    (http_exceptions.InvalidURLError, 400, "malformed_request", "Bad request",
     "the request target is not a valid URL"),
    (http_exceptions.BadHttpMessage, 400, "malformed_request", "Bad request",
     "the request is not valid HTTP/1.1"),
)  # fmt: skip


def protocol_problem(status: int, exc: BaseException | None) -> web.Response:
    """The problem document for a request aiohttp could not parse (or serve) at all."""
    if status >= 500 or exc is None:
        # aiohttp's other 5xx here, a 504 for a handler past its timeout, cannot happen: the
        # gateway sets no handler timeout.
        return problem_response(
            500, "internal_error", "Internal error", "the gateway failed; nothing was reported done"
        )
    if isinstance(exc, http_exceptions.ContentEncodingError):
        # Raised with the headers, for br or zstd without their optional packages; a body that
        # does not decode is read by the handler and answered there (malformed_body).
        return unsupported_coding()
    for kind, problem_status, code, title, detail in _PROTOCOL_PROBLEMS:
        if isinstance(exc, kind):
            return problem_response(problem_status, code, title, detail)
    return problem_response(status, "malformed_request", "Bad request", "the request is not valid")


async def name_the_server(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the application's answers name the server without versions."""
    response.headers["Server"] = SERVER_HEADER


class _ProblemRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer has gone out already: aiohttp's own handling (it gives up the
            # connection) is all that is left.
            return super().handle_error(request, status, exc, message)
        if status >= 500:
            log.error("request failed outside the application", exc_info=exc)
        else:
            # The kind only: aiohttp's message quotes the request's bytes, which may hold a
            # document number in a URL. Not HTTP at all on a connection's first request (TLS
            # to a plain port, a scanner) is noise, as aiohttp also judges.
            first = self._request_count == 1 and isinstance(exc, http_exceptions.BadHttpMethod)
            log.log(
                logging.DEBUG if first else logging.INFO,
                "unparsable HTTP request from %s: %s",
                request.remote,
                exc.__class__.__name__ if exc else status,
            )
        response = protocol_problem(status, exc)
        response.headers["Server"] = SERVER_HEADER  # no application: its signal does not run
        response.force_close()  # as aiohttp does: the rest of the stream cannot be trusted
        return response


class _ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparsable requests with problem documents."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application's server as aiohttp builds it (its handler, request factory and
        # settings), but making the connection handler above.
        server.__class__ = _ProblemServer
        return server
