"""Exactly once (DESIGN §5), as sequences through the real Processor and a real LMDB store.

No sockets: each row is a list of steps. A step builds a request as a terminal does (or sends
an earlier step's fields again, as a retransmission, a repeat or with fields changed), runs it
through ``Processor.prepare`` and ``process_batch`` (alone, or several in one batch where the
row says so), and states what must follow: response code, approved amount, the card's ledger
and available balance and its holds read back from the store, the exception cases recorded and
whether anything at all changed. Other steps move the host's clock and run the sweep. After
every row the ledger must pass ``check_ledger`` and every unit must sum to zero.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from authsrv.admin import add_product, issue_cards
from authsrv.app import open_keys
from authsrv.logs import configure_logging, get_logger
from authsrv.metrics import Metrics
from authsrv.model import CardState, HoldState, card_account
from authsrv.processor import Outcome, Pending, Processor, build_response, legacy_dup_key
from authsrv.store import DBS, DUP_KEYS_TIME_FIRST, Ledger, LedgerStore, check_ledger
from protocol.cards import luhn_check_digit
from protocol.messages import encode_message
from protocol.tlv import decode_balances, encode_tlv
from simulators.terminal import as_repeat, build_request
from tests.helpers import gift_product, provision, read_pans

NOW = datetime(2026, 11, 22, 10, 30, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
MAP_SIZE_BYTES = 64 * 1024 * 1024
SKEW_MAX_S = 600  # the default server.skew_max_s
DUP_WINDOW_S = 7_200  # small, so a row can pass it; at least twice the skew (config rule)
HOLD_EXPIRY_S = 1_800  # shorter than the duplicate window, as with the defaults
TOLERANCE_BP = 1_000  # product TOL: a completion may exceed its hold by 10 %
FULL = 50_000  # 500.00 EUR, what most rows activate card A with
ACTIVE = CardState.ACTIVE
ISSUED = CardState.ISSUED
CLOSED = CardState.CLOSED
OPEN = HoldState.OPEN
COMPLETED = HoldState.COMPLETED
RELEASED = HoldState.RELEASED
EXPIRED = HoldState.EXPIRED
# Fields of an answer that come from the decision (the rest are echoes of the request).
DECIDED = ("4", "37", "38", "39", "44", "54", "63")
# Fields every answer (a replay too) takes from the request it answers (DESIGN §3, §5).
ECHOES = ("2", "3", "7", "11", "12", "13", "32", "41", "42", "49", "90", "95")
PA = encode_tlv({"PA": "1"})
WRONG_FIELD_3 = "003 not the original's"
WRONG_FIELD_4 = "004 not the original's"
WRONG_FIELD_2 = "002 not the original's"


# -- steps ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Send:
    """One request and what must follow it.

    Request: ``op`` with ``amount`` on ``card`` (A, B, C: GIFT cards, issued; T: a TOL card with
    a completion tolerance; U: a valid number the host never issued), built at the host's clock
    plus ``sent_s`` (field 7). ``original`` names an earlier step whose fields the request refers
    to in field 90 (a reversal's amount defaults to the original's field 4); ``final`` adds field
    95. ``resend`` sends an earlier step's fields again instead. ``repeat`` turns 0220/0400/0420
    into 0221/0401/0421; ``change`` replaces fields last (``None`` removes one, ``@X`` is the
    number of card X, ``@tag.N`` field N of an earlier step). ``send=False`` only builds the
    request (a later step sends it or names it as the original).

    Expectations, checked after the step's batch has committed: ``rc``; ``approved`` (the
    decision's approved amount, field 4 of the answer); ``ledger``/``available``/``held``/
    ``state``/``holds`` of ``card`` in the store; ``balances`` (ledger, available) in the answer's
    field 54; ``exceptions`` recorded by this step; ``field44``; ``replay``; ``same_as``: the
    decided fields of the answer equal those of that earlier step's answer; ``journal``: transfers
    added (single-step batches); ``still``: the store is byte for byte unchanged; ``dupes``: the
    number of duplicate records kept.
    """

    tag: str = ""
    op: str = "redeem"
    amount: int | None = None
    card: str = "A"
    partial: bool = False
    original: str | None = None
    final: int | None = None
    resend: str | None = None
    repeat: bool = False
    change: Mapping[str, str | None] = field(default_factory=dict)
    terminal: str = "T0000001"
    store: str = "S0001"
    sent_s: int = 0
    send: bool = True

    rc: str
    approved: int | None = None
    ledger: int | None = None
    available: int | None = None
    held: int | None = None
    state: CardState | None = None
    holds: tuple[HoldState, ...] | None = None
    balances: tuple[int, int] | None = None
    exceptions: tuple[str, ...] = ()
    field44: str | None = None
    replay: bool = False
    same_as: str | None = None
    journal: int | None = None
    still: bool = False
    dupes: int | None = None


@dataclass(frozen=True)
class Batch:
    """Several requests in ONE ``process_batch`` (one write transaction); ``journal`` is the
    number of transfers the whole batch adds."""

    steps: tuple[Send, ...]
    journal: int | None = None


@dataclass(frozen=True)
class Advance:
    """Move the host's clock forward."""

    seconds: int


@dataclass(frozen=True)
class Sweep:
    """``Processor.sweep()``: (holds expired, duplicate records pruned)."""

    expired: int
    pruned: int
    still: bool = False
    dupes: int | None = None


@dataclass(frozen=True, kw_only=True)
class Check:
    """The state of one card (and the duplicate records) in the store, between steps."""

    card: str = "A"
    ledger: int | None = None
    available: int | None = None
    held: int | None = None
    state: CardState | None = None
    holds: tuple[HoldState, ...] | None = None
    dupes: int | None = None


Step = Send | Batch | Advance | Sweep | Check


@dataclass(frozen=True)
class Row:
    steps: tuple[Step, ...]
    dup_window_s: int = DUP_WINDOW_S
    hold_expiry_s: int = HOLD_EXPIRY_S
    sweep_batch_max: int = 1000


def row(
    row_id: str,
    *steps: Step,
    dup_window_s: int = DUP_WINDOW_S,
    hold_expiry_s: int = HOLD_EXPIRY_S,
    sweep_batch_max: int = 1000,
) -> object:
    return pytest.param(Row(steps, dup_window_s, hold_expiry_s, sweep_batch_max), id=row_id)


def act(card: str = "A", amount: int = FULL, tag: str = "") -> Send:
    """Sell (activate) ``card`` with ``amount``: the usual first step of a row."""
    return Send(
        tag=tag,
        op="activate",
        card=card,
        amount=amount,
        rc="00",
        approved=amount,
        ledger=amount,
        available=amount,
        state=ACTIVE,
        journal=1,
    )


def later(tag: str, op: str, amount: int | None = None, card: str = "A") -> Send:
    """A request built now and sent later (or never): its reversal may come first."""
    return Send(tag=tag, op=op, amount=amount, card=card, send=False, rc="")


