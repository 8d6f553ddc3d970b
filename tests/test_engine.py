"""The pure engine, rule by rule (DESIGN §3 response codes, §4 ledger rules).

No sockets, no LMDB: requests are built as a terminal builds them and parsed by the protocol
layer; contexts are records written by hand; the clock is fixed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsrv.engine import BatchEntry, CardContext, Context, Decision, PinCheck, batch_entry, decide
from authsrv.model import (
    CampaignIssue,
    Card,
    CardState,
    DupKind,
    DupRecord,
    Hold,
    HoldState,
    IssueAnswer,
    Posting,
    Product,
    SecurityProfile,
    Store,
    Terminal,
    card_account,
    store_account,
)
from protocol.cards import luhn_check_digit
from protocol.messages import Request, parse_request
from protocol.reconciliation import Totals
from simulators.terminal import build_request
from tests.helpers import campaign_product, gift_product

NOW = datetime(2026, 11, 22, 10, 30, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
SKEW_MS_MAX = 600_000  # the default server.skew_max_s of 600 s
EUR = "978"

_BODY = "603628123456789"
PAN = _BODY + luhn_check_digit(_BODY)
BAD_LUHN_PAN = PAN[:-1] + str((int(PAN[-1]) + 1) % 10)
CARD_ID = 7
CARD_ACC = card_account(CARD_ID)
STORE_ACC = store_account("S0001", EUR)


T = TypeVar("T")


def replace(obj: T, **changes: Any) -> T:
    """A copy with ``changes``: the engine's records are msgspec structs, Totals a dataclass."""
    if isinstance(obj, msgspec.Struct):
        return msgspec.structs.replace(obj, **changes)
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


product = gift_product  # the suite's gift product (tests/helpers.py)
GIFT = product()
PREVALUED = product(id="GIFT50", fixed_value_minor=5_000)
STORE = Store(id="S0001", name="City", chain="ACME")
TERMINAL = Terminal(id="T0000001", store_id="S0001")


def card(state: CardState = CardState.ACTIVE, expiry: str = "2912", tries: int = 0) -> Card:
    return Card(
        pin_tries=tries,
        id=CARD_ID,
        product="GIFT",
        state=state,
        first6=PAN[:6],
        last4=PAN[-4:],
        pan_len=len(PAN),
        expiry=expiry,
        hash_version=1,
        issued_ms=NOW_MS - 86_400_000,
    )


def ctx(
    *,
    state: CardState = CardState.ACTIVE,
    expiry: str = "2912",
    prod: Product = GIFT,
    ledger: int = 10_000,
    held: int = 0,
    known_card: bool = True,
    terminal: Terminal | None = TERMINAL,
    store: Store | None = STORE,
    now: datetime = NOW,
    pin: PinCheck = PinCheck.ABSENT,
    tries: int = 0,
) -> Context:
    cc = CardContext(card(state, expiry, tries), prod, ledger, held) if known_card else None
    return Context(
        int(now.timestamp() * 1000), SKEW_MS_MAX, terminal, store, cc, pin=pin, pin_tries_max=3
    )


def req(
    op: str,
    amount: int | None = None,
    *,
    pan: str = PAN,
    partial: bool = False,
    currency: str = EUR,
    store: str = "S0001",
    sent: datetime = NOW,
    overrides: Mapping[str, str | None] | None = None,
) -> Request:
    fields = build_request(
        op,
        terminal="T0000001",
        store=store,
        pan=pan,
        amount_minor=amount,
        currency=currency,
        partial=partial,
        stan="000001",
        now=sent,
        overrides=overrides,
    )
    return parse_request(fields)


def credit(amount: int) -> tuple[Posting, ...]:
    """Store settlement -> card purse (activation, load, refund)."""
    return (Posting(STORE_ACC, CARD_ACC, amount, EUR),)


def debit(amount: int) -> tuple[Posting, ...]:
    """Card purse -> store settlement (redeem, cash-out)."""
    return (Posting(CARD_ACC, STORE_ACC, amount, EUR),)


def ok(
    op: str,
    approved: int,
    ledger_after: int,
    *,
    postings: tuple[Posting, ...] = (),
    held: int = 0,
    rc: str = "00",
    state: CardState | None = None,
) -> Decision:
    return Decision(
        rc,
        op,
        approved_minor=approved,
        postings=postings,
        card_state=state,
        ledger_after_minor=ledger_after,
        available_after_minor=ledger_after - held,
    )


ISSUED = CardState.ISSUED
ACTIVE = CardState.ACTIVE
OTHER_STORE = Store(id="S0002", name="Mall", chain="ACME")
SIGNON_TERMINAL = Terminal(id="T0000001", store_id="S0001", signon_required=True)
MAC_TERMINAL = Terminal(
    id="T0000001", store_id="S0001", security=SecurityProfile.MAC_AES, tmk="tmk/T0000001"
)
PIN_GIFT = product(pin_required=True)
SIGNED_ON_TERMINAL = Terminal(id="T0000001", store_id="S0001", signon_required=True, signed_on=True)
NEW_YEAR = datetime(2027, 1, 1, 0, 2, 0, tzinfo=UTC)

