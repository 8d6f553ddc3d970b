"""Card holders' data (the ``holders`` database, card id -> :class:`CardHolder`).

Online activation (``POST /v1/self/activate``) records who activated a card: mobile, e-mail,
consents, interests, and issues the holder a card token. The self-service endpoints show a
card to whoever gives its number and that mobile, or the card token issued to its holder.
``authsrv holders export`` gives a person everything kept about them (GDPR access),
``authsrv holders delete`` removes it (erasure) and leaves only an audit entry that it
happened (no personal data in it).

The record holds no card data: the card is named by its id; exports show the masked number.
Looking holders up by mobile scans the database (an export is rare; an index would be a second
copy of every number to keep in step and to erase).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from authsrv.model import CardHolder
from authsrv.store import Ledger

__all__ = [
    "CARD_TOKEN_PREFIX",
    "HolderData",
    "HolderError",
    "check_holder",
    "delete_holders",
    "export_record",
    "holder_by_token",
    "holders_of_mobile",
    "issue_card_token",
    "mobile_matches",
    "normalize_mobile",
    "put_holder",
]

CARD_TOKEN_PREFIX = "ct_"  # noqa: S105 - a prefix, not a secret
CARD_TOKEN_SECRET_BYTES = 32
EMAIL_LEN_MAX = 254
TAGS_MAX = 32  # consents or interests per holder
TAG_LEN_MAX = 40
_MOBILE = re.compile(r"\+[1-9][0-9]{7,14}")  # E.164
_MOBILE_NOISE = re.compile(r"[\s().-]")
_CARD_TOKEN = re.compile(r"ct_([1-9][0-9]{0,15})_[A-Za-z0-9_-]{43}")
_TAG = re.compile(r"[a-z0-9_.-]{1,40}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")


class HolderError(ValueError):
    """Holder data that cannot be recorded as given; one line naming the field (``field``:
    the field's name, when it is one)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def normalize_mobile(text: str) -> str | None:
    """E.164 form of a mobile number as people type it, or None.

    >>> normalize_mobile("+47 912 34 567"), normalize_mobile("0047-91234567"), normalize_mobile("1")
    ('+4791234567', '+4791234567', None)
    """
    compact = _MOBILE_NOISE.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    return compact if _MOBILE.fullmatch(compact) else None


def _tags(name: str, values: tuple[str, ...]) -> tuple[str, ...]:
    if len(values) > TAGS_MAX or not all(_TAG.fullmatch(v) for v in values):
        raise HolderError(
            f"{name}: at most {TAGS_MAX} names of 1-{TAG_LEN_MAX} characters a-z, 0-9, _ . -",
            name,
        )
    return tuple(sorted(set(values)))


@dataclass(frozen=True, slots=True)
class HolderData:
    """A holder's data as it will be recorded: checked and normalized."""

    mobile: str  # E.164
    email: str
    consents: tuple[str, ...]
    interests: tuple[str, ...]


def check_holder(
    *,
    mobile: str,
    email: str = "",
    consents: tuple[str, ...] = (),
    interests: tuple[str, ...] = (),
) -> HolderData:
    """The holder data :func:`put_holder` records, checked without a transaction (so that an
    online activation refuses bad data before it looks at the card or the code).

    Error handling: :class:`HolderError` naming the field.
    """
    normal = normalize_mobile(mobile)
    if normal is None:
        raise HolderError("mobile: give an international number, e.g. +4791234567", "mobile")
    if email and not (len(email) <= EMAIL_LEN_MAX and _EMAIL.fullmatch(email)):
        raise HolderError("email: give one address, e.g. name@example.com", "email")
    return HolderData(normal, email, _tags("consents", consents), _tags("interests", interests))


def put_holder(
    led: Ledger,
    card_id: int,
    *,
    mobile: str,
    email: str = "",
    consents: tuple[str, ...] = (),
    interests: tuple[str, ...] = (),
    now_ms: int,
) -> CardHolder:
    """Record or update the holder of ``card_id`` in ``led``'s transaction (a card token
    issued before stays valid).

    Error handling: :class:`HolderError` naming the field; nothing is written then.
    """
    if led.card(card_id) is None:
        raise HolderError(f"card {card_id} does not exist")
    data = check_holder(mobile=mobile, email=email, consents=consents, interests=interests)
    old = led.holder(card_id)
    holder = CardHolder(
        card_id=card_id,
        mobile=data.mobile,
        email=data.email,
        consents=data.consents,
        interests=data.interests,
        created_ms=old.created_ms if old is not None else now_ms,
        updated_ms=now_ms,
        token_hash=old.token_hash if old is not None else b"",
    )
    led.put_holder(holder)
    return holder


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def issue_card_token(led: Ledger, card_id: int, *, now_ms: int) -> str:
    """A new self-service token for the holder of ``card_id`` (the previous one stops
    working); only its SHA-256 is kept. Returned once: give it to the holder.

    Error handling: :class:`HolderError` when the card has no holder record.
    """
    holder = led.holder(card_id)
    if holder is None:
        raise HolderError(f"card {card_id} has no holder record")
    token = f"{CARD_TOKEN_PREFIX}{card_id}_{secrets.token_urlsafe(CARD_TOKEN_SECRET_BYTES)}"
    assert _CARD_TOKEN.fullmatch(token), "card token shape"
    led.put_holder(
        msgspec.structs.replace(holder, token_hash=_token_hash(token), updated_ms=now_ms)
    )
    return token


def card_of_token(token: str) -> int | None:
    """The card id a well-formed card token names (not yet checked against its holder)."""
    match = _CARD_TOKEN.fullmatch(token)
    return int(match.group(1)) if match is not None else None


def holder_by_token(led: Ledger, token: str) -> CardHolder | None:
    card_id = card_of_token(token)
    holder = led.holder(card_id) if card_id is not None else None
    if holder is None or not holder.token_hash:
        return None
    return holder if hmac.compare_digest(_token_hash(token), holder.token_hash) else None


def mobile_matches(holder: CardHolder, mobile: str) -> bool:
    normal = normalize_mobile(mobile) or ""
    return hmac.compare_digest(normal.encode(), holder.mobile.encode())


def holders_of_mobile(led: Ledger, mobile: str) -> list[CardHolder]:
    normal = normalize_mobile(mobile)
    if normal is None:
        raise HolderError("mobile: give an international number, e.g. +4791234567", "mobile")
    return [h for h in led.holders() if h.mobile == normal]


def _utc(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def export_record(led: Ledger, holder: CardHolder) -> dict[str, Any]:
    """Everything kept about the holder of one card, as JSON (GDPR access request)."""
    card = led.card(holder.card_id)
    return {
        "card_id": holder.card_id,
        "card": card.masked if card is not None else None,
        "product": card.product if card is not None else None,
        "card_state": card.state.value if card is not None else None,
        "mobile": holder.mobile,
        "email": holder.email,
        "consents": list(holder.consents),
        "interests": list(holder.interests),
        "created": _utc(holder.created_ms),
        "updated": _utc(holder.updated_ms),
        "card_token_issued": bool(holder.token_hash),
    }


def delete_holders(
    led: Ledger, card_ids: list[int], *, actor: str, reason: str, now_ms: int
) -> int:
    """Erase the holder records of ``card_ids`` in ``led``'s transaction; each erasure is
    audited with the card and the reason, never the data. Returns how many were erased."""
    erased = 0
    for card_id in card_ids:
        if led.delete_holder(card_id):
            erased += 1
            led.add_audit(
                at_ms=now_ms,
                actor=actor,
                action="holder_delete",
                target=f"card:{card_id}",
                detail={"reason": reason},
            )
    return erased