def redeem(tag: str, amount: int, after: int, card: str = "A") -> Send:
    """An approved redeem leaving ``after`` on the card (no holds)."""
    return Send(
        tag=tag,
        op="redeem",
        amount=amount,
        card=card,
        rc="00",
        approved=amount,
        ledger=after,
        available=after,
        journal=1,
    )


def preauth(tag: str, amount: int, ledger: int = FULL, card: str = "A") -> Send:
    """An approved 0100 hold of ``amount`` on a card without other holds."""
    return Send(
        tag=tag,
        op="preauth",
        amount=amount,
        card=card,
        rc="00",
        approved=amount,
        ledger=ledger,
        available=ledger - amount,
        held=amount,
        holds=(OPEN,),
        journal=0,
    )


# -- the table ------------------------------------------------------------------------------

CHANGED_CONTENT: list[tuple[str, str, str]] = [
    ("2", "@B", "pan"),
    ("3", "200000", "processing-code"),
    ("4", "000000013000", "amount"),
    ("42", "S0002".ljust(15), "store"),
    ("48", PA, "partial-approval-tag"),
    ("49", "840", "currency"),
]
NOT_CONTENT: list[tuple[str, str, str]] = [
    ("52", "0123456789ABCDEF", "pin-block"),
    ("64", "FEDCBA9876543210", "mac"),
    ("48", encode_tlv({"KS": "FFFF9876543210E00001"}), "ksn-tag"),
    ("12", "235959", "local-time"),
    ("22", "051", "entry-mode"),
    ("32", "0", "acquirer-zero-pads-like-absent"),
    ("48", encode_tlv({"PA": "0"}), "partial-approval-tag-0-same-as-absent"),
]

