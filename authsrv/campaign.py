"""Campaign cards off the terminal: online activation, its lock, and clawback (docs/products.md).

Domain functions for the back office and the HTTP API: each works inside the caller's write
transaction (``with store.write() as led``), so that what it decides and what it writes commit
together, exactly once, serialised with the terminals' writer. They return a result whose
``status`` the API maps to an answer; they raise only for arguments no caller should pass
(:class:`CampaignError`, a 400 for the API) and for broken invariants (assert).

Resource handling: nothing beyond the caller's transaction and key store.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass

import msgspec

from authsrv.engine import value_expired
from authsrv.model import (
    KIND_CAMPAIGN,
    Card,
    CardState,
    IdempotencyRecord,
    Posting,
    card_account,
    store_account,
)
from authsrv.store import Ledger
from keys import KeyStore, normalize_activation_code

__all__ = [
    "CLAWBACK_OP",
    "ActivationResult",
    "ActivationStatus",
    "CampaignError",
    "ClawbackResult",
    "ClawbackStatus",
    "activate_online",
    "clawback",
    "unlock_activation",
]

CLAWBACK_OP = "clawback"
CLAWBACK_STAN = "000000"  # no terminal request: the clearing record's STAN
REQUEST_ID_LEN_MAX = 64
REASON_LEN_MAX = 200
# Who, in the audit log: up to "api:<12-hex key id>:<key name of up to 64>" (81 characters).
ACTOR_LEN_MAX = 96


class CampaignError(ValueError):
    """An argument no caller should pass (the API validates first): one line, what to fix."""


def _text(name: str, value: str, limit: int) -> None:
    if not (1 <= len(value) <= limit and value.isascii() and value.isprintable()):
        raise CampaignError(f"{name} must be 1 to {limit} printable ASCII characters")


# -- online activation -------------------------------------------------------------------------


class ActivationStatus(enum.StrEnum):
    """What an online activation attempt came to; the HTTP API's answers in brackets
    (:mod:`api.selfservice`)."""

    ACTIVATED = "activated"  # the card is active now (200)
    # The right code for a card activated before (409, as NOT_AWAITING: no oracle for the code).
    ALREADY_ACTIVE = "already_active"
    WRONG_CODE = "wrong_code"  # counted; ``tries_left`` more before the lock (422)
    LOCKED = "locked"  # too many wrong codes: the back office unlocks (423)
    UNKNOWN_CARD = "unknown_card"  # no such card number (404)
    NOT_CAMPAIGN = "not_campaign"  # not a card that activates online (404: say no more)
    NOT_AWAITING = "not_awaiting"  # not awaiting activation: issued, blocked, closed... (409)
    EXPIRED = "expired"  # the card or its value has expired (409)


@dataclass(frozen=True, slots=True)
class ActivationResult:
    status: ActivationStatus
    card_id: int = 0
    card_masked: str = ""
    tries_left: int = 0  # wrong codes still allowed before the lock


def activate_online(
    led: Ledger,
    keys: KeyStore,
    pan: str,
    code: str,
    now_ms: int,
    max_wrong: int,
    *,
    actor: str = "api",
) -> ActivationResult:
    """Activate a campaign card that awaits online activation, with the code printed on its
    issue receipt (field 63 ``AC``), in the caller's write transaction.

    The code's keyed hash is compared with the card's in constant time. A wrong code (also one
    that cannot be a code at all) is counted on the card, durably; the ``max_wrong``-th locks
    online activation until the back office unlocks it (:func:`unlock_activation`). A locked
    card is refused without looking at the code. Activation and lock are audited.

    Error handling: :class:`keys.KeyStoreError` when the store has no activation key.
    """
    assert max_wrong >= 1, max_wrong
    card = led.card_by_hashes(keys.pan_hashes(pan)) if pan.isascii() and pan.isdigit() else None
    if card is None:
        return ActivationResult(ActivationStatus.UNKNOWN_CARD)
    product = led.product(card.product)
    assert product is not None, f"card {card.id} has no product"
    issue = card.campaign
    if product.kind != KIND_CAMPAIGN or issue is None or not issue.code_verifier:
        return ActivationResult(ActivationStatus.NOT_CAMPAIGN, card.id, card.masked)
    left = max(max_wrong - issue.wrong_codes, 0)
    if issue.locked:
        return ActivationResult(ActivationStatus.LOCKED, card.id, card.masked)
    if card.state is CardState.EXPIRED or value_expired(card, now_ms):
        return ActivationResult(ActivationStatus.EXPIRED, card.id, card.masked)
    normal = normalize_activation_code(code)
    right = normal is not None and hmac.compare_digest(
        keys.activation_verifier(card.id, normal), issue.code_verifier
    )
    if card.state is not CardState.AWAITING_ACTIVATION:
        # Nothing to guess at here: the code no longer opens anything, and is not counted.
        if right and card.state is CardState.ACTIVE:
            return ActivationResult(ActivationStatus.ALREADY_ACTIVE, card.id, card.masked, left)
        return ActivationResult(ActivationStatus.NOT_AWAITING, card.id, card.masked, left)
    if right:
        led.put_card(
            msgspec.structs.replace(
                card,
                state=CardState.ACTIVE,
                activated_ms=now_ms,
                campaign=msgspec.structs.replace(issue, wrong_codes=0),
            )
        )
        _audit_card(led, now_ms, actor, "activate_online", card, {})
        return ActivationResult(ActivationStatus.ACTIVATED, card.id, card.masked, max_wrong)
    wrong = issue.wrong_codes + 1
    locked = wrong >= max_wrong
    led.put_card(
        msgspec.structs.replace(
            card, campaign=msgspec.structs.replace(issue, wrong_codes=wrong, locked=locked)
        )
    )
    if locked:
        _audit_card(led, now_ms, actor, "activation_locked", card, {"wrong_codes": wrong})
        return ActivationResult(ActivationStatus.LOCKED, card.id, card.masked)
    return ActivationResult(
        ActivationStatus.WRONG_CODE, card.id, card.masked, max(max_wrong - wrong, 0)
    )


def unlock_activation(led: Ledger, card_id: int, actor: str, reason: str, now_ms: int) -> Card:
    """Lift a card's online-activation lock and forget its wrong codes (audited).

    Error handling: :class:`CampaignError` for an unknown card, a card without online
    activation, or a bad actor or reason.
    """
    _text("actor", actor, ACTOR_LEN_MAX)
    _text("reason", reason, REASON_LEN_MAX)
    card = led.card(card_id)
    if card is None:
        raise CampaignError(f"no card with id {card_id}")
    issue = card.campaign
    if issue is None or not issue.code_verifier:
        raise CampaignError(f"card {card_id} has no online activation to unlock")
    unlocked = msgspec.structs.replace(
        card, campaign=msgspec.structs.replace(issue, wrong_codes=0, locked=False)
    )
    led.put_card(unlocked)
    _audit_card(
        led,
        now_ms,
        actor,
        "unlock_activation",
        card,
        {"reason": reason, "wrong_codes": issue.wrong_codes, "was_locked": int(issue.locked)},
    )
    return unlocked


def _audit_card(
    led: Ledger,
    now_ms: int,
    actor: str,
    action: str,
    card: Card,
    detail: dict[str, str | int],
    request_id: str = "",
) -> int:
    entry = led.add_audit(
        at_ms=now_ms,
        actor=actor,
        action=action,
        target=f"card:{card.id}",
        detail={"card": card.masked, **detail},
        request_id=request_id,
    )
    return entry.seq


# -- clawback ----------------------------------------------------------------------------------


class ClawbackStatus(enum.StrEnum):
    """What a clawback request came to; the HTTP API's answers in brackets (:mod:`api.cards`)."""

    CLAWED_BACK = "clawed_back"  # moved now (200)
    REPLAYED = "replayed"  # this request id was done before: its outcome, nothing moved (200)
    CONFLICT = "conflict"  # this request id was used for another request (409)
    UNKNOWN_CARD = "unknown_card"  # (404)
    NOT_CAMPAIGN = "not_campaign"  # not a campaign card (409)
    NOT_ISSUED = "not_issued"  # no issue to claw back from: never issued, or voided (409)
    NOTHING_LEFT = "nothing_left"  # no unspent value (409)
    EXCEEDS = "exceeds"  # more than the unspent value was asked for (409)


