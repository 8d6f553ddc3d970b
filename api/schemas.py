"""The API's request and answer bodies as msgspec structs: they decode and validate JSON, and
the OpenAPI document's schemas are generated from them (:mod:`api.openapi`).

Conventions: amounts are integers of minor units (``_minor``), times are UTC ISO 8601 strings
(``..._at``, ``at``), card numbers appear masked only (first six, last four). Request bodies
refuse unknown fields, so a misspelt field is an error that names it rather than a silent
default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

__all__ = [
    "ActivationAnswer",
    "ActivationConsents",
    "ActivationRequest",
    "AuditEntryOut",
    "AuditPage",
    "CardChanged",
    "CardDetail",
    "CardStateChange",
    "ClawbackAnswer",
    "ClawbackRequest",
    "ErrorAnswer",
    "ErrorDetail",
    "ExpiryChange",
    "HistoryRow",
    "IssueAnswer",
    "IssueRequest",
    "Me",
    "ProductChange",
    "ProductCreate",
    "ProductDetail",
    "ProductList",
    "ProductOut",
    "SelfCard",
    "SelfCardRequest",
    "SelfHistoryRow",
    "ShopLoadAnswer",
    "ShopLoadRequest",
    "StoreCreate",
    "StoreList",
    "StoreOut",
    "StoreUpdate",
    "TerminalCreate",
    "TerminalList",
    "TerminalOut",
    "TerminalUpdate",
]

ISSUE_COUNT_MAX = 1_000_000  # the schema's bound; api.issue_count_max is the one in force
AMOUNT_MAX = 10**12  # 10 000 000 000.00 in a 2-decimal currency: more than any card holds
FIELD4_MAX = 10**12 - 1  # what field 4 (n12) carries: web-shop loads go through the engine
INTERESTS_MAX = 16  # interests a card holder gives at activation
TAG_LEN_MAX = 40  # characters of one interest (api.holders.TAG_LEN_MAX)

# Identifiers that appear in URL paths: a letter or digit first, no "/" or spaces.
StoreId = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$",
        max_length=15,
        description="store id as terminals send it in field 42 (1-15 characters)",
    ),
]
TerminalId = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{7}$",
        min_length=8,
        max_length=8,
        description="terminal id as sent in field 41 (8 characters)",
    ),
]
Chain = Annotated[
    str,
    Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$", max_length=15, description="retail chain"),
]
ProductId = Annotated[
    str,
    Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$", max_length=32, description="product id"),
]
Name = Annotated[str, Meta(min_length=1, max_length=80, description="a name for people")]
Reason = Annotated[
    str, Meta(min_length=1, max_length=200, description="why, for the audit log (ASCII)")
]
Yymm = Annotated[
    str,
    Meta(
        pattern=r"^[0-9]{2}(0[1-9]|1[0-2])$",
        min_length=4,
        max_length=4,
        description="YYMM: valid through the end of that month",
    ),
]
Day = Annotated[
    str,
    Meta(pattern=r"^[0-9]{8}$", min_length=8, max_length=8, description="a business day YYYYMMDD"),
]
Amount = Annotated[int, Meta(ge=0, le=AMOUNT_MAX, description="minor units")]
CardNumber = Annotated[
    str,
    Meta(
        pattern=r"^[0-9]{12,19}$",
        min_length=12,
        max_length=19,
        description="the full card number (in requests only: answers mask it)",
    ),
]
Currency = Annotated[
    str,
    Meta(
        pattern=r"^[0-9]{3}$",
        min_length=3,
        max_length=3,
        description="ISO 4217 numeric, e.g. 978 (the card's product's currency)",
    ),
]
# Request ids and payment references: no "|" (they become parts of keys) and no spaces.
RequestId = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$",
        min_length=1,
        max_length=64,
        description="the caller's id of this request (1-64 of A-Z a-z 0-9 _ . : / -)",
    ),
]
Names = Annotated[list[Chain], Meta(max_length=64)]
CardStateName = Literal[
    "issued", "active", "awaiting_activation", "blocked", "lost", "stolen", "expired", "closed"
]
RoleName = Literal["backoffice", "store", "selfservice"]


class ErrorDetail(Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    field: str | None  # the body field or parameter at fault (null: none)
    # Only where they apply (left out otherwise): a declined web-shop load's response code
    # (DESIGN §3), and how many more wrong activation codes lock the card's activation.
    rc: str | None = None
    tries_left: int | None = None


class ErrorAnswer(Struct):
    """Every answer that is not a success."""

    error: ErrorDetail


class Me(Struct, kw_only=True):
    """The key a request was made with."""

    key_id: str
    name: str
    role: RoleName
    store_id: str | None


# -- cards -----------------------------------------------------------------------------------


class HistoryRow(Struct, kw_only=True):
    seq: int  # the journal transfer
    at: str
    op: str  # activate, load, redeem, refund, cashout, issue, reversal, expire, clawback, ...
    amount_minor: int  # positive: onto the card; negative: off it
    store_id: str
    terminal_id: str


class CardDetail(Struct, kw_only=True):
    """A card as the back office sees it (masked number, no card data)."""

    id: int
    card: str  # masked: first six and last four
    product: str
    product_version: int
    kind: str
    state: CardStateName
    currency: str
    balance_minor: int
    held_minor: int
    available_minor: int
    expiry: str  # YYMM
    expired: bool  # the card or its value is past its expiry
    value_expiry: str | None  # campaign cards: YYYYMMDD
    sold_store: str | None
    issued_at: str
    activated_at: str | None
    activation_locked: bool | None  # campaign cards awaiting online activation
    has_holder: bool
    history: list[HistoryRow]


class CardStateChange(Struct, kw_only=True, forbid_unknown_fields=True):
    """block: active -> blocked; unblock: blocked -> active; lost, stolen: from issued, active,
    awaiting_activation or blocked; close: any state but closed, only with nothing on the card
    (no balance, no open holds)."""

    action: Literal["block", "unblock", "lost", "stolen", "close"]
    reason: Reason


class ExpiryChange(Struct, kw_only=True, forbid_unknown_fields=True):
    expiry: Yymm
    reason: Reason


class CardChanged(Struct, kw_only=True):
    id: int
    card: str
    state: CardStateName
    expiry: str
    changed: bool  # false: the card was already so (nothing written, nothing audited)
    audit_seq: int | None


class IssueRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Produce cards (state issued); their numbers go once to a 0600 file on the server."""

    product: ProductId
    count: Annotated[int, Meta(ge=1, le=ISSUE_COUNT_MAX, description="at most api.issue_count_max")]
    expiry: Yymm | None = None  # default: the product's validity from today


