"""The ASGI application: Starlette routes built from :data:`api.operations.OPERATIONS`, and the
path every request takes through them.

Per request, in this order: the in-flight limit (503), the API key (401), the role (403), the
per-client rate limit of self-service operations (429), the parameters (422), the body (413,
400, 422), then the handler. Every answer is JSON (CSV or a file for reports); errors have one
shape (:mod:`api.errors`). One log line per request (operation, status, key id, address,
latency; never a body) and ``authsrv_api_requests_total{operation,status}``.

Error handling: an operating error answers 4xx/5xx and changes nothing; an unexpected
exception answers 500 and is logged with its traceback; a broken invariant (AssertionError)
answers 500, is logged, and sets ``ctx.fatal``, which stops the API (and the host it runs in).
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from api.access import authenticate
from api.context import ApiContext
from api.errors import ApiError, bad_request, invalid
from api.openapi import openapi_bytes
from api.ratelimit import TokenBuckets
from api.routing import JSON, Call, Operation, Reply
from api.schemas import ErrorAnswer, ErrorDetail
from api.writer import WriterUnavailable
from authsrv.model import ApiKey
from authsrv.store import StoreFull

__all__ = ["build_app", "rate_limit"]

RETRY_BUSY_S = 1
_FIELD_AT = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_FIELD_NAMED = re.compile(r"field `([A-Za-z_][A-Za-z0-9_]*)`")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_json = msgspec.json.Encoder()


def build_app(ctx: ApiContext, operations: tuple[Operation, ...] | None = None) -> Starlette:
    from api.operations import OPERATIONS

    ops = OPERATIONS if operations is None else operations
    document = openapi_bytes(ops)

    async def openapi(_request: Request) -> Response:
        return Response(document, media_type=JSON)

    routes = [Route("/openapi.json", openapi, methods=["GET"])]
    routes += [Route(op.path, _endpoint(ctx, op), methods=[op.method], name=op.id) for op in ops]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such path, method not allowed) in the API's shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _json_response(
        Reply(
            exc.status_code,
            ErrorAnswer(ErrorDetail(code=code, message=str(exc.detail), field=None)),
            headers=dict(exc.headers or {}),  # Allow, on a 405
        )
    )


def _error_reply(exc: ApiError) -> Reply:
    body = ErrorAnswer(
        ErrorDetail(
            code=exc.code,
            message=exc.message,
            field=exc.field,
            rc=exc.rc,
            tries_left=exc.tries_left,
        )
    )
    return Reply(exc.status, body, headers=exc.headers)


def _json_response(reply: Reply) -> Response:
    if reply.file is not None:
        return FileResponse(
            reply.file, media_type=reply.media, headers=dict(reply.headers), filename=None
        )
    content = reply.body if isinstance(reply.body, bytes) else _json.encode(reply.body)
    return Response(
        content, status_code=reply.status, media_type=reply.media, headers=dict(reply.headers)
    )


def _endpoint(ctx: ApiContext, op: Operation) -> Any:
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        seen: list[ApiKey] = []
        client = request.client.host if request.client is not None else ""
        try:
            reply = await _dispatch(ctx, op, request, client, seen)
        except ApiError as exc:
            reply = _error_reply(exc)
        except WriterUnavailable as exc:
            reply = _error_reply(_unavailable(f"nothing changed: {exc}"))
        except StoreFull:
            ctx.metrics.store_errors.labels("full").inc()
            ctx.log.error("store_full", op=op.id)
            reply = _error_reply(_unavailable("nothing changed: the store is full"))
        except AssertionError:
            ctx.log.exception("invariant_broken", op=op.id)
            ctx.fatal.set()
            reply = _error_reply(ApiError(500, "internal", "internal error; the API stops"))
        except Exception:
            ctx.log.exception("api_request_failed", op=op.id)
            reply = _error_reply(ApiError(500, "internal", "internal error (logged)"))
        ctx.metrics.api_requests.labels(op.id, str(reply.status)).inc()
        ctx.log.info(
            "api_request",
            op=op.id,
            method=op.method,
            status=reply.status,
            key=seen[0].id if seen else None,
            client=client,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return _json_response(reply)

    endpoint.__name__ = op.id
    return endpoint


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": str(RETRY_BUSY_S)})


async def _dispatch(
    ctx: ApiContext, op: Operation, request: Request, client: str, seen: list[ApiKey]
) -> Reply:
    a = ctx.cfg.api
    if ctx.inflight >= a.requests_inflight_max:
        raise _unavailable(f"{a.requests_inflight_max} requests are being handled; try again")
    ctx.inflight += 1
    try:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > a.body_size_max_bytes:
            raise _too_large(a.body_size_max_bytes)
        with ctx.store.read() as led:
            key = authenticate(led, request.headers.get("authorization"))
        if key is None:
            raise ApiError(
                401,
                "unauthorized",
                "give an API key in force: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        seen.append(key)
        if key.role not in op.roles:
            raise ApiError(403, "forbidden", f"a {key.role.value} key may not call {op.id}")
        if op.self_service:
            rate_limit(ctx, ctx.client_buckets, f"{key.id}|{client}".encode(), "client")
        params = _params(op, request)
        body = await _body(op, request, a.body_size_max_bytes) if op.body is not None else None
        return await op.handler(Call(ctx, key, client, params, body))
    finally:
        ctx.inflight -= 1


def rate_limit(ctx: ApiContext, buckets: TokenBuckets, key: bytes, bucket: str) -> None:
    """Take a token from ``key``'s bucket, or refuse with 429 and Retry-After."""
    refused = buckets.take(key)
    if refused is None:
        return
    ctx.metrics.api_rate_limited.labels("full" if refused.full else bucket).inc()
    raise ApiError(
        429,
        "rate_limited",
        f"too many requests; try again in {refused.retry_after_s} s",
        headers={"Retry-After": str(refused.retry_after_s)},
    )


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the body is larger than {limit} bytes")


def _params(op: Operation, request: Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in op.params:
        raw = request.path_params.get(p.name) if p.where == "path" else None
        if p.where == "query":
            raw = request.query_params.get(p.name)
        if raw is None:
            if p.required:
                raise invalid(f"parameter {p.name} is required", p.name)
            values[p.name] = None
            continue
        if _CONTROL.search(raw):
            raise invalid(f"parameter {p.name} holds a control character", p.name)
        try:
            values[p.name] = msgspec.convert(raw, p.type, strict=False)
        except msgspec.ValidationError as exc:
            raise invalid(f"parameter {p.name}: {_plain(str(exc))}", p.name) from None
    return values


async def _body(op: Operation, request: Request, limit: int) -> Any:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise bad_request("a JSON body is required")
    try:
        body = msgspec.json.decode(raw, type=op.body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        where = _FIELD_AT.search(text) or _FIELD_NAMED.search(text)
        raise invalid(f"body: {_plain(text)}", where.group(1) if where else None) from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"the body is not JSON: {exc}") from None
    _no_control_characters(body)
    return body


def _plain(text: str) -> str:
    return text.replace("`", "")


def _no_control_characters(body: Any) -> None:
    """No text field may hold a control character (a line break in an id or a reason)."""
    for name in getattr(body, "__struct_fields__", ()):
        value = getattr(body, name)
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if isinstance(v, str) and _CONTROL.search(v):
                raise invalid(f"body: {name} holds a control character", name)
