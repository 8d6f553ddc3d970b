"""The web shop's endpoint (role store): ``POST /v1/shop/loads`` sells a gift card with its
first value (``activate``) or loads one (``load``), paid online.

A load is a terminal's request in all but transport: the handler builds the 0200 a terminal
of the key's store would send (processing code 72 or 21) and the host's processor decides it
inside a writer job (:meth:`authsrv.processor.Processor.decide_in`), with the engine's rules:
the product's limits, the card's state, scopes, currency. So the web shop needs a terminal of
its own store (``terminal_id``: active, no sign-on), added like any other
(``POST /v1/terminals``, ``authsrv terminals add``); its security profile does not matter
here (the API key authenticates the request, not a MAC).

Exactly once, per store and ``payment_ref`` (the shop's payment reference), as the importer
does it for file records (:mod:`settlement.imports`):

- the duplicate key is ``shop|<store>|<payment_ref>`` (a terminal's key cannot take that
  shape) and the content MAC covers the card number, operation, amount, currency and terminal
  under a domain of its own; the processor stores both with the postings (DESIGN §5);
- the decision is also kept for good in the ``idempotency`` database (the duplicate records
  are pruned after ``store.dup_window_s``), pointing to its audit entry (action
  ``shop_load``), in the same transaction. The same reference with the same body answers what
  the first request was answered (``replayed: true``, nothing moves); with another body 409.
  A decision the processor does not remember (03, 30, 91, 94: nothing changed) keeps nothing,
  and the request may be sent again.

Answers: 200 approved; 404 no card with that number (or a bad check digit); 409 the
terminal is not the store's or not usable, the store is inactive (03), or the reference was
used for another request; 422 a decline, with the response code (``rc``) and its reason; 503
the store is full (91). Card numbers appear masked only
(answers, logs, audit); the store keeps keyed MACs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from api.errors import ApiError, conflict, invalid, not_found
from api.routing import Call, Reply
from api.schemas import ShopLoadAnswer, ShopLoadRequest
from authsrv.model import IdempotencyRecord, Terminal
from authsrv.processor import NOT_REMEMBERED, Pending
from authsrv.store import Ledger
from protocol.cards import luhn_valid, mask_pan
from protocol.errors import FormatError
from protocol.messages import Request, parse_request
from settlement.imports import RC_TEXT

__all__ = ["SHOP_ACTION", "request_key", "shop_load"]

SHOP_ACTION = "shop_load"
DUP_KEY_PREFIX = "shop|"
# Kept apart from a terminal's and an import's content, which are MACed with the same key.
CONTENT_DOMAIN = b"authsrv-shop\x1f"
MTI = "0200"
PROCESSING_CODES = {"activate": "720000", "load": "210000"}
STAN_MODULUS = 1_000_000  # field 11 is n6: the shop's own counter, modulo
ENDPOINT = "POST /v1/shop/loads"
# A decision by response code, as an HTTP status (other codes: 422, a decline).
_STATUS = {"00": 200, "14": 404, "03": 409, "94": 409, "91": 503}


def request_key(store_id: str, payment_ref: str) -> str:
    """The duplicate key and request id of a shop load.

    >>> request_key("W0001", "pay-2026-11-22-0042")
    'shop|W0001|pay-2026-11-22-0042'
    """
    assert "|" not in store_id and "|" not in payment_ref
    return f"{DUP_KEY_PREFIX}{store_id}|{payment_ref}"


@dataclass(frozen=True, slots=True)
class _Decided:
    """A shop load's decision, from the processor or (a replay) from its audit entry."""

    rc: str
    field44: str = ""
    card: str = ""  # masked
    amount_minor: int = 0
    currency: str = ""
    balance_minor: int = 0
    available_minor: int = 0
    expiry: str = ""
    rrn: str = ""
    approval: str = ""
    transfer_seq: int = 0
    replayed: bool = False


