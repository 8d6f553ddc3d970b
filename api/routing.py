"""An operation of the API as data: method, path, roles, parameters, body, answers, handler.

:data:`api.operations.OPERATIONS` lists them all; the ASGI app routes and checks requests from
the list (:mod:`api.app`) and the OpenAPI document is generated from it (:mod:`api.openapi`),
so what is documented is what runs. Answers every operation shares are added here, once:

- 401 without a valid key; 403 when the key's role may not call the operation;
- 400 (not JSON), 413 (too large) and 422 (a field is wrong) for operations with a body, and
  422 for operations with parameters;
- 429 for the rate-limited self-service operations;
- 503 for every operation (too many requests at once; a write the writer could not take).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from authsrv.model import ApiKey, ApiRole

if TYPE_CHECKING:
    from api.context import ApiContext

__all__ = ["ALL_ROLES", "JSON", "Answer", "Call", "Operation", "Param", "Reply"]

JSON = "application/json"
CSV = "text/csv"
OCTETS = "application/octet-stream"
ALL_ROLES = frozenset(ApiRole)


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: Literal["path", "query"]
    type: Any  # a type msgspec converts the text to (and makes the parameter's schema of)
    description: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class Answer:
    description: str
    body: Any = None  # the msgspec type of a JSON answer; None: ``media`` bytes
    media: str = JSON
    headers: tuple[str, ...] = ()  # response headers it carries (documented)
    more_media: tuple[str, ...] = ()  # other media types it may come in (same schema)


@dataclass(slots=True)
class Call:
    """One request that passed authentication, the role check, the rate limits and the
    parameter and body checks."""

    ctx: ApiContext
    key: ApiKey
    client: str  # the caller's address
    params: dict[str, Any]
    body: Any

    @property
    def actor(self) -> str:
        from api.access import actor_of

        return actor_of(self.key)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any = None  # a msgspec struct (JSON), or bytes in ``media``
    media: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    file: Path | None = None  # sent from disk instead of ``body``


Handler = Callable[[Call], Awaitable[Reply]]

_STANDARD: dict[int, Answer] = {
    400: Answer("The body is not JSON."),
    401: Answer("No API key, or not one in force.", headers=("WWW-Authenticate",)),
    403: Answer("The key's role (or its store) does not allow this."),
    413: Answer("The body is larger than api.body_size_max_bytes."),
    422: Answer("A field or parameter is wrong; `field` names it."),
    429: Answer("A rate limit: wait Retry-After seconds.", headers=("Retry-After",)),
    503: Answer(
        "Too many requests at once, or the writer could not take the change (nothing "
        "changed); try again after Retry-After seconds.",
        headers=("Retry-After",),
    ),
}


@dataclass(frozen=True, slots=True)
class Operation:
    id: str
    method: Literal["GET", "POST", "PATCH"]
    path: str
    summary: str
    tag: str
    roles: frozenset[ApiRole]
    handler: Handler
    answers: Mapping[int, Answer]  # its own: the successes and the 404/409 it may give
    body: Any = None  # the msgspec type of its JSON body
    params: tuple[Param, ...] = ()
    self_service: bool = False  # rate-limited per client and per card
    description: str = ""

    def statuses(self) -> dict[int, Answer]:
        """Every answer it documents, its own and the shared ones, by status code."""
        codes = {401, 503}
        if self.roles != ALL_ROLES:
            codes.add(403)
        if self.body is not None:
            codes |= {400, 413, 422}
        if self.params:
            codes.add(422)
        if self.self_service:
            codes.add(429)
        merged = {code: _STANDARD[code] for code in codes}
        merged.update(self.answers)
        return dict(sorted(merged.items()))
