"""The engine: a pure decision ``(request, context) -> decision`` (DESIGN §2).

No I/O, no clock (``now_ms`` is an input), no globals. The store loads the context inside the
write transaction, so a decision sees every earlier request of the same batch; the store then
applies the decision's postings and state change. Every business rule of the gift-card host
lives here and is tested without sockets or LMDB.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

from authsrv.model import (
    PURSE_MONEY,
    Card,
    CardState,
    Posting,
    Product,
    Store,
    Terminal,
    card_account,
    store_account,
)
from protocol.cards import luhn_valid
from protocol.messages import Request

__all__ = ["CardContext", "Context", "Decision", "decide", "operation_of"]

# (MTI class, transaction type) -> operation. Anything else is answered 12.
OPERATIONS: dict[tuple[str, str], str] = {
    ("0100", "30"): "balance",
    ("0100", "31"): "balance",
    ("0200", "00"): "redeem",
    ("0200", "01"): "cashout",
    ("0200", "20"): "refund",
    ("0200", "21"): "load",
    ("0200", "30"): "balance",
    ("0200", "31"): "balance",
    ("0200", "72"): "activate",
}
NETWORK_CODES: dict[str, str] = {"001": "signon", "002": "signoff", "301": "echo"}
MONEY_ACCOUNT_TYPES = frozenset({"00", PURSE_MONEY})
# Declines by card state (the state decides before any amount rule).
STATE_RC: dict[CardState, str] = {
    CardState.BLOCKED: "62",
    CardState.CLOSED: "62",
    CardState.LOST: "41",
    CardState.STOLEN: "43",
    CardState.EXPIRED: "54",
    CardState.AWAITING_ACTIVATION: "78",
    CardState.ISSUED: "78",
}


@dataclass(frozen=True, slots=True)
class CardContext:
    card: Card
    product: Product
    ledger_minor: int
    held_minor: int

    @property
    def available_minor(self) -> int:
        return self.ledger_minor - self.held_minor


@dataclass(frozen=True, slots=True)
class Context:
    """What the engine may know about a request, read in the write transaction."""

    now_ms: int
    skew_ms_max: int
    terminal: Terminal | None
    store: Store | None
    card: CardContext | None


@dataclass(frozen=True, slots=True)
class Decision:
    rc: str
    op: str
    approved_minor: int | None = None
    postings: tuple[Posting, ...] = ()
    card_state: CardState | None = None  # the card's new state, when it changes
    terminal_signed_on: bool | None = None  # the terminal's new sign-on state
    ledger_after_minor: int | None = None
    available_after_minor: int | None = None

    @property
    def approved(self) -> bool:
        return self.rc in ("00", "10")


def operation_of(req: Request) -> str | None:
    if not req.supported:
        return None
    if req.mti_class == "0800":
        return NETWORK_CODES.get(req.network_code or "")
    return OPERATIONS.get((req.mti_class, req.tx_type or ""))


def card_expired(expiry_yymm: str, now_ms: int) -> bool:
    """A card is valid through the last day of its expiry month (UTC).

    >>> card_expired("2611", 1795000000000)  # 2026-11-18
    False
    >>> card_expired("2610", 1795000000000)
    True
    """
    year, month = 2000 + int(expiry_yymm[:2]), int(expiry_yymm[2:])
    last_day = calendar.monthrange(year, month)[1]
    end = datetime(year, month, last_day, 23, 59, 59, 999000, tzinfo=UTC)
    return now_ms > int(end.timestamp() * 1000)


def decide(req: Request, ctx: Context) -> Decision:
    op = operation_of(req) or "unsupported"
    terminal = ctx.terminal
    if terminal is None or not terminal.active:
        return Decision("03", op)
    if op == "unsupported":
        return Decision("12", op)
    if req.mti_class == "0800":
        return _decide_network(op, terminal)
    if ctx.store is None or not ctx.store.active or terminal.store_id != req.store_id:
        return Decision("03", op)
    if terminal.signon_required and not terminal.signed_on:
        return Decision("91", op)
    if req.mti_class in ("0100", "0200"):
        sent_ms = int(req.transmission_at(_dt(ctx.now_ms)).timestamp() * 1000)
        if abs(sent_ms - ctx.now_ms) > ctx.skew_ms_max:
            return Decision("12", op)
    if req.from_account not in MONEY_ACCOUNT_TYPES:
        return Decision("12", op)
    if req.pan is None:
        return Decision("12", op)  # aliases are not served by the gift-card host
    if not luhn_valid(req.pan) or ctx.card is None:
        return Decision("14", op)
    return _decide_card(req, op, ctx.store, ctx.card, ctx.now_ms)


def _dt(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, tz=UTC)


def _decide_network(op: str, terminal: Terminal) -> Decision:
    if op == "signon":
        return Decision("00", op, terminal_signed_on=True)
    if op == "signoff":
        return Decision("00", op, terminal_signed_on=False)
    if op == "echo":
        return Decision("00", op)
    return Decision("12", op)


def _decide_card(req: Request, op: str, store: Store, cc: CardContext, now_ms: int) -> Decision:
    card, product = cc.card, cc.product
    if product.chain != store.chain:
        return Decision("58", op)
    if req.currency is not None and req.currency != product.currency:
        return Decision("12", op)
    if card.state is not CardState.ACTIVE and not (
        op == "activate" and card.state is CardState.ISSUED
    ):
        return Decision(STATE_RC.get(card.state, "05"), op)
    if card_expired(card.expiry, now_ms) or (req.expiry is not None and req.expiry != card.expiry):
        return Decision("54", op)
    amount = req.amount_minor or 0
    if op == "balance":
        return _approve(op, cc, 0, 0, None)
    if op == "redeem":
        return _redeem(req, op, store, cc, amount)
    if op == "cashout":
        if not product.cashout or cc.held_minor or cc.ledger_minor < 0:
            return Decision("57", op)
        paid = cc.ledger_minor
        postings = _debit_card(card, store, product, paid)
        return _approve(op, cc, -paid, paid, CardState.CLOSED, postings)
    if op == "activate":
        return _activate(op, store, cc, amount)
    if op == "load" and not product.reloadable:
        return Decision("57", op)
    if op in ("load", "refund"):
        if amount == 0 or (op == "load" and amount < product.load_min_minor):
            return Decision("13", op)
        if op == "load" and amount > product.load_max_minor:
            return Decision("61", op)
        if cc.ledger_minor + amount > product.balance_max_minor:
            return Decision("61", op)
        return _approve(op, cc, amount, amount, None, _credit_card(card, store, product, amount))
    raise AssertionError(f"operation {op} has no rule")


def _redeem(req: Request, op: str, store: Store, cc: CardContext, amount: int) -> Decision:
    product = cc.product
    if amount == 0 or amount < product.redeem_min_minor:
        return Decision("13", op)
    available = cc.available_minor
    if available >= amount:
        approved, rc = amount, "00"
    elif req.partial_ok and available > 0:
        approved, rc = available, "10"
    else:
        return Decision(
            "51", op, ledger_after_minor=cc.ledger_minor, available_after_minor=available
        )
    postings = _debit_card(cc.card, store, product, approved)
    return _approve(op, cc, -approved, approved, None, postings, rc)


def _activate(op: str, store: Store, cc: CardContext, amount: int) -> Decision:
    product = cc.product
    if cc.card.state is not CardState.ISSUED:
        return Decision("57", op)
    if product.fixed_value_minor:
        if amount not in (0, product.fixed_value_minor):
            return Decision("13", op)
        amount = product.fixed_value_minor
    elif amount < product.load_min_minor:
        return Decision("13", op)
    elif amount > product.load_max_minor or amount > product.balance_max_minor:
        return Decision("61", op)
    postings = _credit_card(cc.card, store, product, amount) if amount else ()
    return _approve(op, cc, amount, amount, CardState.ACTIVE, postings)


def _credit_card(card: Card, store: Store, product: Product, amount: int) -> tuple[Posting, ...]:
    assert amount > 0, amount
    unit = product.currency
    return (Posting(store_account(store.id, unit), card_account(card.id), amount, unit),)


def _debit_card(card: Card, store: Store, product: Product, amount: int) -> tuple[Posting, ...]:
    if amount == 0:
        return ()
    assert amount > 0, amount
    unit = product.currency
    return (Posting(card_account(card.id), store_account(store.id, unit), amount, unit),)


def _approve(
    op: str,
    cc: CardContext,
    delta_minor: int,
    approved_minor: int,
    new_state: CardState | None,
    postings: tuple[Posting, ...] = (),
    rc: str = "00",
) -> Decision:
    ledger_after = cc.ledger_minor + delta_minor
    assert ledger_after >= 0 or delta_minor >= 0, "a decision may not take a purse below zero"
    return Decision(
        rc,
        op,
        approved_minor=approved_minor,
        postings=postings,
        card_state=new_state,
        ledger_after_minor=ledger_after,
        available_after_minor=ledger_after - cc.held_minor,
    )
