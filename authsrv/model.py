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
    "KIND_CAMPAIGN",
    "KIND_GIFT",
    "Account",
    "ApiKey",
    "ApiRole",
    "AuditEntry",
    "BusinessDay",
    "CampaignIssue",
    "Card",
    "CardHolder",
    "CardState",
    "ClosedBatch",
    "DupKind",
    "DupRecord",
    "ExceptionCase",
    "Hold",
    "HoldState",
    "IdempotencyRecord",
    "IssueAnswer",
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
KIND_GIFT = "gift"
KIND_CAMPAIGN = "campaign"


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
    """A card product and its limits (all amounts in the product's currency, minor units).

    Products are data and versioned (docs/products.md): a change writes a new record with the
    next ``version`` and keeps the earlier ones; a card records the version its value was
    created under (activation, campaign issue) and is governed by it from then on. ``id``,
    ``kind``, ``chain``, ``currency``, ``prefix`` and ``pan_len`` never change between versions
    (they fix the card range and the funding account).

    Scopes: a store is in a scope when its id is one of the scope's stores or its chain one of
    the scope's chains; an empty scope (no stores, no chains) is the product's own chain.
    """

    id: str
    chain: str
    kind: str  # "gift" or "campaign"
    currency: str  # ISO 4217 numeric
    prefix: str  # issuer range: the first digits of every card number
    pan_len: int
    fixed_value_minor: int  # 0: open value, loaded at activation; > 0: pre-valued card
    load_min_minor: int
    load_max_minor: int
    balance_max_minor: int
    redeem_min_minor: int
    expiry_months: int  # the plastic's validity from production (cards issue)
    reloadable: bool
    cashout: bool
    # A completion may exceed its hold by this many basis points before it counts as forced.
    completion_tolerance_bp: int = 0
    # Debits (redeem, cash-out, pre-authorization) need the card's PIN.
    pin_required: bool = False
    version: int = 1
    changed_ms: int = 0  # when this version was written (0: before versions were kept)
    # Campaign products (kind "campaign"): the value of an issue (0200 proc 92) is
    # purchase x share_bp / 10 000, rounded down to the minor unit, at most max_value_minor;
    # purchases below min_purchase_minor do not qualify.
    share_bp: int = 0
    min_purchase_minor: int = 0
    max_value_minor: int = 0
    # The issued value is valid through the day ``expiry_days`` after the issue (UTC), or
    # through the fixed day ``expiry_date`` (YYYYMMDD); exactly one of them for a campaign.
    expiry_days: int = 0
    expiry_date: str = ""
    # Where a campaign card may be issued, and where any card of the product is accepted.
    issue_stores: tuple[str, ...] = ()
    issue_chains: tuple[str, ...] = ()
    redeem_stores: tuple[str, ...] = ()
    redeem_chains: tuple[str, ...] = ()
    # An issued campaign card awaits online activation with the code printed on the receipt.
    online_activation: bool = False


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


class CampaignIssue(msgspec.Struct, frozen=True, kw_only=True):
    """What a campaign issue (0200 proc 92) left on its card (docs/products.md).

    Never the activation code: ``code_verifier`` is its keyed hash
    (:meth:`keys.KeyStore.activation_verifier`), compared in constant time.
    """

    issue_seq: int  # the journal transfer that loaded the value
    store_id: str  # the issuing store: its settlement account funded the value
    terminal_id: str
    value_expiry: str  # YYYYMMDD: the value is valid through the end of that day, UTC
    code_verifier: bytes = b""  # empty: the product needs no online activation
    wrong_codes: int = 0  # wrong activation codes since the issue (or the last unlock)
    locked: bool = False  # online activation locked after too many wrong codes


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
    # The product version the card's value was created under (its activation or campaign
    # issue; until then the version it was produced under, 0 before versions were kept).
    product_version: int = 0
    campaign: CampaignIssue | None = None  # set by a campaign issue, cleared by its void

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
    card_expiry: str = ""  # YYMM, or YYYYMMDD: a campaign card's value expiry day (EX)
    reversed_minor: int = 0
    reversed: bool = False  # a reversal has applied to it (also one that moved 0)
    hold_id: int = 0
    transfer_seq: int = 0  # the journal transfer the request posted (0: it moved nothing)
    batch: Totals | None = None  # a 0500: the host's totals it was answered with (no card data)
    issue: IssueAnswer | None = None  # an approved campaign issue: what its answer said


class IssueAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What a replay of a campaign issue needs to answer as the first time (never the code).

    The activation code is derived from ``code_salt`` under the activation key
    (:meth:`keys.KeyStore.activation_code`), so a retransmission gets the same code while
    neither the record nor the card holds it.
    """

    loaded_minor: int  # the value put on the card (field 4 echoes the purchase)
    code_salt: bytes = b""  # empty: no online activation, no code


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
    # The last transfer that moved this account (0: none, or none since account chains began):
    # the head of the account's history, which each transfer links back through (Transfer).
    last_seq: int = 0


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
    op: str  # activate, load, redeem, refund, cashout, issue, clawback, reversal, ...
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
    # A reversal: the transfer it gives back; a clawback: the issue it claws back (else 0).
    original_seq: int = 0
    # The previous transfer of the debit and of the credit account (0: the account's first, or
    # the first since account chains began): an account's history without an index to write.
    debit_prev: int = 0
    credit_prev: int = 0


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One back-office action: who did what to which record, when (the ``audit`` database).

    General on purpose (CLI and HTTP API alike): ``action`` names the operation
    (``clawback``, ``product_change``, ``unlock_activation``, ``activate_online``, ...),
    ``target`` the record (``card:7``, ``product:CAMP``), ``detail`` the figures. Never card
    numbers (a card is named by its id and masked number), codes or keys.
    """

    seq: int
    at_ms: int
    actor: str  # who: "cli", "api:<client>", ...
    action: str
    target: str
    detail: dict[str, str | int] = {}
    request_id: str = ""  # the idempotency key of the request that caused it, if any


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A back-office request done once under its request id (the ``idempotency`` database).

    A request that comes again with the same id and the same ``fingerprint`` gets the outcome
    recorded in audit entry ``audit_seq`` and changes nothing; with another fingerprint it is
    refused (the id is taken).
    """

    request_id: str
    action: str
    fingerprint: str  # what the request asked, e.g. "card:7|amount:all"
    audit_seq: int
    at_ms: int


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


# -- HTTP API: clients and card holders (docs/api.md) -----------------------------------------


class ApiRole(enum.StrEnum):
    """What an API key may do (docs/api.md has the endpoints of each)."""

    BACKOFFICE = "backoffice"  # cards, stores, terminals, products, every report, the audit log
    STORE = "store"  # its own store: its terminals and its rows of the reports
    SELFSERVICE = "selfservice"  # the card holder's endpoints (rate-limited)


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A client of the HTTP API (the ``api_keys`` database, key id -> record).

    Never the token: ``token_hash`` is its SHA-256 (a token is 32 random bytes, so a plain
    hash cannot be reversed); the token is shown once, when the key is made.
    """

    id: str  # 12 hex digits, also the token's second part (the token is looked up by it)
    name: str  # who holds it, for the audit log
    role: ApiRole
    store_id: str = ""  # role "store": the one store it may see and act on
    token_hash: bytes
    created_ms: int
    created_by: str
    revoked_ms: int = 0  # 0: in force


class CardHolder(msgspec.Struct, frozen=True, kw_only=True):
    """The person behind a card, as given at online activation (the ``holders`` database, card
    id -> record). Personal data, never card data: no card number, nothing read from the card.
    ``authsrv holders delete`` removes it whole (GDPR); the audit log records that, not the data.
    """

    card_id: int
    mobile: str  # E.164: "+" and 8-15 digits
    email: str = ""
    consents: tuple[str, ...] = ()  # e.g. "marketing_sms", as the holder ticked them
    interests: tuple[str, ...] = ()
    created_ms: int
    updated_ms: int
    # SHA-256 of the holder's self-service card token (empty: none issued); never the token.
    token_hash: bytes = b""
