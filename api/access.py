"""API keys: made, listed and revoked by ``authsrv api-keys``; checked on every request.

A token is ``ask_<key id>_<43 characters of base64url>``: 32 random bytes after the key's id,
shown once when the key is made. The store keeps the key's record with the SHA-256 of the
token, never the token (a 256-bit random token needs no slow or keyed hash). A request names
its key in ``Authorization: Bearer <token>``; the record is read in the request's own read
transaction, so a revocation counts from the next request, in every process.

Roles (:class:`authsrv.model.ApiRole`): ``backoffice`` (everything but the card holders'
endpoints), ``store`` (bound to one store: its terminals and its rows of the reports),
``selfservice`` (the card holders' endpoints, rate-limited). Every change to the keys is in the
audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import msgspec

from authsrv.model import ApiKey, ApiRole
from authsrv.store import Ledger

__all__ = [
    "TOKEN_PREFIX",
    "ApiKeyError",
    "actor_of",
    "add_key",
    "authenticate",
    "revoke_key",
    "token_hash",
]

# "authsrv secret key": secret scanners can recognise it (a prefix, not a secret).
TOKEN_PREFIX = "ask_"  # noqa: S105
KEY_ID_HEX = 12
TOKEN_SECRET_BYTES = 32
NAME_LEN_MAX = 64
# The longest Authorization value looked at (a token is about 60 characters).
HEADER_LEN_MAX = 200
_TOKEN = re.compile(r"ask_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[ -~]{1,64}")


class ApiKeyError(ValueError):
    """A key cannot be made or revoked as asked; one line saying why."""


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def actor_of(key: ApiKey) -> str:
    """Who, in the audit log: the key's id and its holder's name."""
    return f"api:{key.id}:{key.name}"


def add_key(
    led: Ledger, *, name: str, role: ApiRole, store_id: str, now_ms: int, actor: str
) -> tuple[ApiKey, str]:
    """Make a key in ``led``'s transaction (audited); returns it and its token (shown once).

    Error handling: :class:`ApiKeyError` for a bad name, a store key without a known store or a
    store given to another role.
    """
    if not _NAME.fullmatch(name):
        raise ApiKeyError(f"--name must be 1 to {NAME_LEN_MAX} printable ASCII characters")
    if role is ApiRole.STORE:
        if not store_id:
            raise ApiKeyError("a store key needs --store, the one store it may see")
        if led.store(store_id) is None:
            raise ApiKeyError(f"store {store_id} does not exist; see `authsrv stores list`")
    elif store_id:
        raise ApiKeyError(f"--store is for role store only, not {role.value}")
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    while led.api_key(key_id) is not None:  # 48 bits: a repeat is all but impossible
        key_id = secrets.token_hex(KEY_ID_HEX // 2)
    token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(TOKEN_SECRET_BYTES)}"
    assert _TOKEN.fullmatch(token), "token shape"
    key = ApiKey(
        id=key_id,
        name=name,
        role=role,
        store_id=store_id,
        token_hash=token_hash(token),
        created_ms=now_ms,
        created_by=actor,
    )
    led.put_api_key(key)
    detail: dict[str, str | int] = {"name": name, "role": role.value}
    if store_id:
        detail["store"] = store_id
    led.add_audit(
        at_ms=now_ms, actor=actor, action="api_key_add", target=f"api_key:{key_id}", detail=detail
    )
    return key, token


def revoke_key(led: Ledger, key_id: str, *, now_ms: int, actor: str) -> ApiKey:
    """Revoke a key in ``led``'s transaction (audited).

    Error handling: :class:`ApiKeyError` for an unknown or already revoked key.
    """
    key = led.api_key(key_id)
    if key is None:
        raise ApiKeyError(f"no API key {key_id}; see `authsrv api-keys list`")
    if key.revoked_ms:
        raise ApiKeyError(f"API key {key_id} is revoked already")
    revoked = msgspec.structs.replace(key, revoked_ms=now_ms)
    led.put_api_key(revoked)
    led.add_audit(
        at_ms=now_ms,
        actor=actor,
        action="api_key_revoke",
        target=f"api_key:{key_id}",
        detail={"name": key.name, "role": key.role.value},
    )
    return revoked


def authenticate(led: Ledger, authorization: str | None) -> ApiKey | None:
    """The key in force that an ``Authorization: Bearer`` value names, else None."""
    if authorization is None or len(authorization) > HEADER_LEN_MAX:
        return None
    scheme, _, token = authorization.partition(" ")
    match = _TOKEN.fullmatch(token.strip())
    if scheme.lower() != "bearer" or match is None:
        return None
    key = led.api_key(match.group(1))
    digest = token_hash(token.strip())
    if key is None or key.revoked_ms:
        return None
    return key if hmac.compare_digest(digest, key.token_hash) else None
