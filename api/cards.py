"""Back-office card endpoints: a card's detail and history, state changes, expiry changes,
issue batches. Every change runs as one writer job with its audit entry in the same
transaction; a change to what the card already is answers ``changed: false`` and writes
nothing.

State changes (each audited with the state before and after):

========  ===========================================================  ==========
action    from                                                         to
========  ===========================================================  ==========
block     active                                                       blocked
unblock   blocked                                                      active
lost      issued, active, awaiting_activation, blocked                 lost
stolen    issued, active, awaiting_activation, blocked                 stolen
close     any state but closed, with nothing on the card (no balance,  closed
          no open hold)
========  ===========================================================  ==========

At a terminal a blocked or closed card answers 62, a lost one 41, a stolen one 43.

A clawback (:func:`authsrv.campaign.clawback`) takes a campaign card's unspent value back to
the store that issued it, exactly once per request id, audited in its own transaction.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from api.errors import ApiError, conflict, invalid, not_found
from api.routing import Call, Reply
from api.schemas import (
    CardChanged,
    CardStateChange,
    ClawbackAnswer,
    ClawbackRequest,
    ExpiryChange,
    IssueAnswer,
    IssueRequest,
)
from api.views import card_detail
from authsrv.admin import AdminError, issue_cards_into
from authsrv.campaign import CampaignError, ClawbackResult, ClawbackStatus, clawback
from authsrv.model import Card, CardState, card_account
from authsrv.store import Ledger

__all__ = ["TRANSITIONS", "change_expiry", "change_state", "claw_back", "get_card", "issue"]

S = CardState
_LIVE = frozenset({S.ISSUED, S.ACTIVE, S.AWAITING_ACTIVATION, S.BLOCKED})
TRANSITIONS: dict[str, tuple[frozenset[CardState], CardState]] = {
    "block": (frozenset({S.ACTIVE}), S.BLOCKED),
    "unblock": (frozenset({S.BLOCKED}), S.ACTIVE),
    "lost": (_LIVE, S.LOST),
    "stolen": (_LIVE, S.STOLEN),
    "close": (frozenset(S) - {S.CLOSED}, S.CLOSED),
}
_NO_EXPIRY_CHANGE = frozenset({S.CLOSED, S.EXPIRED})


def _ascii(text: str, field: str) -> None:
    if not (text.isascii() and text.isprintable()):
        raise invalid(f"{field} must be printable ASCII", field)


def _card(led: Ledger, card_id: int) -> Card:
    card = led.card(card_id)
    if card is None:
        raise not_found(f"no card {card_id}")
    return card


async def get_card(call: Call) -> Reply:
    ctx = call.ctx
    with ctx.store.read() as led:
        card = _card(led, call.params["card_id"])
        detail = card_detail(led, card, ctx.cfg.api.history_rows_max, ctx.clock_ms())
    return Reply(200, detail)


def _changed(card: Card, audit_seq: int | None) -> CardChanged:
    return CardChanged(
        id=card.id,
        card=card.masked,
        state=card.state.value,
        expiry=card.expiry,
        changed=audit_seq is not None,
        audit_seq=audit_seq,
    )


async def change_state(call: Call) -> Reply:
    body: CardStateChange = call.body
    _ascii(body.reason, "reason")
    card_id: int = call.params["card_id"]
    allowed, target = TRANSITIONS[body.action]
    now_ms = call.ctx.clock_ms()

    def job(led: Ledger) -> CardChanged:
        card = _card(led, card_id)
        if card.state is target:
            return _changed(card, None)
        if card.state not in allowed:
            froms = ", ".join(sorted(s.value for s in allowed))
            raise conflict(f"a card that is {card.state.value} cannot {body.action} (from {froms})")
        if target is S.CLOSED:
            balance, held = led.balance(card_account(card.id)), led.held(card.id)
            if balance or held:
                raise conflict(
                    f"the card holds {balance} (minor units) with {held} held; only a card with "
                    "nothing on it is closed"
                )
        new = msgspec.structs.replace(card, state=target)
        led.put_card(new)
        entry = led.add_audit(
            at_ms=now_ms,
            actor=call.actor,
            action=f"card_{body.action}",
            target=f"card:{card.id}",
            detail={
                "endpoint": "POST /v1/cards/{card_id}/state",
                "card": card.masked,
                "before": card.state.value,
                "after": target.value,
                "reason": body.reason,
            },
        )
        return _changed(new, entry.seq)

    return Reply(200, await call.ctx.writer.write(job))


async def change_expiry(call: Call) -> Reply:
    body: ExpiryChange = call.body
    _ascii(body.reason, "reason")
    card_id: int = call.params["card_id"]
    now_ms = call.ctx.clock_ms()

    def job(led: Ledger) -> CardChanged:
        card = _card(led, card_id)
        if card.expiry == body.expiry:
            return _changed(card, None)
        if card.state in _NO_EXPIRY_CHANGE:
            raise conflict(f"a card that is {card.state.value} keeps its expiry")
        new = msgspec.structs.replace(card, expiry=body.expiry)
        led.put_card(new)
        entry = led.add_audit(
            at_ms=now_ms,
            actor=call.actor,
            action="card_expiry",
            target=f"card:{card.id}",
            detail={
                "endpoint": "POST /v1/cards/{card_id}/expiry",
                "card": card.masked,
                "before": card.expiry,
                "after": body.expiry,
                "reason": body.reason,
            },
        )
        return _changed(new, entry.seq)

    return Reply(200, await call.ctx.writer.write(job))


async def issue(call: Call) -> Reply:
    """Cards written to a new file (0600) in the issue directory in the same writer job that
    creates them; the file is removed when the job does not commit. The answer names the file
    and the card ids, never a card number."""
    ctx = call.ctx
    body: IssueRequest = call.body
    limit = ctx.cfg.api.issue_count_max
    if body.count > limit:
        raise invalid(f"count is above api.issue_count_max ({limit})", "count")
    now_ms = ctx.clock_ms()
    stamp = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = ctx.issue_dir
    path = directory / f"cards-{body.product}-{stamp}-{secrets.token_hex(4)}.csv"
    created: list[Path] = []

    def job(led: Ledger) -> IssueAnswer:
        if led.product(body.product) is None:
            raise not_found(f"no product {body.product}")
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ApiError(
                500, "file_error", f"cannot write a card file in {directory}: {exc.strerror}"
            ) from None
        created.append(path)
        with os.fdopen(fd, "w", newline="") as fh:
            try:
                ids = issue_cards_into(
                    led, ctx.keys, body.product, body.count, fh, now_ms=now_ms, expiry=body.expiry
                )
            except AdminError as exc:
                raise conflict(str(exc)) from None
            fh.flush()
            os.fsync(fh.fileno())  # the numbers are on disk before the cards exist
        first = led.card(ids[0])
        assert first is not None
        entry = led.add_audit(
            at_ms=now_ms,
            actor=call.actor,
            action="cards_issue",
            target=f"product:{body.product}",
            detail={
                "endpoint": "POST /v1/cards/issue",
                "count": len(ids),
                "first_id": ids[0],
                "last_id": ids[-1],
                "expiry": first.expiry,
                "file": str(path),
            },
        )
        return IssueAnswer(
            product=body.product,
            count=len(ids),
            ids=ids,
            expiry=first.expiry,
            file=str(path),
            audit_seq=entry.seq,
        )

    try:
        answer = await ctx.writer.write(job)
    except BaseException:
        for made in created:
            made.unlink(missing_ok=True)
        raise
    ctx.log.info("cards_issued", product=body.product, count=answer.count, file=answer.file)
    return Reply(201, answer)


# What a clawback that moved nothing answers (409: the card's state does not allow it).
_CLAWBACK_CONFLICTS = {
    ClawbackStatus.CONFLICT: "request_id {rid} was used for another clawback; nothing moved",
    ClawbackStatus.NOT_CAMPAIGN: "card {card} is not a campaign card",
    ClawbackStatus.NOT_ISSUED: "card {card} holds no issued campaign value (never issued, voided)",
    ClawbackStatus.NOTHING_LEFT: "card {card} has no unspent value left",
    ClawbackStatus.EXCEEDS: "card {card} has only {available} (minor units) unspent",
}


async def claw_back(call: Call) -> Reply:
    """Exactly once per request id: the same id again answers the first outcome (replayed)
    and moves nothing; refusals keep nothing and may be sent again."""
    ctx = call.ctx
    body: ClawbackRequest = call.body
    _ascii(body.reason, "reason")
    card_id: int = call.params["card_id"]
    amount = None if body.amount_minor == "all" else body.amount_minor
    now_ms = ctx.clock_ms()

    def job(led: Ledger) -> tuple[ClawbackResult, Card | None]:
        try:
            result = clawback(
                led, card_id, amount, body.reason, call.actor, now_ms, request_id=body.request_id
            )
        except CampaignError as exc:
            raise invalid(str(exc)) from None
        return result, led.card(card_id)

    result, card = await ctx.writer.write(job)
    if result.status is ClawbackStatus.UNKNOWN_CARD or card is None:
        raise not_found(f"no card {card_id}")
    if result.status not in (ClawbackStatus.CLAWED_BACK, ClawbackStatus.REPLAYED):
        text = _CLAWBACK_CONFLICTS[result.status].format(
            rid=body.request_id, card=card_id, available=result.available_minor
        )
        raise conflict(text, "request_id" if result.status is ClawbackStatus.CONFLICT else None)
    issue = card.campaign
    ctx.log.info(
        "clawback",
        card_id=card_id,
        card=card.masked,
        amount_minor=result.amount_minor,
        replayed=result.status is ClawbackStatus.REPLAYED,
    )
    return Reply(
        200,
        ClawbackAnswer(
            card_id=card.id,
            card=card.masked,
            state=card.state.value,
            request_id=body.request_id,
            amount_minor=result.amount_minor,
            currency=result.currency,
            store_id=issue.store_id if issue is not None else "",
            transfer_seq=result.transfer_seq,
            audit_seq=result.audit_seq,
            card_closed=result.card_closed,
            replayed=result.status is ClawbackStatus.REPLAYED,
        ),
    )
