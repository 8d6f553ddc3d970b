"""The OpenAPI 3.1 document, generated from the operations table and the msgspec schemas.

Served at ``/openapi.json`` and committed as ``docs/openapi.json`` (a test keeps the two
equal: regenerate it with ``authsrv api openapi > docs/openapi.json``). The bytes depend only
on the code, never on the configuration, so every host of a release serves the same document.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec

from api.routing import JSON, Operation
from api.schemas import ErrorAnswer

__all__ = ["API_VERSION", "openapi_bytes", "openapi_document"]

API_VERSION = "1.0.0"
_REF = "#/components/schemas/{name}"
_HEADERS = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": "Bearer: the scheme the API expects.",
        "schema": {"type": "string"},
    },
}
_DESCRIPTION = (
    "Management and self-service API of the authsrv card host. Every request carries an API "
    "key (`Authorization: Bearer <token>`, made with `authsrv api-keys add`); its role "
    "(backoffice, store, selfservice) decides what it may call. Amounts are integers of minor "
    "units; card numbers are never answered, only masked (first six, last four). Every change "
    "goes through the host's single writer, is committed before the answer and is recorded in "
    "the audit log. See docs/api.md."
)


def openapi_document(operations: Iterable[Operation]) -> dict[str, Any]:
    ops = list(operations)
    types: list[Any] = [ErrorAnswer]
    for op in ops:
        if op.body is not None:
            types.append(op.body)
        types += [a.body for a in op.statuses().values() if a.body is not None]
    unique = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(unique, ref_template=_REF)
    ref = dict(zip(unique, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        roles = ", ".join(sorted(r.value for r in op.roles))
        entry: dict[str, Any] = {
            "operationId": op.id,
            "summary": op.summary,
            "description": (op.description + "\n\n" if op.description else "") + f"Roles: {roles}.",
            "tags": [op.tag],
            "security": [{"bearerAuth": []}],
        }
        if op.params:
            entry["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "description": p.description,
                    "schema": msgspec.json.schema(p.type),
                }
                for p in op.params
            ]
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": ref[op.body]}},
            }
        responses: dict[str, Any] = {}
        for code, answer in op.statuses().items():
            body = answer.body if answer.body is not None else None
            if body is None and answer.media == JSON:
                body = ErrorAnswer  # every JSON answer without a type of its own is an error
            schema = ref[body] if body is not None else {"type": "string"}
            response: dict[str, Any] = {
                "description": answer.description,
                "content": {m: {"schema": schema} for m in (answer.media, *answer.more_media)},
            }
            if answer.headers:
                response["headers"] = {h: _HEADERS[h] for h in answer.headers}
            responses[str(code)] = response
        entry["responses"] = responses
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "authsrv API", "version": API_VERSION, "description": _DESCRIPTION},
        "tags": [{"name": t} for t in dict.fromkeys(op.tag for op in ops)],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_bytes(operations: Iterable[Operation]) -> bytes:
    """The document as served and committed: indented JSON, keys in table order, one final
    newline."""
    return (json.dumps(openapi_document(operations), indent=2, ensure_ascii=False) + "\n").encode()
