"""The OpenAPI document served at /v1/openapi.json stays true to the routes the app registers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from screening.domain.compliance import Reason, Rule
from screening.domain.events import EventType, Flow
from screening.protection import PersonalDataVault
from screening.settings import Settings
from tests.conftest import RunningGateway, gateway_with

OPENAPI_PATH = "/v1/openapi.json"
SCHEMA_REF = "#/components/schemas/"


async def fetch_document(gw: RunningGateway) -> dict[str, Any]:
    async with gw.http.get(f"{gw.url}{OPENAPI_PATH}") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        document: dict[str, Any] = await resp.json()
    return document


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith(SCHEMA_REF), ref
    schema: dict[str, Any] = document["components"]["schemas"][ref.removeprefix(SCHEMA_REF)]
    return schema


async def test_the_document_is_openapi_3_1(gateway: RunningGateway) -> None:
    document = await fetch_document(gateway)
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"]
    assert document["info"]["version"]


async def test_the_documented_operations_are_exactly_the_registered_routes(
    gateway: RunningGateway,
) -> None:
    registered = {
        (route.resource.canonical, route.method.lower())
        for route in gateway.app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and route.resource.canonical != OPENAPI_PATH
        # The web console (HTML pages and its static files) is not part of the JSON API.
        and not route.resource.canonical.startswith("/console")
    }
    document = await fetch_document(gateway)
    documented = {
        (path, method) for path, operations in document["paths"].items() for method in operations
    }
    assert documented == registered


async def test_every_reference_resolves_to_a_component_schema(gateway: RunningGateway) -> None:
    document = await fetch_document(gateway)
    found = set(refs(document))
    assert found, "the document references no schemas at all"
    schemas = document["components"]["schemas"]
    dangling = sorted(
        r
        for r in found
        if not r.startswith(SCHEMA_REF) or r.removeprefix(SCHEMA_REF) not in schemas
    )
    assert dangling == []


async def test_the_events_body_accepts_each_of_the_six_event_types(
    gateway: RunningGateway,
) -> None:
    document = await fetch_document(gateway)
    body = document["paths"]["/v1/events"]["post"]["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    variants = schema["anyOf"]
    single = next(v for v in variants if "discriminator" in v)
    batch = next(v for v in variants if v.get("type") == "array")
    assert batch["items"] == single  # an array of the same events
    # An empty batch is a 400, a longer one than the gateway takes a 413.
    assert (batch["minItems"], batch["maxItems"]) == (1, 1000)

    discriminator = single["discriminator"]
    assert discriminator["propertyName"] == "type"
    kinds = {e.value for e in EventType}
    assert len(kinds) == 6
    assert set(discriminator["mapping"]) == kinds
    assert {o["$ref"] for o in single["oneOf"]} == set(discriminator["mapping"].values())
    for kind, ref in discriminator["mapping"].items():
        event_schema = resolve(document, ref)
        assert event_schema["properties"]["type"]["const"] == kind
        assert event_schema.get("additionalProperties") is False  # unknown fields are refused
        assert {"event_id", "site_id", "waybill_no", "occurred_at", "type"} <= set(
            event_schema["required"]
        )


async def test_the_statuses_the_events_endpoint_answers_are_documented(
    gateway: RunningGateway,
) -> None:
    document = await fetch_document(gateway)
    responses = document["paths"]["/v1/events"]["post"]["responses"]
    # 201: one event accepted; 200: a batch or a duplicate; then the problem statuses.
    for status in ("200", "201", "400", "401", "403", "409", "413", "422"):
        assert status in responses, status
    for status in ("400", "401", "403", "409", "413", "422"):
        content = responses[status]["content"]
        assert set(content) == {"application/problem+json"}
        assert content["application/problem+json"]["schema"]["$ref"] == SCHEMA_REF + "Problem"


async def test_the_violations_filters_list_the_values_the_endpoint_takes(
    gateway: RunningGateway,
) -> None:
    document = await fetch_document(gateway)
    params = document["paths"]["/v1/sites/{site_id}/violations"]["get"]["parameters"]
    schema = {p["name"]: p["schema"] for p in params}
    assert set(schema["reason"]["enum"]) == {r.value for r in Reason}
    assert set(schema["rule"]["enum"]) == {r.value for r in Rule}
    assert set(schema["flow"]["enum"]) == {f.value for f in Flow} | {"unknown"}
    assert (schema["limit"]["minimum"], schema["limit"]["maximum"]) == (1, 1000)


async def test_the_batch_limit_documented_is_the_one_configured(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> None:
    settings = Settings(data_dir=tmp_path, max_batch_events=3)
    async with gateway_with(settings, pool, vault) as gw:
        document = await fetch_document(gw)
    schema = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    batch = next(v for v in schema["application/json"]["schema"]["anyOf"] if "items" in v)
    assert batch["maxItems"] == 3