@dataclass(frozen=True, slots=True)
class ClawbackResult:
    status: ClawbackStatus
    amount_minor: int = 0  # what was moved (on clawed_back and replayed)
    currency: str = ""
    available_minor: int = 0  # the unspent value before (refusals: now)
    transfer_seq: int = 0
    audit_seq: int = 0
    card_closed: bool = False


def _fingerprint(card_id: int, amount_minor: int | None) -> str:
    return f"card:{card_id}|amount:{'all' if amount_minor is None else amount_minor}"


def clawback(
    led: Ledger,
    card_id: int,
    amount_minor: int | None,
    reason: str,
    actor: str,
    now_ms: int,
    *,
    request_id: str,
) -> ClawbackResult:
    """Take unspent value of a campaign card back to the settlement account of the store that
    issued it (``amount_minor``, or all of it with None), in the caller's write transaction,
    exactly once per ``request_id``, audited.

    The transfer is ``card -> store:<issuing store>:<currency>``, op ``clawback``, naming the
    issue it claws back (``original_seq``): the issuing store's net moves back by the amount,
    so in the day's net settlement it is owed that much by the chain's campaign account (the
    mirror of its issue), and the clearing file carries it as a reversal record of the issue.
    Unspent means the available balance (the ledger balance less open holds). A card left
    with nothing (no balance, no hold) is closed: its campaign is over.

    Error handling: :class:`CampaignError` for a malformed amount, reason, actor or request id.
    """
    _text("request id", request_id, REQUEST_ID_LEN_MAX)
    _text("actor", actor, ACTOR_LEN_MAX)
    _text("reason", reason, REASON_LEN_MAX)
    if amount_minor is not None and amount_minor <= 0:
        raise CampaignError("the amount must be above zero (or all of the unspent value)")
    fingerprint = _fingerprint(card_id, amount_minor)
    done = led.idempotency(request_id)
    if done is not None:
        return _replayed(led, done, fingerprint)
    card = led.card(card_id)
    if card is None:
        return ClawbackResult(ClawbackStatus.UNKNOWN_CARD)
    product = led.product(card.product)
    assert product is not None, f"card {card.id} has no product"
    unit = product.currency
    if product.kind != KIND_CAMPAIGN:
        return ClawbackResult(ClawbackStatus.NOT_CAMPAIGN, currency=unit)
    issue = card.campaign
    if issue is None or card.state is CardState.ISSUED:
        return ClawbackResult(ClawbackStatus.NOT_ISSUED, currency=unit)
    purse = card_account(card.id)
    held = led.held(card.id)
    available = led.balance(purse) - held
    if available <= 0:
        return ClawbackResult(ClawbackStatus.NOTHING_LEFT, currency=unit, available_minor=0)
    amount = available if amount_minor is None else amount_minor
    if amount > available:
        return ClawbackResult(ClawbackStatus.EXCEEDS, currency=unit, available_minor=available)
    issued = led.transfer(issue.issue_seq)
    assert issued is not None and issued.op == "issue", f"card {card.id}: issue transfer missing"
    assert issued.store_id == issue.store_id, "the issue transfer names another store"
    transfer = led.post(
        Posting(purse, store_account(issue.store_id, unit), amount, unit),
        at_ms=now_ms,
        op=CLAWBACK_OP,
        card_id=card.id,
        terminal_id=issued.terminal_id,
        store_id=issue.store_id,
        stan=CLAWBACK_STAN,
        rrn="",
        approval="",
        original_seq=issued.seq,
    )
    closed = led.balance(purse) == 0 and held == 0
    if closed:
        led.put_card(msgspec.structs.replace(card, state=CardState.CLOSED))
    audit_seq = _audit_card(
        led,
        now_ms,
        actor,
        CLAWBACK_OP,
        card,
        {
            "amount_minor": amount,
            "currency": unit,
            "store": issue.store_id,
            "transfer_seq": transfer.seq,
            "issue_seq": issued.seq,
            "closed": int(closed),
            "reason": reason,
        },
        request_id,
    )
    led.put_idempotency(
        IdempotencyRecord(
            request_id=request_id,
            action=CLAWBACK_OP,
            fingerprint=fingerprint,
            audit_seq=audit_seq,
            at_ms=now_ms,
        )
    )
    return ClawbackResult(
        ClawbackStatus.CLAWED_BACK,
        amount_minor=amount,
        currency=unit,
        available_minor=available,
        transfer_seq=transfer.seq,
        audit_seq=audit_seq,
        card_closed=closed,
    )


def _replayed(led: Ledger, done: IdempotencyRecord, fingerprint: str) -> ClawbackResult:
    if done.action != CLAWBACK_OP or done.fingerprint != fingerprint:
        return ClawbackResult(ClawbackStatus.CONFLICT)
    entry = led.audit_entry(done.audit_seq)
    assert entry is not None, f"request {done.request_id}: audit entry {done.audit_seq} missing"
    d = entry.detail
    return ClawbackResult(
        ClawbackStatus.REPLAYED,
        amount_minor=int(d["amount_minor"]),
        currency=str(d["currency"]),
        transfer_seq=int(d["transfer_seq"]),
        audit_seq=entry.seq,
        card_closed=bool(int(d["closed"])),
    )
