"""The engine: a pure decision ``(request, context) -> decision`` (DESIGN §2).

No I/O, no clock (``now_ms`` is an input), no globals. The store loads the context inside the
write transaction, so a decision sees every earlier request of the same batch; the store then
applies the decision's postings and state change. Every business rule of the host (gift cards,
campaign cards) lives here and is tested without sockets or LMDB.

The product in a card's context is the version that governs the card: the current version for
a card still ``issued`` (its value is created now, under today's rules), else the version its
value was created under (docs/products.md).
"""

from __future__ import annotations

import calendar
import enum
import functools
import hmac
from datetime import UTC, datetime, timedelta

import msgspec

from authsrv.model import (
    CARD_ACCOUNT_PREFIX,
    KIND_CAMPAIGN,
    PURSE_MONEY,
    Card,
    CardState,
    DupKind,
    DupRecord,
    Hold,
    HoldState,
    Posting,
    Product,
    Store,
    Terminal,
    card_account,
    store_account,
)
from protocol.cards import luhn_valid
from protocol.messages import Request, transmission_ms
from protocol.reconciliation import Totals

__all__ = [
    "BatchEntry",
    "CardContext",
    "Context",
    "Decision",
    "PinCheck",
    "batch_entry",
    "campaign_value",
    "card_expired",
    "decide",
    "duplicate_verdict",
    "in_scope",
    "operation_of",
    "value_expired",
]

# (MTI class, transaction type) -> operation. Anything else is answered 12.
OPERATIONS: dict[tuple[str, str], str] = {
    ("0100", "00"): "preauth",
    ("0100", "30"): "balance",
    ("0100", "31"): "balance",
    ("0200", "00"): "redeem",
    ("0200", "01"): "cashout",
    ("0200", "20"): "refund",
    ("0200", "21"): "load",
    ("0200", "30"): "balance",
    ("0200", "31"): "balance",
    ("0200", "72"): "activate",
    ("0200", "92"): "issue",  # campaign-card issue: field 4 is the qualifying purchase
    ("0220", "00"): "completion",  # "advice" when it names no original (field 90)
    ("0500", "92"): "reconcile",  # terminal reconciliation: the batch totals (920000)
}
REVERSAL_CLASSES = frozenset({"0400", "0420"})
ADVICE_CLASSES = frozenset({"0220", "0420"})
REVERSIBLE_CLASSES = frozenset({"0100", "0200", "0220"})
# Operations that took value off the card, and those that put value on it.
DEBIT_OPS = frozenset({"redeem", "cashout", "completion", "advice"})
CREDIT_OPS = frozenset({"activate", "load", "refund", "issue"})
# Operations that create a card's value: they need the card "issued" and stamp it with the
# product version they were decided under.
CREATING_OPS = frozenset({"activate", "issue"})
BP_PER_UNIT = 10_000  # basis points in 100 %
NETWORK_CODES: dict[str, str] = {
    "001": "signon",
    "002": "signoff",
    "101": "keychange",
    "301": "echo",
}
# Operations that need the card's PIN when its product requires one.
PIN_OPS = frozenset({"redeem", "cashout", "preauth"})
STATIC_KEY_PROFILES = frozenset({"mac-tdes", "mac-aes"})
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


class CardContext(msgspec.Struct, frozen=True):
    card: Card
    product: Product
    ledger_minor: int
    held_minor: int

    @property
    def available_minor(self) -> int:
        return self.ledger_minor - self.held_minor


class PinCheck(enum.Enum):
    """What the security module made of the request's PIN block, against the card's value."""

    ABSENT = "absent"  # no PIN block in the request
    RIGHT = "right"
    WRONG = "wrong"  # also a block that does not decrypt to a well-formed PIN
    NOT_SET = "not_set"  # a PIN block, but the card has no PIN yet


class Context(msgspec.Struct, frozen=True):
    """What the engine may know about a request, read in the write transaction.

    ``original`` is the record of the request a 0220/0400/0420 names in field 90 (None when
    the host never saw it), ``hold`` the hold that original placed.
    """

    now_ms: int
    skew_ms_max: int
    terminal: Terminal | None
    store: Store | None
    card: CardContext | None
    original: DupRecord | None = None
    hold: Hold | None = None
    pin: PinCheck = PinCheck.ABSENT
    pin_tries_max: int = 3
    batch: Totals | None = None  # a 0500: the terminal's open batch in field 49's currency
    # A reversal of a campaign issue: the business day of the issue has been closed (the void
    # window is over: a 0400 gets 12; docs/products.md).
    original_day_closed: bool = False


