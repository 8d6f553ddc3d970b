"""Records of the ledger: products, stores, terminals, cards, accounts, transfers.

Every record is a ``msgspec.Struct`` encoded as MessagePack in LMDB. Amounts are integers in
minor units (``_minor``); times are integers in UTC milliseconds since the epoch (``_ms``).
No record holds a card number: cards are found by keyed hash (DESIGN §6).
"""

from __future__ import annotations

import enum

import msgspec

from protocol.reconciliation import Totals

__all__ = [
    "CARD_ACCOUNT_PREFIX",
    "Account",
    "BusinessDay",
    "Card",
    "CardState",
    "ClosedBatch",
    "DupKind",
    "DupRecord",
    "ExceptionCase",
    "Hold",
    "HoldState",
    "OpenBatch",
    "Posting",
    "Product",
    "RetiredKeys",
    "SecurityProfile",
    "Store",
    "Terminal",
    "Transfer",
    "card_account",
    "store_account",
]

PURSE_MONEY = "60"  # field 3 / field 54 account type of the money purse
CARD_ACCOUNT_PREFIX = "card:"  # every card purse's account key starts with it


class CardState(enum.StrEnum):
    ISSUED = "issued"  # produced, not yet sold
    ACTIVE = "active"
    AWAITING_ACTIVATION = "awaiting_activation"  # campaign cards, until activated online
    BLOCKED = "blocked"
    LOST = "lost"
    STOLEN = "stolen"
    EXPIRED = "expired"
    CLOSED = "closed"


class Product(msgspec.Struct, frozen=True, kw_only=True):
    """A card product and its limits (all amounts in the product's currency, minor units)."""

    id: str
    chain: str
    kind: str  # "gift"
    currency: str  # ISO 4217 numeric
    prefix: str  # issuer range: the first digits of every card number
    pan_len: int
    fixed_value_minor: int  # 0: open value, loaded at activation; > 0: pre-valued card
    load_min_minor: int
    load_max_minor: int
    balance_max_minor: int
    redeem_min_minor: int
    expiry_months: int
    reloadable: bool
    cashout: bool
    # A completion may exceed its hold by this many basis points before it counts as forced.
    completion_tolerance_bp: int = 0
    # Debits (redeem, cash-out, pre-authorization) need the card's PIN.
    pin_required: bool = False
    version: int = 1