# fmt: off
ROWS = [
    # -- duplicates: same key, same content -> replay of the stored decision ---------------
    row("dup-same-content-replays-the-original-answer",
        act(),
        redeem("r", 12_000, 38_000),
        redeem("", 5_000, 33_000),
        Send(resend="r", rc="00", approved=12_000, balances=(38_000, 38_000), ledger=33_000,
             replay=True, same_as="r", still=True)),
    row("dup-replay-of-a-decline-is-not-decided-again",
        act(),
        Send(tag="r", amount=60_000, rc="51", ledger=FULL, balances=(FULL, FULL), journal=0),
        Send(op="load", amount=20_000, rc="00", approved=20_000, ledger=70_000, journal=1),
        Send(resend="r", rc="51", ledger=70_000, balances=(FULL, FULL), replay=True,
             same_as="r", still=True)),
    row("dup-replay-of-a-partial-approval",
        act(),
        Send(tag="r", amount=60_000, partial=True, rc="10", approved=FULL, ledger=0,
             journal=1),
        Send(resend="r", rc="10", approved=FULL, ledger=0, replay=True, same_as="r",
             still=True)),
    row("dup-replay-after-the-skew-within-the-window",
        act(),
        redeem("r", 12_000, 38_000),
        Advance(SKEW_MAX_S + 300),
        Send(resend="r", rc="00", approved=12_000, ledger=38_000, replay=True, same_as="r",
             still=True)),
    *[
        row(f"dup-changed-{name}-94-stores-nothing",
            act(), act("B"),
            redeem("r", 12_000, 38_000),
            Send(resend="r", change={key: value}, rc="94", ledger=38_000, still=True),
            Send(resend="r", rc="00", approved=12_000, ledger=38_000, replay=True,
                 same_as="r", still=True))
        for key, value, name in CHANGED_CONTENT
    ],
    *[
        row(f"dup-changed-{name}-not-content-replays",
            act(),
            redeem("r", 12_000, 38_000),
            Send(resend="r", change={key: value}, rc="00", approved=12_000, ledger=38_000,
                 replay=True, same_as="r", still=True))
        for key, value, name in NOT_CONTENT
    ],
    row("dup-reversal-changed-field-95-94",
        act(),
        redeem("r", 12_000, 38_000),
        Send(tag="v", op="reverse", original="r", final=2_000, rc="00", ledger=48_000,
             journal=1),
        Send(resend="v", change={"95": f"{4_000:012d}" + "0" * 30}, rc="94", ledger=48_000,
             still=True)),
    row("dup-reversal-changed-field-90-94",
        act(),
        redeem("r", 12_000, 38_000),
        redeem("r2", 12_000, 26_000),
        Send(tag="v", op="reverse", original="r", rc="00", ledger=38_000, journal=1),
        Send(tag="w", op="reverse", original="r2", send=False, rc=""),
        Send(resend="v", change={"90": "@w.90"}, rc="94", ledger=38_000, still=True)),
    row("dup-same-stan-and-time-other-terminal-is-a-new-request",
        act(),
        redeem("r", 12_000, 38_000),
        Send(resend="r", change={"41": "T0000002"}, rc="00", approved=12_000,
             ledger=26_000, journal=1)),
    row("dup-same-stan-and-time-other-acquirer-is-a-new-request",
        act(),
        redeem("r", 12_000, 38_000),
        Send(resend="r", change={"32": "12345"}, rc="00", approved=12_000, ledger=26_000,
             journal=1)),
    row("dup-same-stan-and-time-other-mti-class-is-a-new-request",
        act(),
        redeem("r", 12_000, 38_000),
        Send(resend="r", change={"t": "0100"}, rc="00", approved=12_000, ledger=38_000,
             available=26_000, held=12_000, journal=0)),
    row("dup-format-decline-30-is-not-remembered-the-corrected-one-is-processed",
        act(),
        redeem("r", 12_000, 38_000),
        Send(tag="v", op="reverse", original="r", amount=11_000, rc="30",
             field44=WRONG_FIELD_4, ledger=38_000, journal=0),
        Send(resend="v", change={"4": f"{12_000:012d}"}, rc="00", ledger=FULL, journal=1)),
    # -- repeats: 0221/0401/0421 after the original replay, before it they are the original --
    row("repeat-0221-after-0220-replays",
        act(),
        Send(tag="c", op="advice", amount=3_000, rc="00", approved=3_000, ledger=47_000,
             journal=1),
        Send(resend="c", repeat=True, rc="00", approved=3_000, ledger=47_000, replay=True,
             same_as="c", still=True)),
    row("repeat-0401-after-0400-replays",
        act(),
        redeem("r", 12_000, 38_000),
        Send(tag="v", op="reverse", original="r", rc="00", ledger=FULL, journal=1),
        Send(resend="v", repeat=True, rc="00", ledger=FULL, replay=True, same_as="v",
             still=True)),
    row("repeat-0421-after-0420-replays",
        act(),
        redeem("r", 12_000, 38_000),
        Send(tag="v", op="reverse-advice", original="r", rc="00", ledger=FULL, journal=1),
        Send(resend="v", repeat=True, rc="00", ledger=FULL, replay=True, same_as="v",
             still=True)),
    row("repeat-0221-first-is-the-original-then-0220-replays",
        act(),
        Send(tag="c", op="advice", amount=3_000, repeat=True, rc="00", approved=3_000,
             ledger=47_000, journal=1),
        Send(resend="c", change={"t": "0220"}, rc="00", approved=3_000, ledger=47_000,
             replay=True, same_as="c", still=True),
        Send(op="reverse", original="c", rc="00", ledger=FULL, journal=1)),
    row("repeat-0401-first-is-the-original-then-0400-replays",
        act(),
        redeem("r", 12_000, 38_000),
        Send(tag="v", op="reverse", original="r", repeat=True, rc="00", ledger=FULL,
             journal=1),
        Send(resend="v", change={"t": "0400"}, rc="00", ledger=FULL, replay=True,
             same_as="v", still=True)),
    row("repeat-0421-first-is-the-original-then-0420-replays",
        act(),
        redeem("r", 12_000, 38_000),
        Send(tag="v", op="reverse-advice", original="r", repeat=True, rc="00", ledger=FULL,
             journal=1),
        Send(resend="v", change={"t": "0420"}, rc="00", ledger=FULL, replay=True,
             same_as="v", still=True)),
    row("repeat-0221-completion-first-completes-the-hold",
        act(),
        preauth("p", 10_000),
        Send(tag="c", op="complete", original="p", amount=8_000, repeat=True, rc="00",
             approved=8_000, ledger=42_000, available=42_000, held=0, holds=(COMPLETED,),
             journal=1),
        Send(resend="c", change={"t": "0220"}, rc="00", approved=8_000, ledger=42_000,
             replay=True, same_as="c", still=True)),
    # -- one batch: each request sees the ones before it ---------------------------------
    row("batch-two-redeems-cannot-spend-the-same-money",
        act(),
        Batch((Send(amount=30_000, rc="00", approved=30_000, balances=(20_000, 20_000)),
               Send(amount=30_000, rc="51", balances=(20_000, 20_000), ledger=20_000,
                    available=20_000)),
              journal=1)),
    row("batch-second-redeem-with-partial-gets-the-rest-10",
        act(),
        Batch((Send(amount=30_000, rc="00", approved=30_000),
               Send(amount=30_000, partial=True, rc="10", approved=20_000, balances=(0, 0),
                    ledger=0, available=0)),
              journal=2)),
    row("batch-a-hold-counts-for-the-redeem-after-it",
        act(),
        Batch((Send(op="preauth", amount=30_000, rc="00", approved=30_000),
               Send(amount=30_000, rc="51", balances=(FULL, 20_000), ledger=FULL,
                    available=20_000, held=30_000)),
              journal=0)),
    row("batch-original-and-its-retransmission",
        act(),
        Batch((Send(tag="r", amount=12_000, rc="00", approved=12_000),
               Send(resend="r", rc="00", approved=12_000, replay=True, same_as="r",
                    ledger=38_000)),
              journal=1)),
    row("batch-original-and-a-changed-copy-94",
        act(),
        Batch((Send(tag="r", amount=12_000, rc="00", approved=12_000),
               Send(resend="r", change={"4": f"{13_000:012d}"}, rc="94", ledger=38_000)),
              journal=1)),
    row("batch-original-and-its-reversal",
        act(),
        Batch((Send(tag="r", amount=12_000, rc="00", approved=12_000,
                    balances=(38_000, 38_000)),
               Send(op="reverse", original="r", rc="00", balances=(FULL, FULL)),
               Send(op="reverse", original="r", rc="00", ledger=FULL)),
              journal=2)),
    row("batch-reversal-before-its-original",
        act(),
        later("h", "redeem", 12_000),
        Batch((Send(op="reverse", original="h", rc="25"),
               Send(resend="h", rc="05", ledger=FULL)),
              journal=0)),
    # -- field 7 skew: 12 for 0100/0200 only ----------------------------------------------
    row("skew-0200-beyond-the-skew-12",
        act(),
        Send(amount=1_000, sent_s=-SKEW_MAX_S - 1, rc="12", ledger=FULL, journal=0),
        Send(amount=1_000, sent_s=SKEW_MAX_S + 1, rc="12", ledger=FULL, journal=0),
        Send(op="balance", sent_s=-SKEW_MAX_S - 1, rc="12", journal=0),
        Send(amount=1_000, sent_s=-SKEW_MAX_S, rc="00", approved=1_000, ledger=49_000,
             journal=1)),
    row("skew-0100-beyond-the-skew-12-places-no-hold",
        act(),
        Send(op="preauth", amount=1_000, sent_s=-SKEW_MAX_S - 1, rc="12", ledger=FULL,
             available=FULL, held=0, holds=(), journal=0),
        Send(op="inquiry", sent_s=SKEW_MAX_S + 1, rc="12", journal=0)),
    row("skew-not-checked-for-0400-0420-0220",
        act(),
        redeem("r", 10_000, 40_000),
        redeem("r2", 10_000, 30_000),
        preauth("p", 5_000, 30_000),
        Send(op="reverse", original="r", sent_s=-3_600, rc="00", ledger=40_000, journal=1),
        Send(op="reverse-advice", original="r2", sent_s=-3_600, rc="00", ledger=FULL,
             journal=1),
        Send(op="complete", original="p", amount=5_000, sent_s=-3_600, rc="00",
             approved=5_000, ledger=45_000, held=0, journal=1),
        Send(op="advice", amount=2_000, sent_s=3_600, rc="00", approved=2_000,
             ledger=43_000, journal=1)),
    # -- reversals of debits ------------------------------------------------------------------
    row("reverse-approved-redeem-restores-once",
        act(),
        redeem("r", 12_000, 38_000),
        Send(op="reverse", original="r", rc="00", ledger=FULL, available=FULL,
             balances=(FULL, FULL), journal=1),
        Send(op="reverse", original="r", rc="00", ledger=FULL, journal=0),
        Send(op="reverse-advice", original="r", rc="00", ledger=FULL, journal=0)),
    row("reverse-partial-approval-by-requested-amount-restores-the-approved",
        act(),
        redeem("", 10_000, 40_000),
        Send(tag="r", amount=60_000, partial=True, rc="10", approved=40_000, ledger=0,
             journal=1),
        Send(op="reverse", original="r", amount=60_000, rc="00", ledger=40_000, journal=1),
        Send(op="reverse", original="r", amount=40_000, rc="00", ledger=40_000, journal=0)),
    row("reverse-partial-approval-by-approved-amount",
        act(),
        redeem("", 10_000, 40_000),
        Send(tag="r", amount=60_000, partial=True, rc="10", approved=40_000, ledger=0,
             journal=1),
        Send(op="reverse", original="r", amount=40_000, rc="00", ledger=40_000, journal=1)),
    row("reverse-field-95-restores-original-minus-final-then-the-rest",
        act(),
        redeem("r", 10_000, 40_000),
        Send(op="reverse", original="r", final=6_000, rc="00", ledger=44_000, journal=1),
        Send(op="reverse", original="r", rc="00", ledger=FULL, journal=1),
        Send(op="reverse", original="r", final=2_000, rc="00", ledger=FULL, journal=0)),
    row("reverse-field-95-final-not-below-the-original-moves-nothing",
        act(),
        redeem("r", 10_000, 40_000),
        Send(op="reverse", original="r", final=10_000, rc="00", ledger=40_000, journal=0),
        Send(op="reverse", original="r", final=12_000, rc="00", ledger=40_000, journal=0)),
    # Field 95 is the amount the transaction finally came to, not a delta: a second reversal
    # naming the same final amount has nothing left to restore.
    row("reverse-field-95-twice-with-the-same-final-restores-once",
        act(),
        redeem("r", 10_000, 40_000),
        Send(op="reverse", original="r", final=6_000, rc="00", ledger=44_000, journal=1),
        Send(op="reverse", original="r", final=6_000, rc="00", ledger=44_000, journal=0),
        Send(op="reverse", original="r", final=2_000, rc="00", ledger=48_000, journal=1)),
    row("reverse-of-a-declined-original-00-moves-nothing",
        act(),
        Send(tag="r", amount=60_000, rc="51", ledger=FULL, journal=0),
        Send(op="reverse", original="r", rc="00", ledger=FULL, journal=0),
        Send(op="reverse-advice", original="r", rc="00", ledger=FULL, journal=0)),
    row("reverse-field-3-not-the-originals-30",
        act(),
        redeem("r", 12_000, 38_000),
        Send(op="reverse", original="r", change={"3": "200000"}, rc="30",
             field44=WRONG_FIELD_3, ledger=38_000, journal=0),
        Send(op="reverse-advice", original="r", change={"3": "010000"}, rc="30",
             field44=WRONG_FIELD_3, ledger=38_000, journal=0)),
    row("reverse-field-4-neither-requested-nor-approved-30",
        act(),
        redeem("r", 12_000, 38_000),
        Send(op="reverse", original="r", amount=11_999, rc="30", field44=WRONG_FIELD_4,
             ledger=38_000, journal=0),
        Send(op="reverse-advice", original="r", amount=12_001, rc="30",
             field44=WRONG_FIELD_4, ledger=38_000, journal=0)),
    row("reverse-with-another-card-30",
        act(), act("B"),
        redeem("r", 12_000, 38_000),
        Send(op="reverse", original="r", card="B", rc="30", field44=WRONG_FIELD_2,
             ledger=FULL, journal=0),
        Check(ledger=38_000)),
    row("reverse-of-a-reversal-12",
        act(),
        redeem("r", 12_000, 38_000),
        Send(tag="v", op="reverse", original="r", rc="00", ledger=FULL, journal=1),
        Send(op="reverse", original="v", rc="12", ledger=FULL, journal=0)),
    row("reverse-from-another-terminal-does-not-find-the-original-25",
        act(),
        redeem("r", 12_000, 38_000),
        Send(op="reverse", original="r", terminal="T0000002", rc="25", ledger=38_000,
             journal=0),
        Send(op="reverse", original="r", rc="00", ledger=FULL, journal=1)),
    row("reverse-finds-an-original-sent-with-an-acquirer-id",
        act(),
        Send(tag="r", amount=12_000, change={"32": "12345"}, rc="00", approved=12_000,
             ledger=38_000, journal=1),
        Send(tag="r0", resend="r", change={"32": None}, send=False, rc=""),
        Send(op="reverse", original="r0", rc="25", ledger=38_000, journal=0),
        Send(op="reverse", original="r", rc="00", ledger=FULL, journal=1)),
    row("reverse-before-original-0400-25-tombstone-late-original-05",
        act(),
        later("h", "redeem", 12_000),
        Send(tag="v", op="reverse", original="h", rc="25", ledger=FULL, journal=0, dupes=3),
        Send(resend="h", rc="05", ledger=FULL, still=True),
        Send(resend="h", rc="05", ledger=FULL, still=True),
        Send(resend="v", repeat=True, rc="25", replay=True, same_as="v", still=True),
        Send(op="reverse", original="h", rc="25", ledger=FULL, journal=0)),
    row("reverse-before-original-0420-00-tombstone-late-original-05",
        act(),
        later("h", "redeem", 12_000),
        Send(op="reverse-advice", original="h", rc="00", ledger=FULL, journal=0, dupes=3,
             exceptions=("unmatched_reversal",)),
        Send(resend="h", rc="05", ledger=FULL, still=True)),
    row("reverse-before-original-0420-of-an-advice-late-advice-05",
        act(),
        later("h", "advice", 3_000),
        Send(op="reverse-advice", original="h", rc="00", ledger=FULL, journal=0,
             exceptions=("unmatched_reversal",)),
        Send(resend="h", rc="05", ledger=FULL, still=True)),
    # -- reversals of credits -----------------------------------------------------------------
    row("reverse-load",
        act("A", 10_000),
        Send(tag="l", op="load", amount=20_000, rc="00", approved=20_000, ledger=30_000,
             journal=1),
        Send(op="reverse", original="l", rc="00", ledger=10_000, state=ACTIVE, journal=1),
        Send(op="reverse", original="l", rc="00", ledger=10_000, journal=0)),
    row("reverse-refund",
        act("A", 10_000),
        Send(tag="f", op="refund", amount=2_000, rc="00", approved=2_000, ledger=12_000,
             journal=1),
        Send(op="reverse-advice", original="f", rc="00", ledger=10_000, journal=1)),
    row("reverse-whole-activation-returns-the-card-to-issued",
        act("A", 10_000, tag="a"),
        Send(op="reverse", original="a", rc="00", ledger=0, state=ISSUED, journal=1),
        Send(amount=100, rc="78", ledger=0, journal=0),
        act("A", 20_000)),
    row("reverse-load-spent-since-0400-57",
        act("A", 10_000),
        Send(tag="l", op="load", amount=20_000, rc="00", approved=20_000, ledger=30_000,
             journal=1),
        redeem("", 25_000, 5_000),
        Send(op="reverse", original="l", rc="57", ledger=5_000, journal=0)),
    row("reverse-load-held-since-0400-57",
        act("A", 10_000),
        Send(tag="l", op="load", amount=20_000, rc="00", approved=20_000, ledger=30_000,
             journal=1),
        preauth("", 25_000, 30_000),
        Send(op="reverse", original="l", rc="57", ledger=30_000, available=5_000, journal=0)),
    row("reverse-load-spent-since-0420-below-zero-recorded",
        act("A", 10_000),
        Send(tag="l", op="load", amount=20_000, rc="00", approved=20_000, ledger=30_000,
             journal=1),
        redeem("", 25_000, 5_000),
        Send(op="reverse-advice", original="l", rc="00", ledger=-15_000, available=-15_000,
             balances=(-15_000, -15_000), exceptions=("below_zero",), journal=1)),
    row("reverse-activation-spent-since-0400-57-card-stays-active",
        act("A", 10_000, tag="a"),
        redeem("", 1_000, 9_000),
        Send(op="reverse", original="a", rc="57", ledger=9_000, state=ACTIVE, journal=0)),
    row("reverse-activation-spent-since-0420-below-zero-card-stays-active",
        act("A", 10_000, tag="a"),
        redeem("", 1_000, 9_000),
        Send(op="reverse-advice", original="a", rc="00", ledger=-1_000, state=ACTIVE,
             exceptions=("below_zero",), journal=1)),
    # -- cash-out -------------------------------------------------------------------------
    row("reverse-cashout-reopens-the-card-with-its-balance",
        act("A", 10_000),
        Send(tag="x", op="cashout", rc="00", approved=10_000, ledger=0, state=CLOSED,
             journal=1),
        Send(amount=100, rc="62", ledger=0, journal=0),
        Send(op="reverse", original="x", rc="00", ledger=10_000, available=10_000,
             state=ACTIVE, journal=1),
        redeem("", 100, 9_900)),
    row("reverse-cashout-by-paid-amount-advice-reopens-the-card",
        act("A", 10_000),
        Send(tag="x", op="cashout", rc="00", approved=10_000, ledger=0, state=CLOSED,
             journal=1),
        Send(op="reverse-advice", original="x", amount=10_000, rc="00", ledger=10_000,
             state=ACTIVE, journal=1)),
    # DESIGN §5 "Reversing a cash-out reopens the card", also when it paid out nothing.
    row("reverse-cashout-of-an-empty-card-reopens-it",
        act("A", 10_000),
        redeem("", 10_000, 0),
        Send(tag="x", op="cashout", rc="00", approved=0, ledger=0, state=CLOSED, journal=0),
        Send(op="reverse", original="x", rc="00", ledger=0, state=ACTIVE, journal=0)),
    # -- holds and completions ------------------------------------------------------------
    row("preauth-places-a-hold-ledger-unchanged-available-down",
        act(),
        preauth("p", 10_000),
        Send(op="balance", rc="00", approved=0, balances=(FULL, 40_000), journal=0),
        Send(amount=45_000, rc="51", balances=(FULL, 40_000), held=10_000, journal=0),
        Send(op="preauth", amount=5_000, rc="00", approved=5_000, ledger=FULL,
             available=35_000, held=15_000, holds=(OPEN, OPEN), journal=0)),
    row("preauth-partial-holds-what-is-available-10",
        act(),
        Send(op="preauth", amount=60_000, partial=True, rc="10", approved=FULL, ledger=FULL,
             available=0, held=FULL, holds=(OPEN,), journal=0)),
    row("completion-within-the-hold-posts-and-closes-it",
        act(),
        preauth("p", 10_000),
        Send(op="complete", original="p", amount=8_000, rc="00", approved=8_000,
             ledger=42_000, available=42_000, held=0, holds=(COMPLETED,), journal=1)),
    row("completion-at-the-hold",
        act(),
        preauth("p", 10_000),
        Send(op="complete", original="p", amount=10_000, rc="00", approved=10_000,
             ledger=40_000, available=40_000, held=0, holds=(COMPLETED,), journal=1)),
    row("completion-within-product-tolerance-no-exception",
        act("T"),
        preauth("p", 10_000, card="T"),
        Send(op="complete", original="p", card="T", amount=11_000, rc="00", approved=11_000,
             ledger=39_000, available=39_000, held=0, holds=(COMPLETED,), journal=1)),
    row("completion-above-product-tolerance-forced",
        act("T"),
        preauth("p", 10_000, card="T"),
        Send(op="complete", original="p", card="T", amount=11_001, rc="00", approved=11_001,
             ledger=38_999, held=0, holds=(COMPLETED,), exceptions=("forced_completion",),
             journal=1)),
    row("completion-above-the-hold-without-tolerance-forced",
        act(),
        preauth("p", 10_000),
        Send(op="complete", original="p", amount=10_001, rc="00", approved=10_001,
             ledger=39_999, available=39_999, held=0, holds=(COMPLETED,),
             exceptions=("forced_completion",), journal=1)),
    row("completion-without-a-hold-unknown-original-forced",
        act(),
        later("p", "preauth", 10_000),
        Send(op="complete", original="p", amount=3_000, rc="00", approved=3_000,
             ledger=47_000, held=0, holds=(), exceptions=("forced_completion",), journal=1)),
    row("completion-of-a-declined-preauth-forced",
        act(),
        Send(tag="p", op="preauth", amount=60_000, rc="51", held=0, journal=0),
        Send(op="complete", original="p", amount=3_000, rc="00", approved=3_000,
             ledger=47_000, exceptions=("forced_completion",), journal=1)),
    row("completion-twice-second-is-forced",
        act(),
        preauth("p", 10_000),
        Send(op="complete", original="p", amount=8_000, rc="00", approved=8_000,
             ledger=42_000, journal=1),
        Send(op="complete", original="p", amount=8_000, rc="00", approved=8_000,
             ledger=34_000, exceptions=("forced_completion",), journal=1)),
    row("completion-forced-on-an-empty-card-below-zero",
        act("A", 10_000),
        redeem("", 10_000, 0),
        later("p", "preauth", 5_000),
        Send(op="complete", original="p", amount=3_000, rc="00", approved=3_000,
             ledger=-3_000, exceptions=("forced_completion", "below_zero"), journal=1)),
    row("advice-posts-in-full",
        act(),
        Send(op="advice", amount=3_000, rc="00", approved=3_000, ledger=47_000,
             available=47_000, balances=(47_000, 47_000), journal=1)),
    row("advice-on-an-empty-card-posts-below-zero-recorded",
        act("A", 10_000),
        redeem("", 10_000, 0),
        Send(op="advice", amount=3_000, rc="00", approved=3_000, ledger=-3_000,
             available=-3_000, exceptions=("below_zero",), journal=1)),
    row("advice-on-a-closed-card-posts-below-zero-recorded",
        act("A", 10_000),
        Send(op="cashout", rc="00", approved=10_000, ledger=0, state=CLOSED, journal=1),
        Send(op="advice", amount=2_000, rc="00", approved=2_000, ledger=-2_000, state=CLOSED,
             exceptions=("below_zero",), journal=1)),
    row("advice-for-an-unknown-card-00-recorded",
        Send(op="advice", card="U", amount=3_000, rc="00", exceptions=("unknown_card",),
             journal=0)),
    row("reverse-open-hold-releases-it",
        act(),
        preauth("p", 10_000),
        Send(op="reverse", original="p", rc="00", ledger=FULL, available=FULL,
             balances=(FULL, FULL), held=0, holds=(RELEASED,), journal=0),
        Send(op="reverse", original="p", rc="00", ledger=FULL, held=0, holds=(RELEASED,),
             journal=0),
        Send(op="complete", original="p", amount=5_000, rc="00", approved=5_000,
             ledger=45_000, held=0, holds=(RELEASED,), exceptions=("forced_completion",),
             journal=1)),
    row("reverse-advice-open-hold-releases-it",
        act(),
        preauth("p", 10_000),
        Send(op="reverse-advice", original="p", rc="00", ledger=FULL, available=FULL,
             held=0, holds=(RELEASED,), journal=0)),
    row("reverse-preauth-with-field-95-keeps-the-hold-at-the-final-amount",
        act(),
        preauth("p", 10_000),
        Send(op="reverse", original="p", final=6_000, rc="00", ledger=FULL, available=44_000,
             balances=(FULL, 44_000), held=6_000, holds=(OPEN,), journal=0),
        Send(op="reverse", original="p", final=6_000, rc="00", held=6_000, journal=0),
        Send(op="complete", original="p", amount=6_000, rc="00", approved=6_000,
             ledger=44_000, available=44_000, held=0, holds=(COMPLETED,), journal=1)),
    row("reverse-preauth-with-field-95-then-in-full-releases-the-rest",
        act(),
        preauth("p", 10_000),
        Send(op="reverse", original="p", final=6_000, rc="00", held=6_000, journal=0),
        Send(op="reverse", original="p", rc="00", ledger=FULL, available=FULL, held=0,
             holds=(RELEASED,), journal=0),
        Send(op="reverse", original="p", rc="00", held=0, journal=0)),
    row("reverse-completed-hold-0400-12",
        act(),
        preauth("p", 10_000),
        Send(op="complete", original="p", amount=8_000, rc="00", approved=8_000,
             ledger=42_000, journal=1),
        Send(op="reverse", original="p", rc="12", ledger=42_000, available=42_000, held=0,
             holds=(COMPLETED,), journal=0)),
    row("reverse-completed-hold-0420-00-nothing-moves",
        act(),
        preauth("p", 10_000),
        Send(op="complete", original="p", amount=8_000, rc="00", approved=8_000,
             ledger=42_000, journal=1),
        Send(op="reverse-advice", original="p", rc="00", ledger=42_000, available=42_000,
             held=0, holds=(COMPLETED,), journal=0)),
    row("reverse-completion-credits-and-does-not-reopen-the-hold",
        act(),
        preauth("p", 10_000),
        Send(tag="c", op="complete", original="p", amount=8_000, rc="00", approved=8_000,
             ledger=42_000, journal=1),
        Send(op="reverse", original="c", rc="00", ledger=FULL, available=FULL, held=0,
             holds=(COMPLETED,), journal=1),
        Send(op="reverse", original="p", rc="12", ledger=FULL, held=0, journal=0)),
    row("expired-hold-released-by-the-sweep-exactly-once",
        act(),
        preauth("p", 10_000),
        Advance(HOLD_EXPIRY_S - 1),
        Sweep(0, 0),
        Check(held=10_000, holds=(OPEN,)),
        Advance(1),
        Sweep(1, 0),
        Check(ledger=FULL, available=FULL, held=0, holds=(EXPIRED,)),
        Sweep(0, 0, still=True),
        Send(op="reverse", original="p", rc="00", ledger=FULL, available=FULL, held=0,
             holds=(EXPIRED,), journal=0),
        Send(op="complete", original="p", amount=4_000, rc="00", approved=4_000,
             ledger=46_000, held=0, exceptions=("forced_completion",), journal=1)),
    row("hold-past-its-expiry-is-gone-before-the-sweep-closes-it",
        act(),
        preauth("p", 10_000),
        Send(tag="p2", op="preauth", amount=5_000, rc="00", approved=5_000, held=15_000,
             journal=0),
        Advance(HOLD_EXPIRY_S),
        Send(op="reverse", original="p", rc="00", ledger=FULL, journal=0),
        Send(op="complete", original="p2", amount=4_000, rc="00", approved=4_000,
             ledger=46_000, exceptions=("forced_completion",), journal=1),
        # The first batch after the expiry closed both holds already.
        Sweep(0, 0),
        Check(ledger=46_000, available=46_000, held=0, holds=(EXPIRED, EXPIRED))),
    # DESIGN §4 "Available = ledger balance - open holds. Holds expire.": a hold past its expiry
    # no longer reserves money, whether or not the sweep has closed it yet.
    row("hold-past-its-expiry-no-longer-counts-against-available",
        act(),
        preauth("p", 10_000),
        Advance(HOLD_EXPIRY_S),
        Send(op="balance", rc="00", approved=0, balances=(FULL, FULL), journal=0),
        Send(amount=45_000, rc="00", approved=45_000, ledger=5_000, journal=1),
        Sweep(0, 0),  # the batch of the balance inquiry released it
        Check(ledger=5_000, available=5_000, held=0, holds=(EXPIRED,))),
    row("sweep-expires-holds-in-bounded-steps",
        act(),
        preauth("", 1_000),
        Send(op="preauth", amount=1_000, rc="00", approved=1_000, held=2_000),
        Send(op="preauth", amount=1_000, rc="00", approved=1_000, held=3_000),
        Advance(HOLD_EXPIRY_S),
        Sweep(2, 0),
        Check(held=1_000, holds=(EXPIRED, EXPIRED, OPEN)),
        Sweep(1, 0),
        Check(held=0, available=FULL, holds=(EXPIRED, EXPIRED, EXPIRED)),
        Sweep(0, 0, still=True),
        sweep_batch_max=2),
    # -- pruning the duplicate records --------------------------------------------------
    row("prune-after-the-window-then-an-old-retransmission-is-refused-12",
        act(),
        redeem("r", 12_000, 38_000),
        Advance(DUP_WINDOW_S),
        Sweep(0, 0, dupes=2),
        Send(resend="r", rc="00", approved=12_000, replay=True, same_as="r", still=True),
        Advance(1),
        Sweep(0, 2, dupes=0),
        Send(resend="r", rc="12", ledger=38_000, journal=0, dupes=1),
        Send(resend="r", rc="12", ledger=38_000, replay=True, still=True)),
    row("prune-in-bounded-steps",
        act(),
        redeem("", 1_000, 49_000),
        redeem("", 1_000, 48_000),
        Advance(DUP_WINDOW_S + 1),
        Sweep(0, 2, dupes=1),
        Sweep(0, 1, dupes=0),
        Sweep(0, 0, still=True),
        sweep_batch_max=2),
    row("prune-tombstone-then-the-late-original-is-refused-12",
        act(),
        later("h", "redeem", 12_000),
        Send(op="reverse", original="h", rc="25", journal=0, dupes=3),
        Advance(DUP_WINDOW_S + 1),
        Sweep(0, 3, dupes=0),
        Send(resend="h", rc="12", ledger=FULL, journal=0)),
    row("prune-then-a-reversal-finds-no-original-25",
        act(),
        redeem("r", 12_000, 38_000),
        Advance(DUP_WINDOW_S + 1),
        Sweep(0, 2, dupes=0),
        Send(op="reverse", original="r", rc="25", ledger=38_000, journal=0)),
    # -- one batch with everything --------------------------------------------------------
    row("batch-mixing-everything-balances",
        act(), act("B", 20_000),
        redeem("r1", 10_000, 40_000),
        preauth("p1", 5_000, 40_000),
        later("h", "redeem", 1_000),
        Batch((
            Send(resend="r1", rc="00", approved=10_000, replay=True, same_as="r1"),
            Send(resend="r1", change={"4": f"{11_000:012d}"}, rc="94"),
            Send(amount=20_000, rc="00", approved=20_000, balances=(20_000, 15_000)),
            Send(amount=20_000, partial=True, rc="10", approved=15_000,
                 balances=(5_000, 0)),
            Send(op="complete", original="p1", amount=4_000, rc="00", approved=4_000,
                 balances=(1_000, 1_000)),
            Send(op="reverse", original="r1", rc="00", balances=(11_000, 11_000)),
            Send(op="reverse", original="h", rc="25"),
            Send(resend="h", rc="05"),
            Send(op="advice", card="B", amount=25_000, rc="00", approved=25_000,
                 balances=(-5_000, -5_000), exceptions=("below_zero",)),
            Send(op="load", card="B", amount=10_000, rc="00", approved=10_000,
                 balances=(5_000, 5_000)),
            Send(op="advice", card="U", amount=700, rc="00", exceptions=("unknown_card",)),
            Send(op="activate", card="C", amount=10_000, rc="00", approved=10_000),
            Send(tag="x", op="cashout", card="C", rc="00", approved=10_000),
            Send(op="reverse", original="x", card="C", rc="00", balances=(10_000, 10_000)),
            Send(op="preauth", card="C", amount=6_000, rc="00", approved=6_000),
            Send(card="C", amount=5_000, rc="51", balances=(10_000, 4_000)),
        ), journal=9),
        Check(ledger=11_000, available=11_000, held=0, holds=(COMPLETED,)),
        Check(card="B", ledger=5_000, available=5_000, held=0),
        Check(card="C", ledger=10_000, available=4_000, held=6_000, state=ACTIVE,
              holds=(OPEN,))),
]
# fmt: on