def _content(body: ShopLoadRequest) -> bytes:
    parts = (body.card_number, body.operation, str(body.amount_minor), body.currency)
    return CONTENT_DOMAIN + "\x1f".join((*parts, body.terminal_id)).encode("ascii")


def _request(body: ShopLoadRequest, store_id: str, stan: int, now_ms: int) -> Request:
    """The 0200 a terminal of the store would send. Field 7 is now (the request is sent now);
    fields 12 and 13, the local time, are UTC: a web shop has no till clock.

    Error handling: :class:`FormatError` naming the dialect's field.
    """
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return parse_request(
        {
            "t": MTI,
            "2": body.card_number,
            "3": PROCESSING_CODES[body.operation],
            "4": f"{body.amount_minor:012d}",
            "7": now.strftime("%m%d%H%M%S"),
            "11": f"{stan % STAN_MODULUS:06d}",
            "12": now.strftime("%H%M%S"),
            "13": now.strftime("%m%d"),
            "41": body.terminal_id,
            "42": f"{store_id:<15}",
            "49": body.currency,
        }
    )


def _usable(terminal: Terminal | None, terminal_id: str, store_id: str) -> None:
    if terminal is None or terminal.store_id != store_id:
        raise conflict(
            f"store {store_id} has no terminal {terminal_id}: add the web shop's terminal "
            "(POST /v1/terminals) and name it in terminal_id",
            "terminal_id",
        )
    if not terminal.active:
        raise conflict(f"terminal {terminal_id} is inactive", "terminal_id")
    if terminal.signon_required and not terminal.signed_on:
        raise conflict(
            f"terminal {terminal_id} requires a sign-on; the web shop's terminal must not",
            "terminal_id",
        )


async def shop_load(call: Call) -> Reply:
    ctx = call.ctx
    body: ShopLoadRequest = call.body
    store_id = call.key.store_id
    assert store_id, "a store key names its store"
    key = request_key(store_id, body.payment_ref)
    content = ctx.keys.content_mac(_content(body))
    fingerprint = content.hex()
    hashes = ctx.keys.pan_hashes(body.card_number) if luhn_valid(body.card_number) else []
    masked = mask_pan(body.card_number)
    processor = ctx.processor

    def job(led: Ledger) -> _Decided:
        done = led.idempotency(key)
        if done is not None:
            return _replay(led, done, fingerprint, body.payment_ref)
        _usable(led.terminal(body.terminal_id), body.terminal_id, store_id)
        now_ms = processor.clock_ms()
        try:
            request = _request(body, store_id, led.next_seq("shop_stan"), now_ms)
        except FormatError as exc:
            raise invalid(f"the request cannot be made: {exc}") from None
        pending = Pending(
            time.perf_counter_ns(),
            MTI,
            request=request,
            pan_hashes=hashes,
            dup_key=key.encode("ascii"),
            content=content,
        )
        outcome = processor.decide_in(led, pending, now_ms)
        d = outcome.decision
        if d.rc in NOT_REMEMBERED:
            return _Decided(d.rc, d.field44 or "")  # nothing changed, nothing kept
        record = led.dupe(key.encode("ascii"))
        assert record is not None and record.rc == d.rc, "the decision was not recorded"
        decided = _Decided(
            rc=d.rc,
            card=record.card_masked or masked,
            amount_minor=record.approved_minor or 0,
            currency=record.currency or body.currency,
            balance_minor=record.ledger_after_minor or 0,
            available_minor=record.available_after_minor or 0,
            expiry=record.card_expiry,
            rrn=record.rrn,
            approval=record.approval,
            transfer_seq=record.transfer_seq,
            replayed=outcome.replayed,
        )
        if outcome.replayed:
            # The processor's duplicate record without our own: not made by this module,
            # which writes both in one transaction. Answer it; keep nothing more.
            return decided
        entry = led.add_audit(
            at_ms=now_ms,
            actor=call.actor,
            action=SHOP_ACTION,
            target=f"card:{record.card_id}" if record.card_id else f"store:{store_id}",
            detail={
                "endpoint": ENDPOINT,
                "store": store_id,
                "terminal": body.terminal_id,
                "operation": body.operation,
                "card": decided.card,
                "requested_minor": body.amount_minor,
                "rc": decided.rc,
                "amount_minor": decided.amount_minor,
                "currency": decided.currency,
                "balance_minor": decided.balance_minor,
                "available_minor": decided.available_minor,
                "expiry": decided.expiry,
                "rrn": decided.rrn,
                "approval": decided.approval,
                "transfer_seq": decided.transfer_seq,
            },
            request_id=body.payment_ref,
        )
        led.put_idempotency(
            IdempotencyRecord(
                request_id=key,
                action=SHOP_ACTION,
                fingerprint=fingerprint,
                audit_seq=entry.seq,
                at_ms=now_ms,
            )
        )
        return decided

    decided = await ctx.writer.write(job)
    ctx.log.info(
        "shop_load",
        store=store_id,
        terminal=body.terminal_id,
        operation=body.operation,
        rc=decided.rc,
        card=masked,
        amount_minor=body.amount_minor,
        payment_ref=body.payment_ref,
        replayed=decided.replayed,
    )
    status = _STATUS.get(decided.rc, 422)
    if status != 200:
        raise _refusal(decided, status, body.payment_ref)
    return Reply(
        200,
        ShopLoadAnswer(
            payment_ref=body.payment_ref,
            operation=body.operation,
            store_id=store_id,
            terminal_id=body.terminal_id,
            card=decided.card,
            rc=decided.rc,
            amount_minor=decided.amount_minor,
            currency=decided.currency,
            balance_minor=decided.balance_minor,
            available_minor=decided.available_minor,
            expiry=decided.expiry,
            rrn=decided.rrn,
            approval_code=decided.approval,
            transfer_seq=decided.transfer_seq,
            replayed=decided.replayed,
        ),
    )