class IssueAnswer(Struct, kw_only=True):
    product: str
    count: int
    ids: list[int]
    expiry: str
    file: str  # where the card numbers are (on the server, mode 0600)
    audit_seq: int


class ClawbackRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Take unspent value of a campaign card back to the store that issued it, exactly once
    per request_id (docs/products.md §6)."""

    amount_minor: Annotated[int, Meta(ge=1, le=AMOUNT_MAX)] | Literal["all"]
    reason: Reason
    request_id: RequestId


class ClawbackAnswer(Struct, kw_only=True):
    card_id: int
    card: str  # masked
    state: CardStateName  # the card's state now (closed when nothing is left on it)
    request_id: str
    amount_minor: int  # what was taken back
    currency: str
    store_id: str  # the issuing store, whose settlement account got the value back
    transfer_seq: int  # the clawback's journal transfer
    audit_seq: int
    card_closed: bool
    replayed: bool  # this request id was done before: its outcome, nothing moved now


# -- stores, terminals -------------------------------------------------------------------------


class StoreOut(Struct, kw_only=True):
    id: str
    name: str
    chain: str
    active: bool


class StoreList(Struct):
    stores: list[StoreOut]


class StoreCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    id: StoreId
    name: Name
    chain: Chain


class StoreUpdate(Struct, kw_only=True, forbid_unknown_fields=True):
    """At least one field."""

    active: bool | None = None
    name: Name | None = None


class TerminalOut(Struct, kw_only=True):
    id: str
    store_id: str
    active: bool
    signon_required: bool
    security: str  # none, mac-tdes, mac-aes, dukpt-tdes, dukpt-aes


class TerminalList(Struct):
    terminals: list[TerminalOut]


class TerminalCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    id: TerminalId
    store_id: StoreId
    signon_required: bool = False


class TerminalUpdate(Struct, kw_only=True, forbid_unknown_fields=True):
    active: bool


# -- products (gift and campaign) ----------------------------------------------------------------


class ProductOut(Struct, kw_only=True):
    """One version of a product (docs/products.md); amounts in the product's currency."""

    id: str
    version: int
    changed_at: str | None
    chain: str
    kind: Literal["gift", "campaign"]
    currency: str
    prefix: str
    pan_len: int
    fixed_value_minor: int
    load_min_minor: int
    load_max_minor: int
    balance_max_minor: int
    redeem_min_minor: int
    expiry_months: int
    reloadable: bool
    cashout: bool
    completion_tolerance_bp: int
    pin_required: bool
    share_bp: int
    min_purchase_minor: int
    max_value_minor: int
    expiry_days: int
    expiry_date: str
    issue_stores: list[str]
    issue_chains: list[str]
    redeem_stores: list[str]
    redeem_chains: list[str]
    online_activation: bool


class ProductList(Struct):
    products: list[ProductOut]


class ProductDetail(Struct, kw_only=True):
    product: ProductOut  # the current version
    versions: list[ProductOut]  # every version, oldest first


