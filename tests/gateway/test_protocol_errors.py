"""Requests aiohttp cannot parse get problem documents too (screening.api.protocol), over raw
sockets on a real gateway: nothing echoes the request's bytes, in the answer or in the log, and
the gateway keeps serving."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import uuid
from typing import Any

import pytest
from aiohttp import http_exceptions

from screening.api.problems import BODY_CODINGS
from screening.api.protocol import protocol_problem
from tests.conftest import RunningGateway
from tests.gateway.events import event, resident_id

ID_NUMBER = resident_id()


async def exchange(gw: RunningGateway, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a fresh connection; the status, headers (lower-case names) and body of
    the answer, read to the end of the stream: every answer here closes its connection (the
    read would time out otherwise)."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def problem(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"].startswith("application/problem+json"), headers
    document: dict[str, Any] = json.loads(body)
    return document


async def assert_serving(gw: RunningGateway) -> None:
    async with gw.http.get(f"{gw.url}/healthz") as resp:
        assert resp.status == 200


def post(body: bytes, *headers: str) -> bytes:
    head = [
        "POST /v1/events HTTP/1.1",
        "Host: gateway",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",  # an answer from the application may keep the connection
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


CASES = [
    pytest.param(
        f"GET /v1/parcels/{ID_NUMBER}{'a' * 9000} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode(),
        400, "line_too_long", id="request-line-too-long",
    ),
    pytest.param(
        f"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Note: {ID_NUMBER}{'a' * 9000}\r\n\r\n"
        .encode(),
        400, "line_too_long", id="header-too-long",
    ),
    pytest.param(
        f"G@T /v1/parcels/{ID_NUMBER} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode(),
        400, "malformed_request", id="bad-method",
    ),
    pytest.param(
        f"POST /v1/events HTTP/1.1\r\nHost: gateway\r\nContent-Length: {ID_NUMBER}x\r\n\r\n"
        .encode(),
        400, "malformed_request", id="bad-content-length",
    ),
    pytest.param(
        b"POST /v1/events HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ZZ\r\nabc\r\n0\r\n\r\n",
        400, "malformed_request", id="bad-chunk-size",
    ),
    # br and zstd are refused as aiohttp reads the headers (without their optional packages),
    # the others by the gateway before any handler: aiohttp would pass them on undecoded.
    *(
        pytest.param(
            post(b'{"type": "parcel.received"}', f"Content-Encoding: {coding}"),
            415, "unsupported_content_encoding", id=f"{coding}-body",
        )
        for coding in ("br", "zstd", "compress", "gzip, br", "x-custom")
        if coding not in BODY_CODINGS
    ),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status", "code"), CASES)
async def test_an_unparsable_request_gets_a_problem_document_that_echoes_nothing(
    gateway: RunningGateway,
    caplog: pytest.LogCaptureFixture,
    raw: bytes,
    status: int,
    code: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    got, headers, body = await exchange(gateway, raw)
    document = problem(headers, body)
    assert (got, document["status"], document["code"]) == (status, status, code), document
    assert ID_NUMBER.encode() not in body
    assert b"aaaa" not in body
    assert headers["server"] == "screening-gateway"
    if status == 415:  # RFC 9110 15.5.16: the codings that would have been accepted
        assert headers["accept-encoding"] == ", ".join(BODY_CODINGS)
        assert "gzip" in BODY_CODINGS
    assert ID_NUMBER not in caplog.text  # the log names the kind of error only
    await assert_serving(gateway)


async def test_a_gzip_body_is_decoded_and_ingested(gateway: RunningGateway) -> None:
    item = event(
        "parcel.received", gateway.keys.site, f"GZ{uuid.uuid4().hex[:12]}", carrier="SF", flow="air"
    )
    data = gzip.compress(json.dumps(item).encode())
    async with gateway.http.post(
        f"{gateway.url}/v1/events",
        data=data,
        headers={**gateway.auth(), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    ) as resp:
        body = await resp.json()
        assert resp.status == 201, body
    assert body["results"][0]["result"] == "accepted"


async def test_answers_name_the_server_without_versions(gateway: RunningGateway) -> None:
    for path in ("/healthz", "/v1/no-such-route", "/v1/openapi.json"):
        async with gateway.http.get(f"{gateway.url}{path}") as resp:
            await resp.read()
            assert resp.headers["Server"] == "screening-gateway", path
    status, headers, _ = await exchange(
        gateway, b"GET /v1/openapi.json HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"
    )
    assert (status, headers["server"]) == (200, "screening-gateway")


async def test_a_gzip_body_that_does_not_decompress_is_malformed_not_unsupported(
    gateway: RunningGateway,
) -> None:
    raw = post(b"not gzip at all", "Content-Encoding: gzip", f"Authorization: {auth(gateway)}")
    status, headers, body = await exchange(gateway, raw)
    assert (status, problem(headers, body)["code"]) == (400, "malformed_body")
    await assert_serving(gateway)


def auth(gw: RunningGateway) -> str:
    return gw.auth()["Authorization"]


@pytest.mark.parametrize(
    ("status", "exc", "expected"),
    [
        (400, http_exceptions.LineTooLong(b"x" * 10, 8190), (400, "line_too_long")),
        (400, http_exceptions.BadHttpMethod("G@T"), (400, "malformed_request")),
        (400, http_exceptions.ContentEncodingError("br"), (415, "unsupported_content_encoding")),
        (400, http_exceptions.BadHttpMessage("?"), (400, "malformed_request")),
        (400, ValueError("not an aiohttp error"), (400, "malformed_request")),
        (500, RuntimeError("a failure outside the middlewares"), (500, "internal_error")),
        (504, None, (500, "internal_error")),
    ],
)
def test_each_kind_of_protocol_error_has_its_problem_document(
    status: int, exc: BaseException | None, expected: tuple[int, str]
) -> None:
    response = protocol_problem(status, exc)
    assert response.content_type == "application/problem+json"
    assert response.text is not None
    document = json.loads(response.text)
    assert (response.status, document["code"]) == expected
    assert (document["status"], document["code"]) == expected
