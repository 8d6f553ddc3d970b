"""Answers that are not a success: one JSON shape, a status code, a stable code and one line.

Every error answer is ``{"error": {"code": ..., "message": ..., "field": ...}}``; ``field``
names the body field or parameter at fault (null when none is). Two operations add a member:
``rc`` (a declined web-shop load: the host's response code) and ``tries_left`` (a wrong
activation code: wrong codes still allowed before the lock). Messages never hold a card
number, a code, a token or a card holder's data.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ApiError", "bad_request", "conflict", "forbidden", "invalid", "not_found"]


class ApiError(Exception):
    """An answer other than a success; raised anywhere in a handler or a write job (where it
    also aborts the job's transaction)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        rc: str | None = None,
        tries_left: int | None = None,
    ) -> None:
        super().__init__(message)
        assert 400 <= status <= 599, status
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})
        self.rc = rc  # a web-shop load the host declined: its response code (DESIGN §3)
        self.tries_left = tries_left  # a wrong activation code: tries before the lock


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def invalid(message: str, field: str | None = None) -> ApiError:
    return ApiError(422, "invalid", message, field=field)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(message: str, field: str | None = None) -> ApiError:
    return ApiError(409, "conflict", message, field=field)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)
