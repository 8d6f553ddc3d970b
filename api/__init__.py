"""The HTTP API (docs/api.md): JSON over HTTP for the back office, the stores and the card
holders, on hypercorn's trio worker and Starlette, beside the terminal server or alone.

- :mod:`api.operations` every operation as data (roles, parameters, bodies, answers);
- :mod:`api.cards`, :mod:`api.refdata`, :mod:`api.reports`, :mod:`api.shop` (the web shop's
  gift-card loads), :mod:`api.selfservice` (card holders, online activation): the handlers;
- :mod:`api.app` the ASGI app: limits, keys, roles, rate limits, validation, errors;
- :mod:`api.openapi` the OpenAPI document, generated from the operations;
- :mod:`api.writer` how changes reach the store: the host's single writer, or a direct one;
- :mod:`api.access` API keys; :mod:`api.holders` card holders' data; :mod:`api.ratelimit`;
- :mod:`api.serve` the listener (``authsrv serve`` with ``api.enabled``, ``authsrv api``);
- :mod:`api.commands` the command line: ``api``, ``api-keys``, ``holders``.
"""

from __future__ import annotations

from api.context import ApiContext, api_context
from api.writer import DirectWriter, ServerWriter, Writer, WriterUnavailable

__all__ = [
    "ApiContext",
    "DirectWriter",
    "ServerWriter",
    "Writer",
    "WriterUnavailable",
    "api_context",
]
