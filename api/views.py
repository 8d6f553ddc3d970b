"""Records of the store as the API answers them: masked cards, UTC ISO times."""

from __future__ import annotations

from datetime import UTC, datetime

from api.schemas import (
    AuditEntryOut,
    CardDetail,
    HistoryRow,
    ProductOut,
    SelfCard,
    SelfHistoryRow,
    StoreOut,
    TerminalOut,
)
from authsrv.engine import value_expired
from authsrv.model import (
    AuditEntry,
    Card,
    CardState,
    Product,
    Store,
    Terminal,
    Transfer,
    card_account,
)
from authsrv.products import governing_product
from authsrv.store import Ledger

__all__ = [
    "audit_out",
    "card_detail",
    "iso",
    "product_out",
    "self_card",
    "store_out",
    "terminal_out",
]


def iso(at_ms: int) -> str:
    """
    >>> iso(1795401000123)
    '2026-11-22T01:10:00.123Z'
    """
    t = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"


def _signed(card_id: int, t: Transfer) -> int:
    """A transfer's amount from the card's side: positive onto it, negative off it."""
    own = f"card:{card_id:012d}:"
    return t.amount_minor if t.credit.startswith(own) else -t.amount_minor


def card_detail(led: Ledger, card: Card, history_rows: int, now_ms: int) -> CardDetail:
    product = governing_product(led, card)
    balance = led.balance(_purse(card))
    held = led.held(card.id)
    issue = card.campaign
    return CardDetail(
        id=card.id,
        card=card.masked,
        product=card.product,
        product_version=product.version,
        kind=product.kind,
        state=card.state.value,
        currency=product.currency,
        balance_minor=balance,
        held_minor=held,
        available_minor=balance - held,
        expiry=card.expiry,
        expired=card.state is CardState.EXPIRED or value_expired(card, now_ms),
        value_expiry=issue.value_expiry if issue is not None else None,
        sold_store=card.sold_store or None,
        issued_at=iso(card.issued_ms),
        activated_at=iso(card.activated_ms) if card.activated_ms else None,
        activation_locked=issue.locked if issue is not None and issue.code_verifier else None,
        has_holder=led.holder(card.id) is not None,
        history=[
            HistoryRow(
                seq=t.seq,
                at=iso(t.at_ms),
                op=t.op,
                amount_minor=_signed(card.id, t),
                store_id=t.store_id,
                terminal_id=t.terminal_id,
            )
            for t in led.card_history(card.id, history_rows)
        ],
    )


def _purse(card: Card) -> str:
    return card_account(card.id)


def self_card(led: Ledger, card: Card, history_rows: int) -> SelfCard:
    """What a card holder sees of their card."""
    product = governing_product(led, card)
    balance = led.balance(_purse(card))
    issue = card.campaign
    return SelfCard(
        card=card.masked,
        state=card.state.value,
        currency=product.currency,
        balance_minor=balance,
        available_minor=balance - led.held(card.id),
        expiry=card.expiry,
        value_expiry=issue.value_expiry if issue is not None else None,
        history=[
            SelfHistoryRow(
                at=iso(t.at_ms), op=t.op, amount_minor=_signed(card.id, t), store_id=t.store_id
            )
            for t in led.card_history(card.id, history_rows)
        ],
    )


def store_out(s: Store) -> StoreOut:
    return StoreOut(id=s.id, name=s.name, chain=s.chain, active=s.active)


def terminal_out(t: Terminal) -> TerminalOut:
    return TerminalOut(
        id=t.id,
        store_id=t.store_id,
        active=t.active,
        signon_required=t.signon_required,
        security=t.security.value,
    )


def product_out(p: Product) -> ProductOut:
    return ProductOut(
        id=p.id,
        version=p.version,
        changed_at=iso(p.changed_ms) if p.changed_ms else None,
        chain=p.chain,
        kind=p.kind,  # type: ignore[arg-type]  # validated: gift or campaign
        currency=p.currency,
        prefix=p.prefix,
        pan_len=p.pan_len,
        fixed_value_minor=p.fixed_value_minor,
        load_min_minor=p.load_min_minor,
        load_max_minor=p.load_max_minor,
        balance_max_minor=p.balance_max_minor,
        redeem_min_minor=p.redeem_min_minor,
        expiry_months=p.expiry_months,
        reloadable=p.reloadable,
        cashout=p.cashout,
        completion_tolerance_bp=p.completion_tolerance_bp,
        pin_required=p.pin_required,
        share_bp=p.share_bp,
        min_purchase_minor=p.min_purchase_minor,
        max_value_minor=p.max_value_minor,
        expiry_days=p.expiry_days,
        expiry_date=p.expiry_date,
        issue_stores=list(p.issue_stores),
        issue_chains=list(p.issue_chains),
        redeem_stores=list(p.redeem_stores),
        redeem_chains=list(p.redeem_chains),
        online_activation=p.online_activation,
    )


def audit_out(e: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        seq=e.seq,
        at=iso(e.at_ms),
        actor=e.actor,
        action=e.action,
        target=e.target,
        detail=dict(e.detail),
        request_id=e.request_id,
    )