# -- the harness ----------------------------------------------------------------------------


@dataclass
class Clock:
    """The host's clock, moved by the row (the engine takes time as an input)."""

    now_ms: int = NOW_MS

    def __call__(self) -> int:
        return self.now_ms

    def at(self, offset_s: int = 0) -> datetime:
        return datetime.fromtimestamp(self.now_ms / 1000, tz=UTC) + timedelta(seconds=offset_s)


@dataclass
class Env:
    store: LedgerStore
    pans: dict[str, str]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    provisioned = provision(tmp_path, card_count=3)
    store = LedgerStore(provisioned.data, map_size_bytes=MAP_SIZE_BYTES)
    add_product(
        store, gift_product(id="TOL", prefix="603629", completion_tolerance_bp=TOLERANCE_BP)
    )
    tol_file = tmp_path / "tol.csv"
    issue_cards(store, open_keys(store), "TOL", 1, tol_file)
    pans = dict(zip("ABC", provisioned.cards, strict=True))
    pans["T"] = read_pans(tol_file)[0]
    pans["U"] = _unissued(set(provisioned.all_pans()) | {pans["T"]})
    try:
        yield Env(store, pans)
    finally:
        store.close()


def _unissued(known: set[str]) -> str:
    """A Luhn-valid number in the GIFT range that the host never issued."""
    for n in range(1000):
        body = f"603628{n:09d}"
        pan = body + luhn_check_digit(body)
        if pan not in known:
            return pan
    raise AssertionError("no unissued card number found")


