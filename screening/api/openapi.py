"""OpenAPI 3.1 document generated from the route table and the pydantic wire models."""

from __future__ import annotations

import inspect
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from screening import __version__
from screening.api.context import GATEWAY
from screening.api.routes import ROUTES
from screening.api.schemas import Problem, ScanMetadataIn

REF = "#/components/schemas/{model}"

_ERROR_STATUSES = {
    "400": "Malformed request",
    "401": "Missing or invalid API key",
    "403": "Role or site not allowed",
    "404": "Not found",
    "409": "Conflict",
    "413": "Payload too large",
    "422": "Invalid event",
    "503": "Unavailable (Retry-After)",
}


def build_openapi(max_batch_events: int) -> dict[str, Any]:
    """The document; ``max_batch_events`` is the gateway's configured batch limit."""
    models = {r.response for r in ROUTES if r.response is not None} | {Problem}
    _, defs = models_json_schema(
        [(m, "serialization") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template=REF,
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, Any] = {}
    for route in ROUTES:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {},
        }
        if route.roles:
            op["security"] = [{"apiKey": []}]
            op["x-roles"] = list(route.roles)
        if route.params:
            op["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in route.params
            ]
        if route.body is not None:
            body = route.body(max_batch_events) if inspect.isfunction(route.body) else route.body
            body_schema = TypeAdapter(body).json_schema(ref_template=REF)
            schemas.update(body_schema.pop("$defs", {}))
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        if route.multipart:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["metadata"],
                            "properties": {
                                "metadata": {"$ref": REF.format(model="ScanMetadataIn")},
                                "image": {"type": "string", "contentMediaType": "image/png"},
                                "high": {"type": "string", "contentMediaType": "image/png"},
                                "low": {"type": "string", "contentMediaType": "image/png"},
                            },
                        }
                    }
                },
            }
            schemas["ScanMetadataIn"] = ScanMetadataIn.model_json_schema(ref_template=REF)
        if route.websocket:
            op["responses"]["101"] = {"description": "Switching protocols (WebSocket)"}
        elif route.response is not None:
            ref = {"$ref": REF.format(model=route.response.__name__)}
            for status, text in route.success:
                op["responses"][status] = {
                    "description": text,
                    "content": {"application/json": {"schema": ref}},
                }
        else:
            op["responses"]["200"] = {
                "description": "OK",
                "content": {route.raw_response or "text/plain": {"schema": {"type": "string"}}},
            }
        if route.roles:
            problem = {"$ref": REF.format(model="Problem")}
            for status, text in _ERROR_STATUSES.items():
                op["responses"][status] = {
                    "description": text,
                    "content": {"application/problem+json": {"schema": problem}},
                }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parcel-screening gateway",
            "version": __version__,
            "description": "Three-100% compliance: event ingest, parcel status, site rates.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "scr_<role>_... key"}
            },
        },
    }


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app[GATEWAY].settings.max_batch_events))