# fmt: off
RULES = [
    # -- terminal and store: 03 ---------------------------------------------------------------
    pytest.param(req("redeem", 1000), ctx(terminal=None), Decision("03", "redeem"),
                 id="unknown-terminal-03"),
    pytest.param(req("redeem", 1000), ctx(terminal=Terminal(id="T0000001", store_id="S0001",
                                                           active=False)),
                 Decision("03", "redeem"), id="inactive-terminal-03"),
    pytest.param(req("redeem", 1000, store="S0002"), ctx(store=OTHER_STORE),
                 Decision("03", "redeem"), id="terminal-of-another-store-03"),
    pytest.param(req("redeem", 1000), ctx(store=None), Decision("03", "redeem"),
                 id="unknown-store-03"),
    pytest.param(req("redeem", 1000),
                 ctx(store=Store(id="S0001", name="City", chain="ACME", active=False)),
                 Decision("03", "redeem"), id="inactive-store-03"),
    pytest.param(req("signon"), ctx(terminal=None), Decision("03", "signon"),
                 id="signon-unknown-terminal-03"),
    # -- sign-on: 91 until signed on; network management -----------------------------------
    pytest.param(req("redeem", 1000), ctx(terminal=SIGNON_TERMINAL), Decision("91", "redeem"),
                 id="signon-required-not-signed-on-91"),
    pytest.param(req("redeem", 1000), ctx(terminal=SIGNED_ON_TERMINAL),
                 ok("redeem", 1000, 9000, postings=debit(1000)), id="signon-required-signed-on"),
    pytest.param(req("signon"), ctx(terminal=SIGNON_TERMINAL),
                 Decision("00", "signon", terminal_signed_on=True), id="signon-00"),
    pytest.param(req("signoff"), ctx(terminal=SIGNED_ON_TERMINAL),
                 Decision("00", "signoff", terminal_signed_on=False), id="signoff-00"),
    pytest.param(req("echo"), ctx(terminal=SIGNON_TERMINAL), Decision("00", "echo"),
                 id="echo-00-needs-no-signon"),
    pytest.param(req("echo", overrides={"70": "201"}), ctx(), Decision("12", "unsupported"),
                 id="network-code-201-unsupported-12"),
    pytest.param(req("echo", overrides={"70": "101"}), ctx(), Decision("12", "keychange"),
                 id="keychange-without-static-keys-12"),
    pytest.param(req("echo", overrides={"70": "101"}), ctx(terminal=MAC_TERMINAL),
                 Decision("00", "keychange", key_change=True), id="keychange-00"),
    pytest.param(req("echo", overrides={"70": "101"}),
                 ctx(terminal=msgspec.structs.replace(MAC_TERMINAL, tmk="")),
                 Decision("12", "keychange"),
                 id="keychange-without-master-key-12"),
    # -- PIN (products that require one: debits; any PIN sent is checked) ---------------------
    pytest.param(req("redeem", 1000), ctx(prod=PIN_GIFT), Decision("55", "redeem"),
                 id="pin-required-absent-55"),
    pytest.param(req("redeem", 1000), ctx(prod=PIN_GIFT, pin=PinCheck.NOT_SET),
                 Decision("55", "redeem"), id="pin-not-set-55-uncounted"),
    pytest.param(req("redeem", 1000), ctx(prod=PIN_GIFT, pin=PinCheck.WRONG),
                 Decision("55", "redeem", pin_tries=1), id="pin-wrong-55-counted"),
    pytest.param(req("redeem", 1000), ctx(prod=PIN_GIFT, pin=PinCheck.WRONG, tries=2),
                 Decision("75", "redeem", pin_tries=3), id="pin-wrong-third-75"),
    pytest.param(req("redeem", 1000), ctx(prod=PIN_GIFT, pin=PinCheck.RIGHT, tries=3),
                 Decision("75", "redeem"), id="pin-right-after-limit-still-75"),
    pytest.param(req("redeem", 1000), ctx(prod=PIN_GIFT, pin=PinCheck.RIGHT),
                 ok("redeem", 1000, 9000, postings=debit(1000)), id="pin-right-approved"),
    pytest.param(req("redeem", 1000), ctx(prod=PIN_GIFT, pin=PinCheck.RIGHT, tries=2),
                 replace(ok("redeem", 1000, 9000, postings=debit(1000)), pin_tries=0),
                 id="pin-right-resets-tries"),
    pytest.param(req("redeem", 20_000), ctx(prod=PIN_GIFT, pin=PinCheck.RIGHT, tries=1),
                 Decision("51", "redeem", ledger_after_minor=10_000, available_after_minor=10_000,
                          pin_tries=0), id="pin-right-resets-tries-on-51-too"),
    pytest.param(req("load", 1000), ctx(prod=PIN_GIFT),
                 ok("load", 1000, 11_000, postings=credit(1000)), id="pin-not-needed-for-load"),
    pytest.param(req("balance"), ctx(pin=PinCheck.WRONG), Decision("55", "balance", pin_tries=1),
                 id="pin-sent-is-checked-even-unrequired"),
    pytest.param(req("balance"), ctx(prod=PIN_GIFT, tries=3), ok("balance", 0, 10_000),
                 id="pin-locked-card-balance-without-pin-ok"),
    # -- unsupported MTI / processing code: 12 ----------------------------------------------
    pytest.param(req("redeem", 1000, overrides={"3": "400000"}), ctx(),
                 Decision("12", "unsupported"), id="proc-40-unsupported-12"),
    pytest.param(req("inquiry", overrides={"3": "000000", "4": "000000001000", "49": EUR}),
                 ctx(), Decision("00", "preauth", approved_minor=1000, hold_place_minor=1000,
                                 ledger_after_minor=10000, available_after_minor=9000),
                 id="mti-0100-proc-00-preauth-hold"),
    # -- field 7 skew --------------------------------------------------------------------------
    pytest.param(req("redeem", 1000, sent=NOW - timedelta(minutes=11)), ctx(),
                 Decision("12", "redeem"), id="field7-11min-old-12"),
    pytest.param(req("redeem", 1000, sent=NOW + timedelta(minutes=11)), ctx(),
                 Decision("12", "redeem"), id="field7-11min-ahead-12"),
    pytest.param(req("redeem", 1000, sent=NOW - timedelta(minutes=10)), ctx(),
                 ok("redeem", 1000, 9000, postings=debit(1000)), id="field7-at-skew-max-ok"),
    pytest.param(req("redeem", 1000, sent=NOW + timedelta(minutes=9)), ctx(),
                 ok("redeem", 1000, 9000, postings=debit(1000)), id="field7-9min-ahead-ok"),
    pytest.param(req("redeem", 1000, sent=NEW_YEAR - timedelta(minutes=4)), ctx(now=NEW_YEAR),
                 ok("redeem", 1000, 9000, postings=debit(1000)),
                 id="field7-last-year-across-new-year-ok"),
    pytest.param(req("redeem", 1000, overrides={"7": "0229103000"}), ctx(),
                 Decision("12", "redeem"), id="field7-29-february-no-leap-year-near-12"),
    # -- from-account ------------------------------------------------------------------------
    pytest.param(req("redeem", 1000, overrides={"3": "006500"}), ctx(), Decision("12", "redeem"),
                 id="from-account-points-65-12"),
    pytest.param(req("redeem", 1000, overrides={"3": "006600"}), ctx(), Decision("12", "redeem"),
                 id="from-account-stamps-66-12"),
    pytest.param(req("redeem", 1000, overrides={"3": "006000"}), ctx(),
                 ok("redeem", 1000, 9000, postings=debit(1000)), id="from-account-money-60-ok"),
    # -- card number ---------------------------------------------------------------------------
    pytest.param(req("redeem", 1000, pan=BAD_LUHN_PAN), ctx(), Decision("14", "redeem"),
                 id="bad-luhn-14"),
    pytest.param(req("redeem", 1000), ctx(known_card=False), Decision("14", "redeem"),
                 id="unknown-card-14"),
    # -- product and currency ------------------------------------------------------------------
    pytest.param(req("redeem", 1000), ctx(prod=product(chain="OTHER")), Decision("58", "redeem"),
                 id="product-of-another-chain-58"),
    pytest.param(req("redeem", 1000, currency="840"), ctx(), Decision("12", "redeem"),
                 id="currency-mismatch-12"),
    # -- card states ---------------------------------------------------------------------------
    pytest.param(req("redeem", 1000), ctx(state=ISSUED), Decision("78", "redeem"),
                 id="issued-redeem-78"),
    pytest.param(req("balance"), ctx(state=ISSUED, ledger=0), Decision("78", "balance"),
                 id="issued-balance-78"),
    pytest.param(req("load", 1000), ctx(state=CardState.AWAITING_ACTIVATION),
                 Decision("78", "load"), id="awaiting-activation-78"),
    pytest.param(req("redeem", 1000), ctx(state=CardState.BLOCKED), Decision("62", "redeem"),
                 id="blocked-62"),
    pytest.param(req("activate", 1000), ctx(state=CardState.BLOCKED, ledger=0),
                 Decision("62", "activate"), id="blocked-activate-62"),
    pytest.param(req("redeem", 1000), ctx(state=CardState.CLOSED), Decision("62", "redeem"),
                 id="closed-62"),
    pytest.param(req("redeem", 1000), ctx(state=CardState.LOST), Decision("41", "redeem"),
                 id="lost-41"),
    pytest.param(req("redeem", 1000), ctx(state=CardState.STOLEN), Decision("43", "redeem"),
                 id="stolen-43"),
    pytest.param(req("redeem", 1000), ctx(state=CardState.EXPIRED), Decision("54", "redeem"),
                 id="expired-state-54"),
    # -- expiry date ---------------------------------------------------------------------------
    pytest.param(req("redeem", 1000), ctx(expiry="2610"), Decision("54", "redeem"),
                 id="expiry-month-passed-54"),
    pytest.param(req("redeem", 1000), ctx(expiry="2611"),
                 ok("redeem", 1000, 9000, postings=debit(1000)),
                 id="expiry-month-current-valid-to-month-end"),
    pytest.param(req("activate", 1000), ctx(state=ISSUED, expiry="2610", ledger=0),
                 Decision("54", "activate"), id="activate-expired-date-54"),
    pytest.param(req("redeem", 1000, overrides={"14": "2911"}), ctx(), Decision("54", "redeem"),
                 id="field14-differs-from-card-54"),
    pytest.param(req("redeem", 1000, overrides={"14": "2912"}), ctx(),
                 ok("redeem", 1000, 9000, postings=debit(1000)), id="field14-equal-ok"),
    # -- activation ----------------------------------------------------------------------------
    pytest.param(req("activate", 10_000), ctx(state=ISSUED, ledger=0),
                 ok("activate", 10_000, 10_000, postings=credit(10_000), state=ACTIVE),
                 id="activate-open-value-00"),
    pytest.param(req("activate", 500), ctx(state=ISSUED, ledger=0),
                 ok("activate", 500, 500, postings=credit(500), state=ACTIVE),
                 id="activate-at-load-min-00"),
    pytest.param(req("activate", 50_000), ctx(state=ISSUED, ledger=0),
                 ok("activate", 50_000, 50_000, postings=credit(50_000), state=ACTIVE),
                 id="activate-at-load-max-00"),
    pytest.param(req("activate", 499), ctx(state=ISSUED, ledger=0), Decision("13", "activate"),
                 id="activate-below-min-13"),
    pytest.param(req("activate", 0), ctx(state=ISSUED, ledger=0), Decision("13", "activate"),
                 id="activate-open-value-zero-13"),
    pytest.param(req("activate", 50_001), ctx(state=ISSUED, ledger=0),
                 Decision("61", "activate"), id="activate-above-max-61"),
    pytest.param(req("activate", 0), ctx(state=ISSUED, ledger=0, prod=PREVALUED),
                 ok("activate", 5_000, 5_000, postings=credit(5_000), state=ACTIVE),
                 id="activate-prevalued-with-0"),
    pytest.param(req("activate", 5_000), ctx(state=ISSUED, ledger=0, prod=PREVALUED),
                 ok("activate", 5_000, 5_000, postings=credit(5_000), state=ACTIVE),
                 id="activate-prevalued-with-exact-value"),
    pytest.param(req("activate", 4_000), ctx(state=ISSUED, ledger=0, prod=PREVALUED),
                 Decision("13", "activate"), id="activate-prevalued-other-amount-13"),
    pytest.param(req("activate", 10_000), ctx(), Decision("57", "activate"),
                 id="activate-already-active-57"),
    # -- load ----------------------------------------------------------------------------------
    pytest.param(req("load", 2_000), ctx(prod=product(reloadable=False)), Decision("57", "load"),
                 id="load-not-reloadable-57"),
    pytest.param(req("load", 0), ctx(), Decision("13", "load"), id="load-zero-13"),
    pytest.param(req("load", 499), ctx(), Decision("13", "load"), id="load-below-min-13"),
    pytest.param(req("load", 50_001), ctx(), Decision("61", "load"), id="load-above-max-61"),
    pytest.param(req("load", 45_000), ctx(ledger=60_000), Decision("61", "load"),
                 id="load-over-max-balance-61"),
    pytest.param(req("load", 50_000), ctx(ledger=50_000),
                 ok("load", 50_000, 100_000, postings=credit(50_000)),
                 id="load-to-exactly-max-balance-00"),
    pytest.param(req("load", 2_000), ctx(held=1_500),
                 ok("load", 2_000, 12_000, postings=credit(2_000), held=1_500), id="load-00"),
    # -- refund --------------------------------------------------------------------------------
    pytest.param(req("refund", 0), ctx(), Decision("13", "refund"), id="refund-zero-13"),
    pytest.param(req("refund", 1_001), ctx(ledger=99_000), Decision("61", "refund"),
                 id="refund-over-max-balance-61"),
    pytest.param(req("refund", 100), ctx(prod=product(reloadable=False)),
                 ok("refund", 100, 10_100, postings=credit(100)),
                 id="refund-below-load-min-not-reloadable-00"),
    # -- redeem --------------------------------------------------------------------------------
    pytest.param(req("redeem", 0), ctx(), Decision("13", "redeem"), id="redeem-zero-13"),
    pytest.param(req("redeem", 99), ctx(prod=product(redeem_min_minor=100)),
                 Decision("13", "redeem"), id="redeem-below-redeem-min-13"),
    pytest.param(req("redeem", 2_500), ctx(),
                 ok("redeem", 2_500, 7_500, postings=debit(2_500)), id="redeem-enough-00"),
    pytest.param(req("redeem", 10_000), ctx(),
                 ok("redeem", 10_000, 0, postings=debit(10_000)), id="redeem-whole-balance-00"),
    pytest.param(req("redeem", 12_000, partial=True), ctx(),
                 ok("redeem", 10_000, 0, postings=debit(10_000), rc="10"),
                 id="redeem-short-partial-10"),
    pytest.param(req("redeem", 12_000), ctx(),
                 Decision("51", "redeem", ledger_after_minor=10_000, available_after_minor=10_000),
                 id="redeem-short-no-partial-51"),
    pytest.param(req("redeem", 8_000), ctx(held=3_000),
                 Decision("51", "redeem", ledger_after_minor=10_000, available_after_minor=7_000),
                 id="redeem-short-of-available-51"),
    pytest.param(req("redeem", 8_000, partial=True), ctx(held=3_000),
                 ok("redeem", 7_000, 3_000, postings=debit(7_000), held=3_000, rc="10"),
                 id="redeem-partial-up-to-available-10"),
    pytest.param(req("redeem", 1_000, partial=True), ctx(ledger=0),
                 Decision("51", "redeem", ledger_after_minor=0, available_after_minor=0),
                 id="redeem-empty-card-partial-51"),
    # -- cash-out ------------------------------------------------------------------------------
    pytest.param(req("cashout", 0), ctx(prod=product(cashout=False)), Decision("57", "cashout"),
                 id="cashout-not-allowed-57"),
    pytest.param(req("cashout", 0), ctx(held=1_000), Decision("57", "cashout"),
                 id="cashout-with-open-hold-57"),
    pytest.param(req("cashout", 0), ctx(),
                 ok("cashout", 10_000, 0, postings=debit(10_000), state=CardState.CLOSED),
                 id="cashout-00-pays-balance-and-closes"),
    pytest.param(req("cashout", 0), ctx(ledger=0),
                 ok("cashout", 0, 0, state=CardState.CLOSED), id="cashout-empty-card-closes"),
    # -- balance -------------------------------------------------------------------------------
    pytest.param(req("balance"), ctx(held=2_500), ok("balance", 0, 10_000, held=2_500),
                 id="balance-0200-00"),
    pytest.param(req("inquiry"), ctx(held=2_500), ok("balance", 0, 10_000, held=2_500),
                 id="balance-inquiry-0100-00"),
]
# fmt: on

