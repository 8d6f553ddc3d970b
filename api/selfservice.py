"""The card holder's endpoints (role selfservice), rate-limited per client and per card.

``POST /v1/self/card`` shows a card to whoever gives its number and the mobile recorded at its
activation, or the card token issued to its holder. Every way of not matching (no such card,
no holder record, another mobile, a wrong or old token) answers the same 404 with the same
message, so that the answer is no oracle for which card numbers exist; the per-card bucket is
taken for unknown numbers too.
"""

from __future__ import annotations

from api.app import rate_limit
from api.errors import invalid, not_found
from api.holders import card_of_token, holder_by_token, mobile_matches
from api.routing import Call, Reply
from api.schemas import SelfCardRequest
from api.views import self_card
from authsrv.model import Card

__all__ = ["card_for_holder"]

NO_MATCH = "no card matches what was given"


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