class Store(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # field 42, at most 15 characters
    name: str
    chain: str
    active: bool = True


class SecurityProfile(enum.StrEnum):
    """How a terminal's messages are protected (issue: terminal security)."""

    NONE = "none"  # no MAC, no PIN: accepted only when the host runs in demo mode
    MAC_TDES = "mac-tdes"  # static keys: X9.19 retail MAC; TDES PIN key (ISO formats 0 and 3)
    MAC_AES = "mac-aes"  # static keys: AES-CMAC; AES PIN key (ISO format 4)
    DUKPT_TDES = "dukpt-tdes"  # ANSI X9.24-1 TDES DUKPT: X9.19 MAC, formats 0 and 3
    DUKPT_AES = "dukpt-aes"  # ANSI X9.24-3 AES DUKPT: AES-CMAC, format 4

    @property
    def static(self) -> bool:
        return self in (SecurityProfile.MAC_TDES, SecurityProfile.MAC_AES)

    @property
    def dukpt(self) -> bool:
        return self in (SecurityProfile.DUKPT_TDES, SecurityProfile.DUKPT_AES)

    @property
    def aes(self) -> bool:
        return self in (SecurityProfile.MAC_AES, SecurityProfile.DUKPT_AES)


class RetiredKeys(msgspec.Struct, frozen=True, kw_only=True):
    """Working keys replaced by a key change, still accepted until ``until_ms`` (grace)."""

    mac_key: str  # TR-31 blocks under the key-encrypting key
    pin_key: str
    until_ms: int


class Terminal(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # field 41, 8 characters
    store_id: str
    active: bool = True
    signon_required: bool = False
    signed_on: bool = False
    security: SecurityProfile = SecurityProfile.NONE
    # Static profiles: the terminal master key's name in the key store (it wraps the working
    # keys sent in a key change) and the current working keys as TR-31 blocks under the
    # key-encrypting key (empty until the first key change).
    tmk: str = ""
    mac_key: str = ""
    pin_key: str = ""
    retired_keys: tuple[RetiredKeys, ...] = ()
    keys_changed_ms: int = 0
    # DUKPT profiles: the base derivation key's name, the device's key serial number without
    # its counter (hex), and the highest counter accepted so far (a new request must exceed it).
    bdk: str = ""
    ksn_prefix: str = ""
    ksn_counter: int = 0


class Card(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    product: str
    state: CardState
    first6: str
    last4: str
    pan_len: int
    expiry: str  # YYMM, valid through the end of that month
    hash_version: int
    issued_ms: int
    activated_ms: int = 0
    # Keyed PIN verification value (never the PIN, never a plain hash of it) and the wrong
    # PIN tries since the last right one.
    pvv: bytes = b""
    pin_tries: int = 0
    # The store that sold (activated) the card: the liability report's "store of sale".
    sold_store: str = ""

    @property
    def masked(self) -> str:
        return self.first6 + "*" * (self.pan_len - 10) + self.last4


class DupKind(enum.StrEnum):
    REQUEST = "request"  # a request that was decided: its decision is replayed
    TOMBSTONE = "tombstone"  # left by a reversal of an unknown original: a late original gets 05


class DupRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the host decided for one duplicate key (DESIGN §5): never the response bytes.

    Originals also carry what reversals need: the card, the processing code, the amounts, how
    much has been reversed so far and the hold they placed.
    """

    kind: DupKind
    at_ms: int
    content: bytes = b""  # HMAC of the request's content (empty for a tombstone)
    mti_class: str = ""
    proc: str = ""
    op: str = ""
    rc: str = ""
    approval: str = ""
    rrn: str = ""
    requested_minor: int = 0
    approved_minor: int | None = None
    ledger_after_minor: int | None = None
    available_after_minor: int | None = None
    currency: str = ""
    card_id: int = 0
    card_masked: str = ""
    card_expiry: str = ""
    reversed_minor: int = 0
    reversed: bool = False  # a reversal has applied to it (also one that moved 0)
    hold_id: int = 0
    transfer_seq: int = 0  # the journal transfer the request posted (0: it moved nothing)
    batch: Totals | None = None  # a 0500: the host's totals it was answered with (no card data)


class HoldState(enum.StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    RELEASED = "released"  # by a reversal
    EXPIRED = "expired"  # by the sweep


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    """An amount reserved on a card by a 0100 pre-authorization (available drops, ledger not)."""

    id: int
    card_id: int
    amount_minor: int
    placed_ms: int
    expires_ms: int
    state: HoldState
    original_key: bytes  # the 0100's duplicate key


class ExceptionCase(msgspec.Struct, frozen=True, kw_only=True):
    """An advice the host had to accept although it breaks a rule; listed for the programme."""

    seq: int
    at_ms: int
    kind: str  # below_zero, forced_completion, unknown_card, currency_mismatch
    op: str
    card_id: int
    amount_minor: int
    balance_after_minor: int
    currency: str
    terminal_id: str
    store_id: str
    stan: str


class OpenBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A terminal's open batch in one currency: what its requests moved since its last 0500.

    Created by the terminal's first money-moving request after a close; a 0500 closes it (the
    next batch starts from zero).
    """

    terminal_id: str
    currency: str
    opened_ms: int  # the first transfer's time
    totals: Totals


class ClosedBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch closed by a 0500: both sides' totals, and what the terminal's differ by."""

    seq: int  # the host's close sequence (1, 2, ... over all terminals)
    terminal_id: str
    store_id: str
    currency: str
    batch_number: str  # field 60 as sent
    rc: str  # 00 in balance, 95 out of balance
    opened_ms: int  # 0: nothing moved in the batch
    closed_ms: int
    stan: str
    host: Totals
    terminal: Totals
    terminal_net_minor: int  # field 97 as sent
    difference: dict[str, int]  # terminal minus host, per figure and "net_minor"


class Account(msgspec.Struct, frozen=True, array_like=True):
    """One ledger account: its unit (currency code, or points/stamps) and signed balance."""

    unit: str
    balance_minor: int


class Posting(msgspec.Struct, frozen=True, array_like=True):
    """One double-entry movement: ``amount_minor`` from ``debit`` to ``credit``."""

    debit: str
    credit: str
    amount_minor: int
    unit: str


class Transfer(msgspec.Struct, frozen=True, kw_only=True):
    """A committed posting with what caused it (the journal)."""

    seq: int
    at_ms: int
    op: str  # activate, load, redeem, refund, cashout
    debit: str
    credit: str
    amount_minor: int
    unit: str
    card_id: int
    terminal_id: str
    store_id: str
    stan: str
    rrn: str
    approval: str
    local_time: str = ""  # the terminal's fields 13 + 12: MMDDhhmmss ("" for host jobs)
    original_seq: int = 0  # a reversal: the transfer it gives back (0 when not a reversal)


class BusinessDay(msgspec.Struct, frozen=True, kw_only=True):
    """One business day: the contiguous run of journal transfers committed while it was open.

    The day that is open has ``closed_ms == 0`` and takes every new transfer; the cut-over
    closes it in one write transaction (``last_seq`` is then the last transfer it holds, or
    ``first_seq - 1`` when it holds none) and opens the next. A closed day never changes.
    ``balances`` are the closing balances of every account that is not a card purse (stores,
    funding accounts), so the next day's movements can be reconciled against them.
    """

    day: str  # YYYYMMDD
    opened_ms: int
    first_seq: int
    closed_ms: int = 0
    last_seq: int = 0
    balances: dict[str, int] = {}
    how: str = ""  # how it was closed: "auto" (at its cut-over time), "manual", "empty"
    file_seq: int = 0  # its clearing file's sequence number (1, 2, ... over closed days)

    @property
    def closed(self) -> bool:
        return self.closed_ms != 0


def card_account(card_id: int, purse: str = PURSE_MONEY) -> str:
    """Account key of a card's purse.

    >>> card_account(7)
    'card:000000000007:60'
    """
    return f"{CARD_ACCOUNT_PREFIX}{card_id:012d}:{purse}"


def store_account(store_id: str, unit: str) -> str:
    """Account key of a store's settlement account in one unit.

    >>> store_account("S0001", "978")
    'store:S0001:978'
    """
    return f"store:{store_id}:{unit}"