class Run:
    """One row against one store: requests by tag, answers by tag, the clock."""

    def __init__(self, env: Env, r: Row) -> None:
        configure_logging("info", io.StringIO())
        self.env = env
        self.clock = Clock()
        self.proc = Processor(
            env.store,
            open_keys(env.store),
            Metrics(),
            get_logger(),
            skew_max_s=SKEW_MAX_S,
            log_requests=False,
            clock_ms=self.clock,
            dup_window_s=r.dup_window_s,
            hold_expiry_s=r.hold_expiry_s,
            sweep_batch_max=r.sweep_batch_max,
            demo_mode=True,
        )
        self.fields: dict[str, dict[str, str]] = {}
        self.answers: dict[str, dict[str, str]] = {}
        self.stan = 0

    # -- building requests -----------------------------------------------------------------
    def _value(self, value: str) -> str:
        """``@X`` is the number of card X; ``@tag.N`` is field N of an earlier step."""
        if not value.startswith("@"):
            return value
        ref = value[1:]
        if "." in ref:
            tag, key = ref.split(".")
            return self.fields[tag][key]
        return self.env.pans[ref]

    def build(self, s: Send) -> dict[str, str]:
        if s.resend is not None:
            fields = dict(self.fields[s.resend])
        else:
            original = self.fields[s.original] if s.original is not None else None
            amount = s.amount
            if amount is None and original is not None and s.op.startswith("reverse"):
                amount = int(original["4"])
            self.stan += 1
            fields = build_request(
                s.op,
                terminal=s.terminal,
                store=s.store,
                pan=self.env.pans[s.card],
                amount_minor=amount,
                partial=s.partial,
                stan=f"{self.stan:06d}",
                now=self.clock.at(s.sent_s),
                original=original,
                final_minor=s.final,
            )
        if s.repeat:
            fields = as_repeat(fields)
        for key, value in s.change.items():
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = self._value(value)
        if s.tag:
            self.fields[s.tag] = fields
        return fields

    # -- reading the store -------------------------------------------------------------------
    def snapshot(self) -> dict[str, dict[bytes, bytes]]:
        with self.env.store.read() as led:
            return {name: dict(led.txn.cursor(db=getattr(led.dbs, name))) for name in DBS}

    def journal_len(self) -> int:
        with self.env.store.read() as led:
            return sum(1 for _ in led.journal())

    def exception_kinds(self) -> list[str]:
        with self.env.store.read() as led:
            return [case.kind for case in led.exception_cases()]

    def _card_id(self, led: Ledger, card: str) -> int:
        found = led.card_by_hashes(self.proc.keys.pan_hashes(self.env.pans[card]))
        assert found is not None, f"card {card} is not in the store"
        return found.id

    def check_card(self, where: str, c: Send | Check) -> None:
        with self.env.store.read() as led:
            if c.dupes is not None:
                assert led.dupes_count() == c.dupes, f"{where}: duplicate records"
            wanted = (c.ledger, c.available, c.held, c.state, c.holds)
            if all(w is None for w in wanted):
                return
            card_id = self._card_id(led, c.card)
            ledger = led.balance(card_account(card_id))
            held = led.held(card_id)
            card = led.card(card_id)
            assert card is not None
            if c.ledger is not None:
                assert ledger == c.ledger, f"{where}: ledger balance"
            if c.available is not None:
                assert ledger - held == c.available, f"{where}: available balance"
            if c.held is not None:
                assert held == c.held, f"{where}: Ledger.held"
            if c.state is not None:
                assert card.state is c.state, f"{where}: card state"
            if c.holds is not None:
                states = tuple(h.state for h in led.holds() if h.card_id == card_id)
                assert states == c.holds, f"{where}: holds of card {c.card}"

    # -- steps -------------------------------------------------------------------------------
    def step(self, n: int, st: Step) -> None:
        if isinstance(st, Advance):
            self.clock.now_ms += st.seconds * 1000
        elif isinstance(st, Sweep):
            before = self.snapshot()
            assert self.proc.sweep() == (st.expired, st.pruned), f"step {n}: sweep"
            if st.still:
                assert self.snapshot() == before, f"step {n}: the sweep changed the store"
            if st.dupes is not None:
                with self.env.store.read() as led:
                    assert led.dupes_count() == st.dupes, f"step {n}: duplicate records"
        elif isinstance(st, Check):
            self.check_card(f"step {n} (check)", st)
        elif isinstance(st, Send) and not st.send:
            self.build(st)
        else:
            self.batch(n, st.steps if isinstance(st, Batch) else (st,), st)

    def batch(self, n: int, sends: tuple[Send, ...], st: Send | Batch) -> None:
        snap = self.snapshot()
        journal_before = self.journal_len()
        exceptions_before = self.exception_kinds()
        pendings: list[Pending] = []
        for s in sends:
            assert s.send, f"step {n}: a request built for later cannot be part of a batch"
            pending = self.proc.prepare(encode_message(self.build(s)))
            assert pending.error is None, f"step {n}: {pending.error}"
            pendings.append(pending)
        outcomes = self.proc.process_batch(pendings)
        assert len(outcomes) == len(sends)
        for i, (s, pending, outcome) in enumerate(zip(sends, pendings, outcomes, strict=True)):
            self.check_answer(f"step {n}.{i} {s.tag or s.resend or s.op}", s, pending, outcome)
        where = f"step {n}"
        recorded = self.exception_kinds()[len(exceptions_before) :]
        assert recorded == [k for s in sends for k in s.exceptions], f"{where}: exceptions"
        added = self.journal_len() - journal_before
        if isinstance(st, Batch):
            if st.journal is not None:
                assert added == st.journal, f"{where}: transfers added by the batch"
        else:
            if st.journal is not None:
                assert added == st.journal, f"{where}: transfers added"
            if st.still:
                assert self.snapshot() == snap, f"{where}: the store changed"
        for i, s in enumerate(sends):
            self.check_card(f"step {n}.{i} {s.tag or s.resend or s.op}", s)

    def check_answer(self, where: str, s: Send, pending: Pending, outcome: Outcome) -> None:
        assert pending.request is not None
        answer = build_response(pending.request, outcome)
        decision = outcome.decision
        sent = pending.request.fields
        for key in ECHOES:
            assert answer.get(key) == sent.get(key), f"{where}: field {key} is not the request's"
        assert decision.rc == s.rc, f"{where}: rc (field 44 {decision.field44!r})"
        assert decision.approved_minor == s.approved, f"{where}: approved amount"
        assert decision.field44 == s.field44, f"{where}: field 44"
        assert outcome.replayed is s.replay, f"{where}: replayed"
        if s.balances is not None:
            assert "54" in answer, f"{where}: no balances in the answer"
            decoded = {b.amount_type: b.amount_minor for b in decode_balances(answer["54"])}
            assert (decoded["01"], decoded["02"]) == s.balances, f"{where}: field 54"
        if s.same_as is not None:
            first = self.answers[s.same_as]
            assert {k: answer.get(k) for k in DECIDED} == {k: first.get(k) for k in DECIDED}, (
                f"{where}: the replay differs from the answer to {s.same_as}"
            )
            assert "37" in answer, f"{where}: a replay carries the original's RRN"
        if s.tag and s.resend is None:
            self.answers[s.tag] = answer


