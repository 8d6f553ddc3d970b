"""The card holder's endpoints (role selfservice), rate-limited per client and per card.

``POST /v1/self/card`` shows a card to whoever gives its number and the mobile recorded at its
activation, or the card token issued to its holder. Every way of not matching (no such card,
no holder record, another mobile, a wrong or old token) answers the same 404 with the same
message, so that the answer is no oracle for which card numbers exist; the per-card bucket is
taken for unknown numbers too.

``POST /v1/self/activate`` activates a campaign card online with the code on its issue
receipt (:func:`authsrv.campaign.activate_online`), records its holder and issues the holder a
card token, in one writer job. Before anything is looked up: the per-client bucket (in
:mod:`api.app`, before the body is read), the body and the holder's data (so that the answer
to bad data never depends on the card or the code), then the per-card bucket. After that:

=========================================================  ======  =========================
what                                                       status  counted on the card
=========================================================  ======  =========================
the right code, card awaiting activation                   200     (the count is reset)
no such number, bad check digit, not a campaign card       404     no (one body for all)
a wrong code (also one that cannot be a code)              422     yes: ``tries_left`` more
the ``campaign.activation_tries_max``-th wrong code, and   423     the lock is in the card
every attempt after it (right or wrong)                            record: it survives a restart
not awaiting activation (already active, blocked, ...)     409     no (one body, whatever the
                                                                   code: no oracle there)
the card or its value has expired                          409     no
=========================================================  ======  =========================

``tries_left`` tells nothing about which numbers exist: only a campaign card awaiting
activation gets it, and every other number answers the same 404. It tells the holder who
mistyped how careful to be; a guesser knows it anyway by counting.
"""

from __future__ import annotations

from dataclasses import dataclass

from api import schemas
from api.app import rate_limit
from api.errors import ApiError, conflict, invalid, not_found
from api.holders import (
    TAG_LEN_MAX,
    TAGS_MAX,
    HolderError,
    card_of_token,
    check_holder,
    holder_by_token,
    issue_card_token,
    mobile_matches,
    put_holder,
)
from api.routing import Call, Reply
from api.schemas import ActivationAnswer, ActivationRequest, SelfCardRequest
from api.views import self_card
from authsrv.campaign import ActivationResult, ActivationStatus, activate_online
from authsrv.model import Card
from authsrv.store import Ledger
from protocol.cards import luhn_valid

__all__ = ["activate", "card_for_holder"]

NO_MATCH = "no card matches what was given"
NO_CAMPAIGN_CARD = "no campaign card with that number awaits online activation"
NOT_AWAITING = (
    "the card does not await online activation (it was activated already, or it is blocked "
    "or closed); a holder sees an active card with POST /v1/self/card"
)
EXPIRED = "the card or its campaign value has expired"
LOCKED = (
    "online activation of this card is locked after too many wrong codes; customer service "
    "can unlock it"
)
assert schemas.TAG_LEN_MAX == TAG_LEN_MAX and schemas.INTERESTS_MAX <= TAGS_MAX


async def card_for_holder(call: Call) -> Reply:
    ctx = call.ctx
    body: SelfCardRequest = call.body
    card: Card | None = None
    if body.token is not None:
        if body.card_number is not None or body.mobile is not None:
            raise invalid("give either card_number and mobile, or token", "token")
        card_id = card_of_token(body.token)
        rate_limit(ctx, ctx.card_buckets, f"t{card_id or 0}".encode(), "card")
        with ctx.store.read() as led:
            holder = holder_by_token(led, body.token)
            card = led.card(holder.card_id) if holder is not None else None
            view = self_card(led, card, ctx.cfg.api.history_rows_max) if card else None
    else:
        if body.card_number is None:
            raise invalid("give card_number and mobile, or token", "card_number")
        if body.mobile is None:
            raise invalid("give mobile with card_number", "mobile")
        hashes = ctx.keys.pan_hashes(body.card_number)
        rate_limit(ctx, ctx.card_buckets, b"n" + hashes[0], "card")
        with ctx.store.read() as led:
            card = led.card_by_hashes(hashes)
            holder = led.holder(card.id) if card is not None else None
            matched = holder is not None and mobile_matches(holder, body.mobile)
            view = self_card(led, card, ctx.cfg.api.history_rows_max) if matched and card else None
    if view is None:
        raise not_found(NO_MATCH)
    return Reply(200, view)