# -- exactly once (DESIGN §5): reversals, completions and advices against the original's record


def original(op: str, amount: int) -> dict[str, str]:
    """Fields of the earlier request that a reversal or completion names in field 90."""
    return build_request(
        op,
        terminal="T0000001",
        store="S0001",
        pan=PAN,
        amount_minor=amount,
        stan="000009",
        now=NOW - timedelta(minutes=1),
    )


def naming(
    op: str,
    orig: Mapping[str, str],
    amount: int | None = None,
    *,
    final: int | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> Request:
    """A reversal (its amount defaults to the original's field 4) or completion of ``orig``."""
    fields = build_request(
        op,
        terminal="T0000001",
        store="S0001",
        pan=PAN,
        amount_minor=int(orig["4"]) if amount is None else amount,
        stan="000002",
        now=NOW,
        original=orig,
        final_minor=final,
        overrides=overrides,
    )
    return parse_request(fields)


def record(
    op: str,
    proc: str,
    requested: int,
    approved: int | None,
    *,
    rc: str = "00",
    mti_class: str = "0200",
    card_id: int = CARD_ID,
    hold_id: int = 0,
) -> DupRecord:
    return DupRecord(
        kind=DupKind.REQUEST,
        at_ms=NOW_MS - 60_000,
        mti_class=mti_class,
        proc=proc,
        op=op,
        rc=rc,
        requested_minor=requested,
        approved_minor=approved,
        card_id=card_id,
        hold_id=hold_id,
    )


DAY_MS = 86_400_000


def hold(state: HoldState, amount: int = 1_000) -> Hold:
    return Hold(
        id=1,
        card_id=CARD_ID,
        amount_minor=amount,
        placed_ms=NOW_MS - 60_000,
        expires_ms=NOW_MS + DAY_MS,
        state=state,
        original_key=b"hold-key",
    )


def knowing(context: Context, orig: DupRecord | None, held: Hold | None = None) -> Context:
    return replace(context, original=orig, hold=held)


REDEEMED = record("redeem", "000000", 1_000, 1_000)
PREAUTH = record("preauth", "000000", 1_000, 1_000, mti_class="0100", hold_id=1)

# fmt: off
RULES += [
    pytest.param(naming("reverse", original("redeem", 1_000)), knowing(ctx(), None),
                 Decision("25", "reversal", tombstone=True),
                 id="reverse-unknown-original-0400-25-tombstone"),
    pytest.param(naming("reverse", original("redeem", 1_000)),
                 knowing(ctx(), DupRecord(kind=DupKind.TOMBSTONE, at_ms=NOW_MS)),
                 Decision("25", "reversal"), id="reverse-tombstoned-original-0400-25"),
    pytest.param(naming("reverse", original("redeem", 1_000)),
                 knowing(ctx(), record("reversal", "000000", 1_000, None, mti_class="0400")),
                 Decision("12", "reversal"), id="reverse-of-a-reversal-12"),
    pytest.param(naming("reverse", original("redeem", 1_000), overrides={"3": "200000"}),
                 knowing(ctx(), REDEEMED),
                 Decision("30", "reversal", field44="003 not the original's"),
                 id="reverse-field3-not-the-originals-30"),
    pytest.param(naming("reverse", original("redeem", 1_000), 999), knowing(ctx(), REDEEMED),
                 Decision("30", "reversal", field44="004 not the original's"),
                 id="reverse-field4-not-the-originals-30"),
    pytest.param(naming("reverse", original("redeem", 1_000)),
                 knowing(ctx(), record("redeem", "000000", 1_000, 1_000, card_id=CARD_ID + 1)),
                 Decision("30", "reversal", field44="002 not the original's"),
                 id="reverse-other-card-30"),
    pytest.param(naming("reverse", original("redeem", 1_000)), knowing(ctx(), REDEEMED),
                 Decision("00", "reversal", postings=credit(1_000), original_reversed_minor=1_000,
                          ledger_after_minor=11_000, available_after_minor=11_000),
                 id="reverse-redeem-restores"),
    pytest.param(naming("reverse", original("redeem", 1_000), final=600),
                 knowing(ctx(), REDEEMED),
                 Decision("00", "reversal", postings=credit(400), original_reversed_minor=400,
                          ledger_after_minor=10_400, available_after_minor=10_400),
                 id="reverse-field95-restores-original-minus-final"),
    pytest.param(naming("reverse", original("redeem", 1_200)),
                 knowing(ctx(), record("redeem", "000000", 1_200, 1_000, rc="10")),
                 Decision("00", "reversal", postings=credit(1_000), original_reversed_minor=1_000,
                          ledger_after_minor=11_000, available_after_minor=11_000),
                 id="reverse-partial-approval-restores-the-approved"),
    pytest.param(naming("reverse", original("load", 2_000)),
                 knowing(ctx(ledger=1_500), record("load", "210000", 2_000, 2_000)),
                 Decision("57", "reversal"), id="reverse-load-spent-0400-57"),
    pytest.param(naming("reverse", original("load", 2_000)),
                 knowing(ctx(ledger=2_500, held=1_000), record("load", "210000", 2_000, 2_000)),
                 Decision("57", "reversal"), id="reverse-load-held-0400-57"),
    pytest.param(naming("reverse-advice", original("load", 2_000)),
                 knowing(ctx(ledger=500), record("load", "210000", 2_000, 2_000)),
                 Decision("00", "reversal", postings=debit(2_000), original_reversed_minor=2_000,
                          ledger_after_minor=-1_500, available_after_minor=-1_500,
                          exceptions=("below_zero",)),
                 id="reverse-advice-load-spent-below-zero"),
    pytest.param(naming("reverse", original("activate", 1_000)),
                 knowing(ctx(ledger=1_000), record("activate", "720000", 1_000, 1_000)),
                 Decision("00", "reversal", postings=debit(1_000), card_state=ISSUED,
                          original_reversed_minor=1_000, ledger_after_minor=0,
                          available_after_minor=0),
                 id="reverse-whole-activation-back-to-issued"),
    pytest.param(naming("reverse", original("cashout", 0)),
                 knowing(ctx(state=CardState.CLOSED, ledger=0),
                         record("cashout", "010000", 0, 1_000)),
                 Decision("00", "reversal", postings=credit(1_000), card_state=ACTIVE,
                          original_reversed_minor=1_000, ledger_after_minor=1_000,
                          available_after_minor=1_000),
                 id="reverse-cashout-reopens"),
    pytest.param(naming("reverse", original("preauth", 1_000)),
                 knowing(ctx(), PREAUTH, hold(HoldState.COMPLETED)),
                 Decision("12", "reversal"), id="reverse-completed-hold-0400-12"),
    pytest.param(naming("complete", original("preauth", 1_000), 800),
                 knowing(ctx(), PREAUTH, hold(HoldState.EXPIRED)),
                 Decision("00", "completion", approved_minor=800, postings=debit(800),
                          ledger_after_minor=9_200, available_after_minor=9_200,
                          exceptions=("forced_completion",)),
                 id="completion-of-an-expired-hold-forced"),
    pytest.param(naming("complete", original("preauth", 1_000), 800), knowing(ctx(), None),
                 Decision("00", "completion", approved_minor=800, postings=debit(800),
                          ledger_after_minor=9_200, available_after_minor=9_200,
                          exceptions=("forced_completion",)),
                 id="completion-unknown-original-forced"),
    pytest.param(req("advice", 3_000), ctx(ledger=0),
                 Decision("00", "advice", approved_minor=3_000, postings=debit(3_000),
                          ledger_after_minor=-3_000, available_after_minor=-3_000,
                          exceptions=("below_zero",)),
                 id="advice-on-an-empty-card-posts-below-zero"),
    pytest.param(req("advice", 3_000), ctx(state=CardState.BLOCKED),
                 Decision("00", "advice", approved_minor=3_000, postings=debit(3_000),
                          ledger_after_minor=7_000, available_after_minor=7_000),
                 id="advice-on-a-blocked-card-posts"),
]
# fmt: on


# -- campaign cards: issue (0200 proc 92), scopes, states, void (docs/products.md) --------------

CAMP = campaign_product()  # 30 % from 100.00, at most 500.00, 90 days, online activation
AWAITING = CardState.AWAITING_ACTIVATION
ISSUE = {"3": "920000"}
# 2026-11-22 + 90 days; the card itself is valid through December 2029.
VALUE_EXPIRY = "20270220"


def issue(purchase: int, **kw: object) -> Request:
    """A campaign issue: field 4 is the qualifying purchase."""
    return req("activate", purchase, overrides=ISSUE, **kw)  # type: ignore[arg-type]


def camp_ctx(
    prod: Product = CAMP,
    state: CardState = ISSUED,
    ledger: int = 0,
    *,
    value_expiry: str = VALUE_EXPIRY,
    expiry: str = "2912",
    store: Store = STORE,
) -> Context:
    """A campaign card: produced (issued), or issued at S0001 (any other state)."""
    c = card(state, expiry)
    if state is not ISSUED:
        c = replace_card(c, value_expiry)
    return Context(NOW_MS, SKEW_MS_MAX, TERMINAL, store, CardContext(c, prod, ledger, 0))


def replace_card(c: Card, value_expiry: str) -> Card:
    campaign = CampaignIssue(
        issue_seq=1,
        store_id="S0001",
        terminal_id="T0000001",
        value_expiry=value_expiry,
        code_verifier=b"v" * 16,
    )
    return msgspec.structs.replace(c, product="CAMP", campaign=campaign)


def issued(
    value: int,
    purchase: int,
    *,
    state: CardState = AWAITING,
    expiry: str = VALUE_EXPIRY,
    code: bool = True,
) -> Decision:
    return replace(
        ok("issue", purchase, value, postings=credit(value), state=state),
        loaded_minor=value,
        value_expiry=expiry,
        activation_code=code,
    )


def issue_original(purchase: int = 100_000) -> dict[str, str]:
    return dict(original("activate", purchase), **ISSUE)


def issue_record(purchase: int = 100_000, value: int = 30_000) -> DupRecord:
    return replace_record(record("issue", "920000", purchase, purchase), value)


def replace_record(r: DupRecord, value: int) -> DupRecord:
    return msgspec.structs.replace(r, issue=IssueAnswer(loaded_minor=value, code_salt=b"s" * 16))


OTHER_CHAIN_STORE = Store(id="S0001", name="City", chain="OTHER")

# fmt: off
RULES += [
    # -- the value: purchase x share_bp / 10 000, rounded down, capped ---------------------------
    pytest.param(issue(100_000), camp_ctx(), issued(30_000, 100_000),
                 id="issue-30pct-of-1000-loads-300-awaiting-activation"),
    pytest.param(issue(33_333), camp_ctx(), issued(9_999, 33_333),
                 id="issue-rounds-down-to-the-minor-unit"),
    pytest.param(issue(10_000), camp_ctx(), issued(3_000, 10_000),
                 id="issue-at-min-purchase"),
    pytest.param(issue(200_000), camp_ctx(), issued(50_000, 200_000),
                 id="issue-capped-at-max-value"),
    pytest.param(issue(9_999), camp_ctx(), Decision("13", "issue"),
                 id="issue-below-min-purchase-13"),
    pytest.param(issue(3), camp_ctx(prod=campaign_product(min_purchase_minor=0)),
                 Decision("13", "issue"), id="issue-worth-nothing-13"),
    pytest.param(issue(100_000), camp_ctx(prod=campaign_product(online_activation=False)),
                 issued(30_000, 100_000, state=ACTIVE, code=False),
                 id="issue-without-online-activation-active-at-once"),
    # -- value expiry: days from the issue, or a fixed day, never past the card's month ------
    pytest.param(issue(100_000),
                 camp_ctx(prod=campaign_product(expiry_days=0, expiry_date="20261231")),
                 issued(30_000, 100_000, expiry="20261231"), id="issue-fixed-expiry-date"),
    pytest.param(issue(100_000), camp_ctx(expiry="2612"),
                 issued(30_000, 100_000, expiry="20261231"),
                 id="issue-value-expiry-capped-by-card-expiry"),
    pytest.param(issue(100_000),
                 camp_ctx(prod=campaign_product(expiry_days=0, expiry_date="20261121")),
                 Decision("57", "issue"), id="issue-campaign-date-passed-57"),
    pytest.param(req("redeem", 1_000), camp_ctx(state=ACTIVE, ledger=30_000,
                                                 value_expiry="20261121"),
                 Decision("54", "redeem"), id="redeem-campaign-value-expired-54"),
    pytest.param(req("redeem", 1_000), camp_ctx(state=ACTIVE, ledger=30_000,
                                                 value_expiry="20261122"),
                 ok("redeem", 1_000, 29_000, postings=debit(1_000)),
                 id="redeem-campaign-value-valid-through-its-day"),
    # -- scopes: issue scope for 92, redeem scope for everything else (empty: the chain) -----
    pytest.param(issue(100_000), camp_ctx(prod=campaign_product(issue_stores=("S0002",))),
                 Decision("58", "issue"), id="issue-outside-issue-scope-58"),
    pytest.param(issue(100_000),
                 camp_ctx(prod=campaign_product(chain="OTHER", issue_chains=("ACME",),
                                                redeem_chains=("OTHER",))),
                 issued(30_000, 100_000), id="issue-scope-another-chain-00"),
    pytest.param(issue(100_000), camp_ctx(prod=campaign_product(chain="OTHER")),
                 Decision("58", "issue"), id="issue-empty-scope-is-the-chain-58"),
    pytest.param(req("redeem", 1_000),
                 camp_ctx(prod=campaign_product(redeem_stores=("S0002",)), state=ACTIVE,
                          ledger=30_000),
                 Decision("58", "redeem"), id="redeem-outside-redeem-scope-58"),
    pytest.param(req("redeem", 1_000),
                 camp_ctx(prod=campaign_product(redeem_chains=("OTHER",)), state=ACTIVE,
                          ledger=30_000, store=OTHER_CHAIN_STORE),
                 ok("redeem", 1_000, 29_000, postings=debit(1_000)),
                 id="redeem-scope-another-chain-00"),
    # -- kinds and states ----------------------------------------------------------------------
    pytest.param(issue(100_000), ctx(state=ISSUED, ledger=0), Decision("57", "issue"),
                 id="issue-on-a-gift-card-57"),
    pytest.param(req("activate", 10_000), camp_ctx(), Decision("57", "activate"),
                 id="activate-72-on-a-campaign-card-57"),
    pytest.param(issue(100_000), camp_ctx(state=AWAITING, ledger=30_000),
                 Decision("57", "issue"), id="issue-twice-awaiting-activation-57"),
    pytest.param(issue(100_000), camp_ctx(state=ACTIVE, ledger=30_000),
                 Decision("57", "issue"), id="issue-twice-active-57"),
    pytest.param(issue(100_000), camp_ctx(state=CardState.BLOCKED), Decision("62", "issue"),
                 id="issue-blocked-62"),
    pytest.param(issue(100_000), camp_ctx(expiry="2610"), Decision("54", "issue"),
                 id="issue-expired-card-54"),
    pytest.param(req("redeem", 1_000), camp_ctx(state=AWAITING, ledger=30_000),
                 Decision("78", "redeem"), id="redeem-awaiting-activation-78"),
    pytest.param(req("balance"), camp_ctx(state=AWAITING, ledger=30_000),
                 Decision("78", "balance"), id="balance-awaiting-activation-78"),
    pytest.param(req("redeem", 1_000), camp_ctx(state=ACTIVE, ledger=30_000),
                 ok("redeem", 1_000, 29_000, postings=debit(1_000)), id="redeem-activated-00"),
    pytest.param(req("load", 1_000), camp_ctx(state=ACTIVE, ledger=30_000),
                 Decision("57", "load"), id="load-campaign-card-57"),
    # -- void (0400) within the issue's business day; 0420 always applies -----------------------
    pytest.param(naming("reverse", issue_original()),
                 knowing(camp_ctx(state=AWAITING, ledger=30_000), issue_record()),
                 Decision("00", "reversal", postings=debit(30_000), card_state=ISSUED,
                          original_reversed_minor=30_000, ledger_after_minor=0,
                          available_after_minor=0),
                 id="void-issue-removes-the-value-back-to-issued"),
    pytest.param(naming("reverse", issue_original()),
                 replace(knowing(camp_ctx(state=AWAITING, ledger=30_000), issue_record()),
                         original_day_closed=True),
                 Decision("12", "reversal"), id="void-issue-after-its-day-closed-12"),
    pytest.param(naming("reverse-advice", issue_original()),
                 replace(knowing(camp_ctx(state=AWAITING, ledger=30_000), issue_record()),
                         original_day_closed=True),
                 Decision("00", "reversal", postings=debit(30_000), card_state=ISSUED,
                          original_reversed_minor=30_000, ledger_after_minor=0,
                          available_after_minor=0),
                 id="reversal-advice-of-issue-after-its-day-applies"),
    pytest.param(naming("reverse", issue_original()),
                 knowing(camp_ctx(state=ACTIVE, ledger=20_000), issue_record()),
                 Decision("57", "reversal"), id="void-issue-value-spent-57"),
    pytest.param(naming("reverse", issue_original(), final=50_000),
                 knowing(camp_ctx(state=ACTIVE, ledger=30_000), issue_record()),
                 Decision("00", "reversal", postings=debit(15_000),
                          original_reversed_minor=15_000, ledger_after_minor=15_000,
                          available_after_minor=15_000),
                 id="void-issue-field95-keeps-the-final-purchases-value"),
    pytest.param(naming("reverse", issue_original(), final=5_000),
                 knowing(camp_ctx(state=ACTIVE, ledger=30_000), issue_record()),
                 Decision("00", "reversal", postings=debit(30_000), card_state=ISSUED,
                          original_reversed_minor=30_000, ledger_after_minor=0,
                          available_after_minor=0),
                 id="void-issue-final-purchase-below-minimum-removes-all"),
]
# fmt: on


# -- reconciliation (0500): the terminal's totals against the host's open batch ----------------

BATCH = Totals(
    credits_count=2,
    credit_reversals_count=1,
    debits_count=3,
    debit_reversals_count=1,
    credits_minor=60_000,
    credit_reversals_minor=2_000,
    debits_minor=4_250,
    debit_reversals_minor=1_250,
)


def close(
    totals: Totals = BATCH,
    *,
    store: str = "S0001",
    overrides: Mapping[str, str | None] | None = None,
) -> Request:
    """A 0500 with ``totals`` (the net in 97 computed from them unless overridden)."""
    fields = build_request(
        "close-batch",
        terminal="T0000001",
        store=store,
        stan="000003",
        now=NOW,
        totals=totals,
        batch_number="000042",
        overrides=overrides,
    )
    return parse_request(fields)


def with_batch(context: Context, batch: Totals | None) -> Context:
    return replace(context, batch=batch, card=None)


# fmt: off
RULES += [
    pytest.param(close(), with_batch(ctx(), BATCH),
                 Decision("00", "reconcile", batch_totals=BATCH), id="reconcile-in-balance-00"),
    pytest.param(close(replace(BATCH, debits_minor=4_251)), with_batch(ctx(), BATCH),
                 Decision("95", "reconcile", batch_totals=BATCH),
                 id="reconcile-one-amount-off-95-with-host-totals"),
    pytest.param(close(replace(BATCH, credit_reversals_count=0)), with_batch(ctx(), BATCH),
                 Decision("95", "reconcile", batch_totals=BATCH),
                 id="reconcile-one-count-off-95"),
    pytest.param(close(overrides={"97": "C0000000000000000"}), with_batch(ctx(), BATCH),
                 Decision("95", "reconcile", batch_totals=BATCH),
                 id="reconcile-figures-agree-net-does-not-95"),
    pytest.param(close(Totals()), with_batch(ctx(), None),
                 Decision("00", "reconcile", batch_totals=Totals()),
                 id="reconcile-no-open-batch-zeros-00"),
    pytest.param(close(), with_batch(ctx(), None),
                 Decision("95", "reconcile", batch_totals=Totals()),
                 id="reconcile-no-open-batch-terminal-counted-95"),
    pytest.param(close(Totals(), overrides={"97": "D0000000000000000"}),
                 with_batch(ctx(), None), Decision("00", "reconcile", batch_totals=Totals()),
                 id="reconcile-net-zero-as-D-00"),
    pytest.param(close(), with_batch(ctx(terminal=None), BATCH), Decision("03", "reconcile"),
                 id="reconcile-unknown-terminal-03"),
    pytest.param(close(store="S0002"), with_batch(ctx(store=OTHER_STORE), BATCH),
                 Decision("03", "reconcile"), id="reconcile-terminal-of-another-store-03"),
    pytest.param(close(), with_batch(ctx(terminal=SIGNON_TERMINAL), BATCH),
                 Decision("91", "reconcile"), id="reconcile-before-signon-91"),
    pytest.param(close(overrides={"3": "900000"}), with_batch(ctx(), BATCH),
                 Decision("12", "unsupported"), id="reconcile-proc-90-unsupported-12"),
]
# fmt: on


@pytest.mark.parametrize(("request_", "context", "expected"), RULES)
def test_rule(request_: Request, context: Context, expected: Decision) -> None:
    decision = decide(request_, context)
    assert decision == expected
    assert decision.approved == (expected.rc in ("00", "10"))
    if not decision.approved:
        assert decision.postings == ()
        assert decision.card_state is None


APPROVING = [
    row
    for row in RULES
    if isinstance(row.values[2], Decision)
    and row.values[2].approved
    and row.values[2].op not in ("signon", "signoff", "echo", "keychange", "reconcile")
]


@pytest.mark.parametrize(("request_", "context", "expected"), APPROVING)
def test_postings_balance_and_match_ledger_after(
    request_: Request, context: Context, expected: Decision
) -> None:
    """Every posting moves a positive amount in the product's unit between the card's purse
    and the request's store, and the card's movement is what ``ledger_after`` says."""
    decision = decide(request_, context)
    card_delta = 0
    for p in decision.postings:
        assert p.amount_minor > 0
        assert p.unit == EUR
        assert {p.debit, p.credit} == {CARD_ACC, STORE_ACC}
        card_delta += p.amount_minor if p.credit == CARD_ACC else -p.amount_minor
    assert decision.approved
    assert context.card is not None
    assert decision.ledger_after_minor == context.card.ledger_minor + card_delta
    held_after = context.card.held_minor + decision.hold_place_minor
    assert decision.available_after_minor == decision.ledger_after_minor - held_after


# -- what a decision adds to its terminal's open batch (0500 totals) ---------------------------


def entry(kind: str, amount: int) -> BatchEntry:
    return BatchEntry(kind, EUR, amount)


LOAD = record("load", "210000", 2_000, 2_000)
# fmt: off
ENTRIES = [
    pytest.param(req("redeem", 1_000), ctx(), entry("debits", 1_000), id="redeem-debit"),
    pytest.param(req("redeem", 12_000, partial=True), ctx(), entry("debits", 10_000),
                 id="partial-redeem-debit-of-the-approved"),
    pytest.param(req("cashout", 0), ctx(), entry("debits", 10_000), id="cashout-debit"),
    pytest.param(req("advice", 3_000), ctx(), entry("debits", 3_000), id="advice-debit"),
    pytest.param(naming("complete", original("preauth", 1_000), 800),
                 knowing(ctx(held=1_000), PREAUTH, hold(HoldState.OPEN)), entry("debits", 800),
                 id="completion-debit"),
    pytest.param(req("activate", 10_000), ctx(state=ISSUED, ledger=0),
                 entry("credits", 10_000), id="activation-credit"),
    pytest.param(req("load", 2_000), ctx(), entry("credits", 2_000), id="load-credit"),
    pytest.param(req("refund", 100), ctx(), entry("credits", 100), id="refund-credit"),
    pytest.param(issue(100_000), camp_ctx(), entry("credits", 30_000),
                 id="campaign-issue-credit-of-the-value-not-the-purchase"),
    pytest.param(naming("reverse", original("redeem", 1_000)), knowing(ctx(), REDEEMED),
                 entry("debit_reversals", 1_000), id="reversal-of-a-redeem-debit-reversal"),
    pytest.param(naming("reverse", original("redeem", 1_000), final=600),
                 knowing(ctx(), REDEEMED), entry("debit_reversals", 400),
                 id="partial-reversal-counts-what-it-restored"),
    pytest.param(naming("reverse-advice", original("load", 2_000)),
                 knowing(ctx(ledger=500), LOAD), entry("credit_reversals", 2_000),
                 id="reversal-of-a-load-credit-reversal"),
    pytest.param(req("redeem", 12_000), ctx(), None, id="decline-counts-nothing"),
    pytest.param(req("balance"), ctx(), None, id="balance-counts-nothing"),
    pytest.param(req("preauth", 1_000), ctx(), None, id="hold-counts-nothing"),
    pytest.param(req("cashout", 0), ctx(ledger=0), None, id="cashout-of-an-empty-card-nothing"),
    pytest.param(naming("reverse", original("preauth", 1_000)),
                 knowing(ctx(held=1_000), PREAUTH, hold(HoldState.OPEN)), None,
                 id="hold-release-counts-nothing"),
    pytest.param(naming("reverse", original("redeem", 1_000)),
                 knowing(ctx(), record("redeem", "000000", 1_000, None, rc="51")), None,
                 id="reversal-of-a-decline-counts-nothing"),
    pytest.param(close(), with_batch(ctx(), BATCH), None, id="reconciliation-counts-nothing"),
]
# fmt: on


@pytest.mark.parametrize(("request_", "context", "expected"), ENTRIES)
def test_batch_entry(request_: Request, context: Context, expected: BatchEntry | None) -> None:
    assert batch_entry(decide(request_, context)) == expected


# -- property: a purse never goes below zero ----------------------------------------------------

STEP = st.tuples(
    st.sampled_from(["load", "redeem", "refund"]),
    st.integers(min_value=0, max_value=120_000),
    st.booleans(),
)


@settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    activation=st.integers(min_value=0, max_value=60_000),
    steps=st.lists(STEP, max_size=15),
)
def test_random_operations_keep_the_purse_consistent(
    activation: int, steps: list[tuple[str, int, bool]]
) -> None:
    state = CardState.ISSUED
    ledger = 0  # what the store would hold after applying every approved decision
    credits = debits = 0  # from the postings alone
    store_balance = 0
    for n, (op, amount, partial) in enumerate([("activate", activation, False), *steps]):
        request_ = req(op, amount, partial=partial, overrides={"11": f"{n + 1:06d}"})
        context = Context(
            NOW_MS,
            SKEW_MS_MAX,
            TERMINAL,
            STORE,
            CardContext(card(state), GIFT, ledger, 0),
        )
        decision = decide(request_, context)
        if not decision.approved:
            assert decision.postings == ()
            continue
        assert decision.approved_minor is not None
        assert 0 <= decision.approved_minor <= amount
        for p in decision.postings:
            assert p.amount_minor > 0
            if p.credit == CARD_ACC:
                credits += p.amount_minor
                store_balance -= p.amount_minor
            else:
                assert p.debit == CARD_ACC
                debits += p.amount_minor
                store_balance += p.amount_minor
        assert decision.ledger_after_minor is not None
        ledger = decision.ledger_after_minor
        if decision.card_state is not None:
            state = decision.card_state
        assert ledger >= 0
        assert ledger <= GIFT.balance_max_minor
        assert ledger == credits - debits
        assert ledger + store_balance == 0  # the unit sums to zero