class Decision(msgspec.Struct, frozen=True):
    rc: str
    op: str
    approved_minor: int | None = None
    postings: tuple[Posting, ...] = ()
    card_state: CardState | None = None  # the card's new state, when it changes
    terminal_signed_on: bool | None = None  # the terminal's new sign-on state
    ledger_after_minor: int | None = None
    available_after_minor: int | None = None
    field44: str | None = None  # with rc 30: a field that contradicts the original
    hold_place_minor: int = 0  # place a hold of this amount on the card
    hold_close: HoldState | None = None  # close the context's hold in this state
    hold_resize_minor: int | None = None  # keep the context's hold open with this amount
    original_reversed_minor: int | None = None  # the original's new reversed total
    tombstone: bool = False  # leave a tombstone under the original's key
    exceptions: tuple[str, ...] = ()  # advice cases to record (below_zero, ...)
    pin_tries: int | None = None  # the card's new count of wrong PIN tries
    key_change: bool = False  # give the terminal new working keys (0800 70=101)
    # A 0500: the host's totals of the terminal's open batch, answered in the 0510; the batch
    # is closed with them (on 00 and on 95).
    batch_totals: Totals | None = None
    # A campaign issue (0200 proc 92): the value loaded (field 4 echoes the purchase), the day
    # it is valid through (YYYYMMDD), and whether the answer carries an activation code (the
    # card then awaits online activation).
    loaded_minor: int | None = None
    value_expiry: str | None = None
    activation_code: bool = False

    @property
    def approved(self) -> bool:
        return self.rc in ("00", "10")


def operation_of(req: Request) -> str | None:
    if not req.supported:
        return None
    if req.mti_class == "0800":
        return NETWORK_CODES.get(req.network_code or "")
    if req.mti_class in REVERSAL_CLASSES:
        return "reversal"
    op = OPERATIONS.get((req.mti_class, req.tx_type or ""))
    if op == "completion" and req.original is None:
        return "advice"
    return op


def duplicate_verdict(existing: DupRecord, content: bytes) -> str:
    """A request whose duplicate key is known: ``replay`` the stored decision when the content
    is the same, ``mismatch`` (94) when it is not, ``tombstone`` (05) when a reversal came first.
    """
    if existing.kind is DupKind.TOMBSTONE:
        return "tombstone"
    return "replay" if hmac.compare_digest(existing.content, content) else "mismatch"


def card_expired(expiry_yymm: str, now_ms: int) -> bool:
    """A card is valid through the last day of its expiry month (UTC).

    >>> card_expired("2611", 1795000000000)  # 2026-11-18
    False
    >>> card_expired("2610", 1795000000000)
    True
    """
    return now_ms > _expiry_end_ms(expiry_yymm)


@functools.lru_cache(maxsize=4096)
def _expiry_end_ms(expiry_yymm: str) -> int:
    """The last millisecond of an expiry month (a card's YYMM; no card number)."""
    year, month = 2000 + int(expiry_yymm[:2]), int(expiry_yymm[2:])
    last_day = calendar.monthrange(year, month)[1]
    end = datetime(year, month, last_day, 23, 59, 59, 999000, tzinfo=UTC)
    return int(end.timestamp() * 1000)


def _day_end_ms(yyyymmdd: str) -> int:
    end = datetime(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]), tzinfo=UTC)
    return int((end + timedelta(days=1)).timestamp() * 1000) - 1


def value_expired(card: Card, now_ms: int) -> bool:
    """A campaign card's value is valid through the last millisecond of its value expiry day
    (UTC); a card without one has only its expiry month (:func:`card_expired`).

    >>> from authsrv.model import CampaignIssue
    >>> issue = CampaignIssue(issue_seq=1, store_id="S", terminal_id="T", value_expiry="20261122")
    >>> c = Card(id=1, product="P", state=CardState.ACTIVE, first6="603628", last4="0001",
    ...          pan_len=16, expiry="2912", hash_version=1, issued_ms=0, campaign=issue)
    >>> value_expired(c, 1795391999999), value_expired(c, 1795392000000)  # 22 Nov 23:59:59.999
    (False, True)
    """
    if card_expired(card.expiry, now_ms):
        return True
    return card.campaign is not None and now_ms > _day_end_ms(card.campaign.value_expiry)


