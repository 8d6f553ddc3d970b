"""Expiry to breakage: what is left on a card after its expiry month moves to breakage.

A card with expiry ``YYMM`` is valid through the last millisecond of that month, UTC
(:func:`authsrv.engine.card_expired`, the rule the engine declines with 54); a campaign card's
value only through the last millisecond of its value expiry day, UTC, if that comes first
(:func:`authsrv.engine.value_expired`, recorded on the card at its issue from the product version
it was issued under). Once that has passed, the sweep looks at the card by its state:

- ``active``, ``awaiting_activation``, ``blocked``: a positive purse balance moves to the
  product's breakage account (:func:`settlement.accounts.breakage_account`: the issuer's for
  gift cards, the chain's for campaign cards) in one transfer, and the card becomes
  ``expired``; with a zero balance only the state changes. A block does not extend a card's
  validity: after its expiry month the value cannot be spent whether the block is lifted or not.
- ``expired``: the state stays; a positive balance that reached the card after its sweep (a
  late reversal of a redeem, say) moves to breakage the same way.
- ``issued`` (never sold): no value (a card's first money arrives with its activation); it
  stays ``issued`` and is counted as unsold. Activating it is declined (54) anyway, and
  leaving it saves a write per unsold card.
- ``lost``, ``stolen``: not swept and counted: their value normally goes to a replacement
  card, which is the programme's decision, not the sweep's. They stay in the liability report.
- ``closed``: cashed out; not swept.

Not swept either, and counted, so that a later pass takes them once resolved: a card with a
negative balance (possible after advices, DESIGN §4: there is nothing to move, and the case
is already an exception), and a card with open holds (a completion may still post against the
held value; the hold sweep releases expired holds, then the next pass takes the card).

Exactly once: the transfer (op ``expire``, the card id set, no store, terminal, STAN, RRN or
approval: a host job's) and the state change are written in the same write transaction, and a
swept card has no balance left to move; a second run moves nothing.

Bounded steps: one step examines at most ``batch_max`` cards, in card id order, in one write
transaction. :func:`expire_cards` is the host's periodic job: it keeps its position in the store
(meta ``expiry_next_card``), so steps resume where the last one stopped, wrap round at the last
card, and survive a restart. :func:`expire_all` is the operator's full pass (``authsrv settle
expire``), from the first card to the last, and can preview it (``dry_run``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from authsrv.engine import value_expired
from authsrv.model import Card, CardState, Posting, card_account
from authsrv.store import Ledger, LedgerStore
from settlement.accounts import UnknownKindError, breakage_account

__all__ = [
    "BATCH_MAX_DEFAULT",
    "EXPIRY_OP",
    "ExpiryResult",
    "expire_all",
    "expire_cards",
    "expire_cards_in",
    "expire_step",
]

EXPIRY_OP = "expire"
# Cards examined per write transaction: each may post one transfer and rewrite one card, so a
# step holds the write lock for some milliseconds (about 10 us per card read, 50 per card swept).
BATCH_MAX_DEFAULT = 1000
BATCH_MAX_LIMIT = 100_000
CURSOR_META = "expiry_next_card"  # meta key: the card id the host's next step starts at
U64 = 8

EXPIRING_STATES = frozenset({CardState.ACTIVE, CardState.AWAITING_ACTIVATION, CardState.BLOCKED})
HELD_FOR_REPLACEMENT = frozenset({CardState.LOST, CardState.STOLEN})


@dataclass(slots=True)
class ExpiryResult:
    """What one step, or a pass of steps, did (or, in a dry run, would do)."""

    examined: int = 0  # cards looked at
    expired: int = 0  # cards whose state became expired
    transfers: int = 0  # balances moved to breakage (one transfer each)
    moved: dict[str, int] = field(default_factory=dict)  # breakage account -> minor units
    negative: int = 0  # past expiry with a negative balance: not swept
    held: int = 0  # past expiry with open holds: not swept this time
    lost_or_stolen: int = 0  # past expiry, lost or stolen: not swept
    unsold: int = 0  # past expiry, never sold (issued): left as they are
    unknown_kind: int = 0  # past expiry, of a product kind without a breakage rule
    steps: int = 0
    wrapped: bool = False  # the (last) step reached the last card

    def add(self, other: ExpiryResult) -> None:
        self.examined += other.examined
        self.expired += other.expired
        self.transfers += other.transfers
        for account, amount in other.moved.items():
            self.moved[account] = self.moved.get(account, 0) + amount
        self.negative += other.negative
        self.held += other.held
        self.lost_or_stolen += other.lost_or_stolen
        self.unsold += other.unsold
        self.unknown_kind += other.unknown_kind
        self.steps += other.steps
        self.wrapped = other.wrapped


def _sweep_card(led: Ledger, card: Card, now_ms: int, res: ExpiryResult, apply: bool) -> None:
    if not value_expired(card, now_ms):
        return
    state = card.state
    if state is CardState.ISSUED:
        res.unsold += 1
        return
    if state in HELD_FOR_REPLACEMENT:
        res.lost_or_stolen += 1
        return
    if state is not CardState.EXPIRED and state not in EXPIRING_STATES:
        return  # closed
    product = led.product(card.product)
    assert product is not None, f"card {card.id} has a missing product {card.product}"
    balance = led.balance(card_account(card.id))
    if state is CardState.EXPIRED and balance == 0:
        return  # swept before: the usual case, nothing to do
    try:
        breakage = breakage_account(product)
    except UnknownKindError:
        res.unknown_kind += 1
        return
    if balance < 0:
        res.negative += 1
        return
    if led.held(card.id):
        res.held += 1
        return
    if balance > 0:
        if apply:
            led.post(
                Posting(card_account(card.id), breakage, balance, product.currency),
                at_ms=now_ms,
                op=EXPIRY_OP,
                card_id=card.id,
                terminal_id="",
                store_id="",
                stan="",
                rrn="",
                approval="",
            )
        res.transfers += 1
        res.moved[breakage] = res.moved.get(breakage, 0) + balance
    if state is not CardState.EXPIRED:
        if apply:
            led.put_card(msgspec.structs.replace(card, state=CardState.EXPIRED))
        res.expired += 1


def expire_step(
    led: Ledger, now_ms: int, first_id: int, batch_max: int, *, apply: bool = True
) -> tuple[ExpiryResult, int]:
    """Sweep the cards with ids from ``first_id``, at most ``batch_max`` of them, inside the
    caller's transaction (a write transaction when ``apply``, else any: nothing is written).

    Returns what it did and the id the next step starts at (0: this step reached the last
    card, the next starts over).
    """
    assert 1 <= batch_max <= BATCH_MAX_LIMIT, batch_max
    cards = led.cards_from(first_id, batch_max)
    res = ExpiryResult(examined=len(cards), steps=1)
    for card in cards:
        _sweep_card(led, card, now_ms, res, apply)
    if len(cards) < batch_max:
        res.wrapped = True
        return res, 0
    return res, cards[-1].id + 1


def expire_cards_in(led: Ledger, now_ms: int, batch_max: int = BATCH_MAX_DEFAULT) -> ExpiryResult:
    """One step of the host's sweep inside the caller's write transaction (the writer's
    periodic sweep): from where the last step stopped, and the position saved for the next.
    """
    first_id = led.meta_u64(CURSOR_META) or 0
    res, next_id = expire_step(led, now_ms, first_id, batch_max)
    if next_id != first_id:  # a store with fewer cards than a step is left untouched
        led.put_meta(CURSOR_META, next_id.to_bytes(U64, "big"))
    return res


def expire_cards(
    store: LedgerStore, now_ms: int, batch_max: int = BATCH_MAX_DEFAULT
) -> ExpiryResult:
    """One step of the host's sweep in its own write transaction (see :func:`expire_cards_in`).

    Call it periodically (every few seconds is plenty: expiry is a matter of months); a pass
    over ``n`` cards takes ``n / batch_max`` calls.

    Error handling: ``StoreFull`` from the store (nothing of the step is written then).
    """
    with store.write() as led:
        return expire_cards_in(led, now_ms, batch_max)


def expire_all(
    store: LedgerStore, now_ms: int, batch_max: int = BATCH_MAX_DEFAULT, *, dry_run: bool = False
) -> ExpiryResult:
    """A full pass over every card, first to last, in steps of ``batch_max`` cards, each its own
    write transaction (safe while the host runs); ``dry_run`` writes nothing and says what a
    pass would do. The host's own position (:func:`expire_cards`) is left as it is.
    """
    total = ExpiryResult()
    first_id = 0
    # Each step starts after the last card of the one before: the loop ends at the last card.
    if dry_run:
        with store.read() as led:
            while True:
                res, first_id = expire_step(led, now_ms, first_id, batch_max, apply=False)
                total.add(res)
                if first_id == 0:
                    return total
    while True:
        with store.write() as led:
            res, first_id = expire_step(led, now_ms, first_id, batch_max)
        total.add(res)
        if first_id == 0:
            return total