@dataclass(frozen=True, slots=True)
class _Activated:
    result: ActivationResult
    answer: ActivationAnswer | None = None  # on ACTIVATED only


async def activate(call: Call) -> Reply:
    ctx = call.ctx
    body: ActivationRequest = call.body
    if not body.consents.terms:
        raise invalid("consents.terms must be true: the programme's terms are accepted", "consents")
    consents = ("terms", "marketing") if body.consents.marketing else ("terms",)
    try:
        holder = check_holder(
            mobile=body.mobile,
            email=body.email or "",
            consents=consents,
            interests=tuple(body.interests),
        )
    except HolderError as exc:
        raise invalid(str(exc), exc.field) from None
    # The card's bucket, keyed by the number's keyed hash, before anything is looked up: an
    # unknown number takes from its bucket like a known one.
    rate_limit(ctx, ctx.card_buckets, b"n" + ctx.keys.pan_hashes(body.card_number)[0], "card")
    if not luhn_valid(body.card_number):
        raise not_found(NO_CAMPAIGN_CARD)
    now_ms = ctx.clock_ms()
    tries_max = ctx.cfg.campaign.activation_tries_max
    history_rows = ctx.cfg.api.history_rows_max

    def job(led: Ledger) -> _Activated:
        result = activate_online(
            led,
            ctx.keys,
            body.card_number,
            body.activation_code,
            now_ms,
            tries_max,
            actor=call.actor,
        )
        if result.status is not ActivationStatus.ACTIVATED:
            return _Activated(result)  # a wrong code's count commits with this job
        put_holder(
            led,
            result.card_id,
            mobile=holder.mobile,
            email=holder.email,
            consents=holder.consents,
            interests=holder.interests,
            now_ms=now_ms,
        )
        token = issue_card_token(led, result.card_id, now_ms=now_ms)
        card = led.card(result.card_id)
        assert card is not None, "the activated card is gone"
        view = self_card(led, card, history_rows)
        answer = ActivationAnswer(
            token=token,
            card=view.card,
            state=view.state,
            currency=view.currency,
            balance_minor=view.balance_minor,
            available_minor=view.available_minor,
            expiry=view.expiry,
            value_expiry=view.value_expiry,
        )
        return _Activated(result, answer)

    done = await ctx.writer.write(job)
    result = done.result
    ctx.log.info(
        "online_activation",
        status=result.status.value,
        card=result.card_masked or None,
        tries_left=result.tries_left if result.status is ActivationStatus.WRONG_CODE else None,
    )
    if done.answer is not None:
        return Reply(200, done.answer)
    raise _refusal(result)


def _refusal(result: ActivationResult) -> ApiError:
    s = ActivationStatus
    match result.status:
        case s.UNKNOWN_CARD | s.NOT_CAMPAIGN:
            return not_found(NO_CAMPAIGN_CARD)
        case s.WRONG_CODE:
            left = result.tries_left
            return ApiError(
                422,
                "wrong_code",
                f"the activation code is wrong; {left} more wrong code(s) lock online activation",
                field="activation_code",
                tries_left=left,
            )
        case s.LOCKED:
            return ApiError(423, "locked", LOCKED)
        case s.ALREADY_ACTIVE | s.NOT_AWAITING:
            return conflict(NOT_AWAITING)
        case s.EXPIRED:
            return conflict(EXPIRED)
    raise AssertionError(f"activation status {result.status} has no answer")