class ProductChange(Struct, kw_only=True, forbid_unknown_fields=True):
    """The settings a version may change; what is left out stays. At least one."""

    fixed_value_minor: Amount | None = None
    load_min_minor: Amount | None = None
    load_max_minor: Amount | None = None
    balance_max_minor: Amount | None = None
    redeem_min_minor: Amount | None = None
    expiry_months: Annotated[int, Meta(ge=1, le=240)] | None = None
    reloadable: bool | None = None
    cashout: bool | None = None
    completion_tolerance_bp: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    pin_required: bool | None = None
    share_bp: Annotated[int, Meta(ge=0, le=10_000)] | None = None
    min_purchase_minor: Amount | None = None
    max_value_minor: Amount | None = None
    expiry_days: Annotated[int, Meta(ge=0, le=3660)] | None = None
    expiry_date: Annotated[str, Meta(pattern=r"^([0-9]{8})?$", max_length=8)] | None = None
    issue_stores: Names | None = None
    issue_chains: Names | None = None
    redeem_stores: Names | None = None
    redeem_chains: Names | None = None
    online_activation: bool | None = None


class ProductCreate(ProductChange, kw_only=True, forbid_unknown_fields=True):
    """A new product as its version 1; settings left out take the defaults of
    ``authsrv products add`` for its kind."""

    id: ProductId
    chain: Chain
    prefix: Annotated[str, Meta(pattern=r"^[0-9]{4,11}$", min_length=4, max_length=11)]
    kind: Literal["gift", "campaign"] = "gift"
    currency: Annotated[str, Meta(pattern=r"^[0-9]{3}$", min_length=3, max_length=3)] = "978"
    pan_len: Annotated[int, Meta(ge=13, le=19)] = 16


# -- the audit log -----------------------------------------------------------------------------


class AuditEntryOut(Struct, kw_only=True):
    seq: int
    at: str
    actor: str  # "api:<key id>:<key name>", "cli:<user>"
    action: str
    target: str  # card:7, product:GIFT, store:S0001, terminal:T0000001, api_key:<id>
    detail: dict[str, str | int]
    request_id: str


class AuditPage(Struct, kw_only=True):
    entries: list[AuditEntryOut]
    next_after: int  # pass as ?after= for the next page


# -- self-service --------------------------------------------------------------------------------


class SelfCardRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Either card_number and mobile (as given at activation), or the card token issued to
    the holder. A wrong pair answers exactly as an unknown card (404)."""

    card_number: Annotated[str, Meta(pattern=r"^[0-9]{12,19}$", max_length=19)] | None = None
    mobile: Annotated[str, Meta(min_length=1, max_length=32)] | None = None
    token: Annotated[str, Meta(min_length=1, max_length=100)] | None = None


class SelfHistoryRow(Struct, kw_only=True):
    at: str
    op: str
    amount_minor: int  # positive: onto the card; negative: off it
    store_id: str


class SelfCard(Struct, kw_only=True):
    card: str  # masked
    state: CardStateName
    currency: str
    balance_minor: int
    available_minor: int
    expiry: str  # YYMM
    value_expiry: str | None  # campaign cards: YYYYMMDD
    history: list[SelfHistoryRow]


class ActivationConsents(Struct, kw_only=True, forbid_unknown_fields=True):
    terms: bool  # the programme's terms accepted: must be true
    marketing: bool = False  # offers by e-mail or text message


Interest = Annotated[
    str,
    Meta(pattern=r"^[a-z0-9_.-]{1,40}$", min_length=1, max_length=TAG_LEN_MAX),
]


class ActivationRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Online activation of a campaign card with the code on its issue receipt; records the
    holder (mobile, e-mail, consents, interests)."""

    card_number: CardNumber
    activation_code: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=32,
            description="the 8-character code on the receipt (any case; spaces and - ignored)",
        ),
    ]
    mobile: Annotated[str, Meta(min_length=1, max_length=32, description="e.g. +4791234567")]
    email: Annotated[str, Meta(min_length=1, max_length=254)] | None = None
    consents: ActivationConsents
    interests: Annotated[list[Interest], Meta(max_length=INTERESTS_MAX)] = []


class ActivationAnswer(Struct, kw_only=True):
    token: str  # the card token (ct_...), shown this once: POST /v1/self/card {"token": ...}
    card: str  # masked
    state: CardStateName
    currency: str
    balance_minor: int
    available_minor: int
    expiry: str  # YYMM
    value_expiry: str | None  # YYYYMMDD: the campaign value's last day


# -- the web shop (a store key) -------------------------------------------------------------------


class ShopLoadRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Sell a gift card with its first value (activate) or load one, paid in the web shop.
    Exactly once per payment_ref and store: the same body again replays the first answer."""

    payment_ref: RequestId
    terminal_id: TerminalId  # the web shop's terminal: one of the key's store's
    operation: Literal["activate", "load"]
    card_number: CardNumber
    amount_minor: Annotated[int, Meta(ge=0, le=FIELD4_MAX, description="minor units")]
    currency: Currency


class ShopLoadAnswer(Struct, kw_only=True):
    payment_ref: str
    operation: Literal["activate", "load"]
    store_id: str
    terminal_id: str
    card: str  # masked
    rc: str  # the host's response code: 00
    amount_minor: int  # what was put on the card
    currency: str
    balance_minor: int  # after the load
    available_minor: int
    expiry: str  # the card's expiry month YYMM
    rrn: str
    approval_code: str
    transfer_seq: int
    replayed: bool  # this payment_ref was done before: its answer, nothing moved now