def _replay(led: Ledger, done: IdempotencyRecord, fingerprint: str, ref: str) -> _Decided:
    """The first answer to this payment reference again (nothing moves), or 409 when the
    reference was used for another request."""
    if done.action != SHOP_ACTION or done.fingerprint != fingerprint:
        raise _used_before(ref)
    entry = led.audit_entry(done.audit_seq)
    assert entry is not None, f"request {done.request_id}: audit entry {done.audit_seq} missing"
    d = entry.detail
    return _Decided(
        rc=str(d["rc"]),
        card=str(d["card"]),
        amount_minor=int(d["amount_minor"]),
        currency=str(d["currency"]),
        balance_minor=int(d["balance_minor"]),
        available_minor=int(d["available_minor"]),
        expiry=str(d["expiry"]),
        rrn=str(d["rrn"]),
        approval=str(d["approval"]),
        transfer_seq=int(d["transfer_seq"]),
        replayed=True,
    )


def _used_before(ref: str) -> ApiError:
    return conflict(
        f"payment_ref {ref} was used for another request (another card, operation, amount, "
        "currency or terminal); nothing changed",
        "payment_ref",
    )


def _refusal(decided: _Decided, status: int, ref: str) -> ApiError:
    rc = decided.rc
    if status == 404:
        return not_found("no card with that number")
    if rc == "94":
        return _used_before(ref)
    if rc == "03":
        return conflict("the store or its terminal is inactive (03)", "terminal_id")
    if status == 503:
        return ApiError(
            503,
            "unavailable",
            f"the host could not decide ({rc}: the store is full); nothing changed",
            headers={"Retry-After": "1"},
        )
    if rc == "30":
        return invalid(f"format error in field {decided.field44}")
    return ApiError(422, "declined", f"{rc} {RC_TEXT.get(rc, 'declined')}", rc=rc)