def _unit_totals(led: Ledger) -> dict[str, int]:
    totals: dict[str, int] = {}
    for _key, account in led.accounts():
        totals[account.unit] = totals.get(account.unit, 0) + account.balance_minor
    return totals


@pytest.mark.parametrize("r", ROWS)
def test_exactly_once(env: Env, r: Row) -> None:
    run = Run(env, r)
    for n, st in enumerate(r.steps):
        run.step(n, st)
    with env.store.read() as led:
        assert check_ledger(led) == []
        assert all(total == 0 for total in _unit_totals(led).values())
    # Decisions are stored, never answers: no card number anywhere in the store (§5, §6).
    blobs = [b for db in run.snapshot().values() for kv in db.items() for b in kv]
    for card, pan in env.pans.items():
        assert not any(pan.encode() in blob for blob in blobs), f"card {card} in the store"


def test_records_from_before_time_first_keys_still_catch_retransmissions(env: Env) -> None:
    """A store whose duplicate records a release before time-first keys wrote, (32, 41, 11, 7,
    class): after the upgrade, within the duplicate window, a retransmission is replayed and a
    reversal finds its original and marks it reversed under the key it has."""
    r = Row(())
    run = Run(env, r)
    steps: list[Step] = [act(), redeem("r", 12_000, 38_000), redeem("q", 3_000, 35_000)]
    for n, st in enumerate(steps):
        run.step(n, st)
    with env.store.write() as led:
        moved = 0
        for key, raw in list(led.txn.cursor(db=led.dbs.dupes)):
            legacy = legacy_dup_key(key)
            assert legacy is not None and legacy != key
            at = led.dupe(key)
            assert at is not None
            led.txn.delete(key, db=led.dbs.dupes)
            led.txn.delete(at.at_ms.to_bytes(8, "big") + key, db=led.dbs.dupes_by_time)
            led.txn.put(legacy, raw, db=led.dbs.dupes)
            led.txn.put(at.at_ms.to_bytes(8, "big") + legacy, b"", db=led.dbs.dupes_by_time)
            moved += 1
        assert moved == 3
        led.put_meta(DUP_KEYS_TIME_FIRST, NOW_MS.to_bytes(8, "big"))
    # A host started after the upgrade, on the same clock (the row's requests and answers kept).
    run.proc = Run(env, r).proc
    run.step(
        3,
        Send(
            resend="r",
            rc="00",
            approved=12_000,
            ledger=35_000,
            replay=True,
            same_as="r",
            still=True,
        ),
    )
    run.step(4, Send(tag="v", op="reverse", original="q", rc="00", ledger=38_000, journal=1))
    run.step(5, Send(resend="v", rc="00", ledger=38_000, replay=True, same_as="v", still=True))
    with env.store.read() as led:
        assert check_ledger(led) == []
        records = {k: led.dupe(k) for k in led.txn.cursor(db=led.dbs.dupes).iternext(values=False)}
        # The activation and the two redeems stay in the earlier layout (a key that does not
        # start with field 7); only the reversal is new, in the time-first one.
        earlier = {k: d for k, d in records.items() if legacy_dup_key(k) is None}
        assert len(earlier) == 3 and len(records) == 4
        assert [d.op for d in records.values() if d is not None and d.reversed] == ["redeem"]
        assert all(d is not None and not d.reversed for k, d in records.items() if k not in earlier)