def in_scope(stores: tuple[str, ...], chains: tuple[str, ...], chain: str, store: Store) -> bool:
    """Whether ``store`` is in a scope of stores and chains; an empty scope is ``chain``.

    >>> s = Store(id="S1", name="", chain="ACME")
    >>> in_scope((), (), "ACME", s), in_scope(("S2",), (), "ACME", s)
    (True, False)
    >>> in_scope(("S2",), ("ACME",), "OTHER", s)
    True
    """
    if not stores and not chains:
        return store.chain == chain
    return store.id in stores or store.chain in chains


def campaign_value(purchase_minor: int, product: Product) -> int:
    """The value a qualifying purchase earns: purchase x share / 10 000 basis points, rounded
    down to the minor unit (integers only), at most the product's maximum value; 0 below the
    minimum purchase.

    >>> p = Product(id="C", chain="ACME", kind="campaign", currency="978", prefix="603629",
    ...             pan_len=16, fixed_value_minor=0, load_min_minor=0, load_max_minor=0,
    ...             balance_max_minor=50_000, redeem_min_minor=1, expiry_months=36,
    ...             reloadable=False, cashout=False, share_bp=3000, min_purchase_minor=10_000,
    ...             max_value_minor=50_000, expiry_days=90)
    >>> campaign_value(100_000, p), campaign_value(9_999, p), campaign_value(33_333, p)
    (30000, 0, 9999)
    >>> campaign_value(500_000, p)  # 150 000.00 x 30 % is capped at the maximum value
    50000
    """
    assert product.kind == KIND_CAMPAIGN, product.kind
    if purchase_minor < product.min_purchase_minor:
        return 0
    return min(purchase_minor * product.share_bp // BP_PER_UNIT, product.max_value_minor)


def issue_expiry(product: Product, card: Card, now_ms: int) -> str:
    """The day (YYYYMMDD) a campaign issue at ``now_ms`` is valid through: ``expiry_days``
    after the issue day (UTC) or the fixed ``expiry_date``, and never past the card's own
    expiry month."""
    if product.expiry_date:
        day = product.expiry_date
    else:
        day = (_dt(now_ms) + timedelta(days=product.expiry_days)).strftime("%Y%m%d")
    year, month = 2000 + int(card.expiry[:2]), int(card.expiry[2:])
    last = f"{year:04d}{month:02d}{calendar.monthrange(year, month)[1]:02d}"
    return min(day, last)


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
    if op == "reconcile":
        return _decide_reconcile(req, op, ctx)
    if op == "reversal":
        return _decide_reversal(req, op, ctx)
    if op in ("completion", "advice"):
        return _decide_advice(req, op, ctx)
    if (
        req.mti_class in ("0100", "0200")
        and abs(transmission_ms(req.transmission, ctx.now_ms) - ctx.now_ms) > ctx.skew_ms_max
    ):
        return Decision("12", op)
    if req.from_account not in MONEY_ACCOUNT_TYPES:
        return Decision("12", op)
    if req.pan is None:
        return Decision("12", op)  # aliases are not served by the gift-card host
    if not luhn_valid(req.pan) or ctx.card is None:
        return Decision("14", op)
    return _decide_card(req, op, ctx)


def _dt(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, tz=UTC)


def _decide_reconcile(req: Request, op: str, ctx: Context) -> Decision:
    """0500: in balance (00) when the terminal's eight figures and its net (field 97) are the
    host's; out of balance (95) otherwise. Either way the batch closes with the host's totals."""
    assert req.totals is not None and req.net_minor is not None  # mandatory in a 0500
    host = ctx.batch if ctx.batch is not None else Totals()
    in_balance = req.totals == host and req.net_minor == host.net_minor
    return Decision("00" if in_balance else "95", op, batch_totals=host)


class BatchEntry(msgspec.Struct, frozen=True):
    """What one decision adds to its terminal's open batch."""

    kind: str  # credits, credit_reversals, debits, debit_reversals
    currency: str
    amount_minor: int


def batch_entry(decision: Decision) -> BatchEntry | None:
    """The batch figure a decision moves money under, seen from the card: value put on the card
    is a credit, value taken off it a debit; a reversal counts by what it reverses (giving a
    redeem back puts value on the card: a debit reversal). None when no money moved (declines,
    balance inquiries, holds, a reversal that had nothing to restore).
    """
    if not decision.postings:
        return None
    assert len(decision.postings) == 1, "a decision moves money in one posting"
    posting = decision.postings[0]
    onto_card = posting.credit.startswith(CARD_ACCOUNT_PREFIX)
    assert onto_card != posting.debit.startswith(CARD_ACCOUNT_PREFIX), "card to card"
    if decision.op == "reversal":
        kind = "debit_reversals" if onto_card else "credit_reversals"
    else:
        kind = "credits" if onto_card else "debits"
    return BatchEntry(kind, posting.unit, posting.amount_minor)


def _decide_network(op: str, terminal: Terminal) -> Decision:
    if op == "signon":
        return Decision("00", op, terminal_signed_on=True)
    if op == "signoff":
        return Decision("00", op, terminal_signed_on=False)
    if op == "echo":
        return Decision("00", op)
    if op == "keychange" and terminal.security in STATIC_KEY_PROFILES and terminal.tmk:
        return Decision("00", op, key_change=True)
    return Decision("12", op)


def _decide_card(req: Request, op: str, ctx: Context) -> Decision:
    store, cc, now_ms = ctx.store, ctx.card, ctx.now_ms
    assert store is not None
    assert cc is not None
    card, product = cc.card, cc.product
    if op == "issue":
        scope = in_scope(product.issue_stores, product.issue_chains, product.chain, store)
    else:
        scope = in_scope(product.redeem_stores, product.redeem_chains, product.chain, store)
    if not scope:
        return Decision("58", op)
    if req.currency is not None and req.currency != product.currency:
        return Decision("12", op)
    # A campaign card gets its value by an issue (92), any other card by an activation (72).
    if op in CREATING_OPS and (op == "issue") != (product.kind == KIND_CAMPAIGN):
        return Decision("57", op)
    creating = op in CREATING_OPS and card.state is CardState.ISSUED
    if card.state is not CardState.ACTIVE and not creating:
        if op == "issue" and card.state is CardState.AWAITING_ACTIVATION:
            return Decision("57", op)  # issued already (a new purchase needs a new card)
        return Decision(STATE_RC.get(card.state, "05"), op)
    if value_expired(card, now_ms) or (req.expiry is not None and req.expiry != card.expiry):
        return Decision("54", op)
    refused, tries = _check_pin(op, cc, ctx.pin, ctx.pin_tries_max)
    if refused is not None:
        return refused
    decision = _decide_amount(req, op, store, cc, now_ms)
    return decision if tries is None else msgspec.structs.replace(decision, pin_tries=tries)


def _check_pin(
    op: str, cc: CardContext, pin: PinCheck, tries_max: int
) -> tuple[Decision | None, int | None]:
    """A PIN is checked where the product requires one, and wherever one is sent (a wrong PIN
    is wrong on a balance inquiry too). Returns a refusal, or the card's new try count (0 after
    a right PIN that follows wrong ones) to apply with whatever the amount rules decide.
    """
    required = cc.product.pin_required and op in PIN_OPS
    if not required and pin is PinCheck.ABSENT:
        return None, None
    tries = cc.card.pin_tries
    if tries >= tries_max:
        return Decision("75", op), None
    if pin in (PinCheck.ABSENT, PinCheck.NOT_SET):
        return Decision("55", op), None  # nothing to count: no PIN was tried against the card
    if pin is PinCheck.WRONG:
        tries += 1
        return Decision("75" if tries >= tries_max else "55", op, pin_tries=tries), None
    return None, (0 if tries else None)


def _decide_amount(req: Request, op: str, store: Store, cc: CardContext, now_ms: int) -> Decision:
    card, product = cc.card, cc.product
    amount = req.amount_minor or 0
    if op == "balance":
        return _approve(op, cc, 0, 0, None)
    if op in ("redeem", "preauth"):
        return _redeem(req, op, store, cc, amount)
    if op == "cashout":
        if not product.cashout or cc.held_minor or cc.ledger_minor < 0:
            return Decision("57", op)
        paid = cc.ledger_minor
        postings = _debit_card(card, store, product, paid)
        return _approve(op, cc, -paid, paid, CardState.CLOSED, postings)
    if op == "activate":
        return _activate(op, store, cc, amount)
    if op == "issue":
        return _issue(op, store, cc, amount, now_ms)
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
    if op == "preauth":
        return Decision(
            rc,
            op,
            approved_minor=approved,
            hold_place_minor=approved,
            ledger_after_minor=cc.ledger_minor,
            available_after_minor=available - approved,
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


def _issue(op: str, store: Store, cc: CardContext, purchase: int, now_ms: int) -> Decision:
    """0200 proc 92: load a campaign card with its share of the qualifying purchase (field 4)
    from the issuing store's settlement account; it then awaits online activation when the
    product says so. Field 4 of the answer echoes the purchase."""
    product, card = cc.product, cc.card
    if card.state is not CardState.ISSUED:
        return Decision("57", op)  # issued already
    if product.expiry_date and product.expiry_date < _dt(now_ms).strftime("%Y%m%d"):
        return Decision("57", op)  # the campaign's value date has passed: nothing to issue
    value = campaign_value(purchase, product)
    if value == 0:
        return Decision("13", op)  # below the minimum purchase, or worth nothing
    assert value <= product.balance_max_minor, "validation keeps max value within max balance"
    state = CardState.AWAITING_ACTIVATION if product.online_activation else CardState.ACTIVE
    decision = _approve(op, cc, value, purchase, state, _credit_card(card, store, product, value))
    return msgspec.structs.replace(
        decision,
        loaded_minor=value,
        value_expiry=issue_expiry(product, card, now_ms),
        activation_code=product.online_activation,
    )


def _not_original(field: int) -> Decision:
    return Decision("30", "reversal", field44=f"{field:03d} not the original's")


def _decide_reversal(req: Request, op: str, ctx: Context) -> Decision:
    """0400/0420 (DESIGN §5): restore what the original moved, exactly once."""
    advice = req.mti_class in ADVICE_CLASSES
    acknowledged = "00" if advice else "25"
    orig = ctx.original
    if orig is None:
        # A 0420 must be acknowledged; if its original did move money, nobody will reverse it
        # now: record the case for the programme.
        unmatched = ("unmatched_reversal",) if advice else ()
        return Decision(acknowledged, op, tombstone=True, exceptions=unmatched)
    if orig.kind is DupKind.TOMBSTONE:
        return Decision(acknowledged, op)
    if orig.mti_class not in REVERSIBLE_CLASSES:
        return Decision("12", op)
    if req.proc != orig.proc:
        return _not_original(3)
    if req.amount_minor not in (orig.requested_minor, orig.approved_minor):
        return _not_original(4)
    if orig.rc not in ("00", "10"):
        return Decision("00", op)  # a declined original moved nothing
    cc = ctx.card
    if not orig.approved_minor:
        if orig.op == "cashout" and not orig.reversed and cc is not None:
            # A cash-out of an empty card moved nothing but closed it: reopen it, once.
            if cc.card.id != orig.card_id:
                return _not_original(2)
            reopen = CardState.ACTIVE if cc.card.state is CardState.CLOSED else None
            return _moved(op, cc, 0, (), reopen, 0)
        return Decision("00", op)  # approved for nothing (a balance inquiry)
    if cc is None or cc.card.id != orig.card_id:
        return _not_original(2)
    # What the original still moves; field 95 says what the transaction finally came to. An
    # issue moved the value its purchase earned: its final amount is the final purchase's.
    moved = orig.approved_minor
    final = 0 if req.replacement_minor is None else req.replacement_minor
    if orig.op == "issue":
        assert orig.issue is not None, "an approved issue records what it loaded"
        moved = orig.issue.loaded_minor
        final = _final_value(final, cc.product)
    left = moved - orig.reversed_minor
    restore = max(left - final, 0)
    if restore <= 0:
        return Decision("00", op)  # already reversed (or nothing to give back)
    if orig.op == "issue" and not advice and ctx.original_day_closed:
        return Decision("12", op)  # the void window closed with the issue's business day
    reversed_total = orig.reversed_minor + restore
    if orig.op == "preauth":
        return _release_hold(op, ctx.hold, cc, advice, final, reversed_total, ctx.now_ms)
    if orig.op == "balance":
        return Decision("00", op)
    store = ctx.store
    assert store is not None
    product, card = cc.product, cc.card
    if orig.op in DEBIT_OPS:
        reopen = (
            CardState.ACTIVE if orig.op == "cashout" and card.state is CardState.CLOSED else None
        )
        postings = _credit_card(card, store, product, restore)
        return _moved(op, cc, restore, postings, reopen, reversed_total)
    assert orig.op in CREDIT_OPS, orig.op
    if cc.available_minor < restore and not advice:
        return Decision("57", op)  # the value has been spent since
    postings = _debit_card(card, store, product, restore)
    unissue = None
    if orig.op in CREATING_OPS and reversed_total == moved:
        unissue = CardState.ISSUED if cc.ledger_minor - restore == 0 else None
    return _moved(op, cc, -restore, postings, unissue, reversed_total)


def _final_value(final_purchase: int, product: Product) -> int:
    """The value a campaign issue finally comes to when its purchase finally came to
    ``final_purchase`` (field 95); the rules of the card's product version."""
    if final_purchase == 0 or product.kind != KIND_CAMPAIGN:
        return 0
    return campaign_value(final_purchase, product)


def hold_open(hold: Hold | None, now_ms: int) -> bool:
    """Open and not past its expiry (the sweep closes it later, the engine does not wait)."""
    return hold is not None and hold.state is HoldState.OPEN and now_ms < hold.expires_ms


def _release_hold(
    op: str,
    hold: Hold | None,
    cc: CardContext,
    advice: bool,
    final: int,
    reversed_total: int,
    now_ms: int,
) -> Decision:
    """Reversal of a 0100 hold: release it, or shrink it to the final amount (field 95)."""
    if hold is not None and hold.state is HoldState.COMPLETED:
        return Decision("00" if advice else "12", op)
    if not hold_open(hold, now_ms) or hold is None:
        return Decision("00", op)  # expired or released: nothing is held any more
    keep = min(final, hold.amount_minor)
    return Decision(
        "00",
        op,
        hold_close=None if keep else HoldState.RELEASED,
        hold_resize_minor=keep if keep else None,
        original_reversed_minor=reversed_total,
        ledger_after_minor=cc.ledger_minor,
        available_after_minor=cc.available_minor + hold.amount_minor - keep,
    )


def _moved(
    op: str,
    cc: CardContext,
    delta: int,
    postings: tuple[Posting, ...],
    state: CardState | None,
    reversed_total: int,
) -> Decision:
    ledger_after = cc.ledger_minor + delta
    return Decision(
        "00",
        op,
        postings=postings,
        card_state=state,
        original_reversed_minor=reversed_total,
        ledger_after_minor=ledger_after,
        available_after_minor=ledger_after - cc.held_minor,
        exceptions=("below_zero",) if ledger_after < 0 else (),
    )


def _decide_advice(req: Request, op: str, ctx: Context) -> Decision:
    """0220: a completion of a hold, or an offline transaction. Never declined (DESIGN §4)."""
    cc = ctx.card
    amount = req.amount_minor or 0
    hold = ctx.hold
    orig = ctx.original
    completes = (
        op == "completion"
        and orig is not None
        and orig.op == "preauth"
        and hold_open(hold, ctx.now_ms)
        and hold is not None
        and cc is not None
        and hold.card_id == cc.card.id
    )
    if cc is None:
        return Decision("00", op, exceptions=("unknown_card",))
    product = cc.product
    if req.currency is not None and req.currency != product.currency:
        return Decision("00", op, exceptions=("currency_mismatch",))
    exceptions: list[str] = []
    released = 0
    if completes:
        assert hold is not None
        released = hold.amount_minor
        tolerance = hold.amount_minor * product.completion_tolerance_bp // 10_000
        if amount > hold.amount_minor + tolerance:
            exceptions.append("forced_completion")
    elif op == "completion":
        exceptions.append("forced_completion")  # its hold is gone, or never was
    ledger_after = cc.ledger_minor - amount
    if ledger_after < 0:
        exceptions.append("below_zero")
    store = ctx.store
    assert store is not None
    return Decision(
        "00",
        op,
        approved_minor=amount,
        postings=_debit_card(cc.card, store, product, amount),
        hold_close=HoldState.COMPLETED if completes else None,
        ledger_after_minor=ledger_after,
        available_after_minor=ledger_after - (cc.held_minor - released),
        exceptions=tuple(exceptions),
    )


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
