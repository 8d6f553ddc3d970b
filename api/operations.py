"""Every operation of the API, in the order the OpenAPI document lists them (a spec as data:
read it top to bottom). Roles, parameters, bodies and answers are declared here; the handlers
are in :mod:`api.cards`, :mod:`api.refdata`, :mod:`api.reports`, :mod:`api.shop`,
:mod:`api.selfservice`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from api import cards, refdata, reports, selfservice, shop
from api.routing import ALL_ROLES, CSV, OCTETS, Answer, Operation, Param
from api.schemas import (
    ActivationAnswer,
    ActivationRequest,
    AuditPage,
    CardChanged,
    CardDetail,
    CardStateChange,
    ClawbackAnswer,
    ClawbackRequest,
    Day,
    ExpiryChange,
    IssueAnswer,
    IssueRequest,
    Me,
    ProductChange,
    ProductCreate,
    ProductDetail,
    ProductList,
    ProductOut,
    SelfCard,
    SelfCardRequest,
    ShopLoadAnswer,
    ShopLoadRequest,
    StoreCreate,
    StoreList,
    StoreOut,
    StoreUpdate,
    TerminalCreate,
    TerminalList,
    TerminalOut,
    TerminalUpdate,
)
from authsrv.model import ApiRole

__all__ = ["OPERATIONS"]

BACKOFFICE = frozenset({ApiRole.BACKOFFICE})
STORES = frozenset({ApiRole.BACKOFFICE, ApiRole.STORE})
STORE_ONLY = frozenset({ApiRole.STORE})  # bound to one store: the web shop's
SELF = frozenset({ApiRole.SELFSERVICE})

CardId = Annotated[int, Meta(ge=1, le=2**53, description="the card's internal id")]
Text = Annotated[str, Meta(min_length=1, max_length=64)]
_CARD = Param("card_id", "path", CardId, "the card's internal id (never its number)")
_STORE = Param("store_id", "path", Text, "store id")
_TERMINAL = Param("terminal_id", "path", Text, "terminal id")
_PRODUCT = Param("product_id", "path", Text, "product id")
_DAY = Param("day", "path", Day, "a closed business day YYYYMMDD")


def _card_missing() -> Answer:
    return Answer("No card with that id.")


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        id="getMe",
        method="GET",
        path="/v1/me",
        summary="The API key of this request: its id, name, role and store",
        tag="access",
        roles=ALL_ROLES,
        handler=refdata.me,
        answers={200: Answer("The key.", Me)},
    ),
    # -- cards (back office) -------------------------------------------------------------------
    Operation(
        id="getCard",
        method="GET",
        path="/v1/cards/{card_id}",
        summary="A card: masked number, state, balances, expiry, recent transactions",
        tag="cards",
        roles=BACKOFFICE,
        handler=cards.get_card,
        params=(_CARD,),
        answers={200: Answer("The card.", CardDetail), 404: _card_missing()},
    ),
    Operation(
        id="changeCardState",
        method="POST",
        path="/v1/cards/{card_id}/state",
        summary="Block, unblock, report lost or stolen, or close a card (audited)",
        description=(
            "block: active -> blocked; unblock: blocked -> active; lost, stolen: from issued, "
            "active, awaiting_activation or blocked; close: any state but closed, with nothing "
            "on the card. Asking for the state the card is in answers changed=false. At a "
            "terminal a blocked or closed card answers 62, a lost one 41, a stolen one 43."
        ),
        tag="cards",
        roles=BACKOFFICE,
        handler=cards.change_state,
        params=(_CARD,),
        body=CardStateChange,
        answers={
            200: Answer("The card after the change.", CardChanged),
            404: _card_missing(),
            409: Answer("The card's state does not allow the change."),
        },
    ),
    Operation(
        id="changeCardExpiry",
        method="POST",
        path="/v1/cards/{card_id}/expiry",
        summary="Change a card's expiry month (audited)",
        tag="cards",
        roles=BACKOFFICE,
        handler=cards.change_expiry,
        params=(_CARD,),
        body=ExpiryChange,
        answers={
            200: Answer("The card after the change.", CardChanged),
            404: _card_missing(),
            409: Answer("The card is closed or expired."),
        },
    ),
    Operation(
        id="issueCards",
        method="POST",
        path="/v1/cards/issue",
        summary="Issue a batch of cards; their numbers go once to a 0600 file on the server",
        description=(
            "The answer names the file and the card ids, never a card number. At most "
            "api.issue_count_max cards per request: they are made in one write transaction "
            "that the terminals wait for."
        ),
        tag="cards",
        roles=BACKOFFICE,
        handler=cards.issue,
        body=IssueRequest,
        answers={
            201: Answer("The cards were issued.", IssueAnswer),
            404: Answer("No such product."),
            409: Answer("The product's card range has no free numbers left."),
        },
    ),
    Operation(
        id="clawBackCard",
        method="POST",
        path="/v1/cards/{card_id}/clawback",
        summary="Take a campaign card's unspent value back to its issuing store (audited)",
        description=(
            'amount_minor, or "all" of the unspent (available) value, goes back to the '
            "settlement account of the store that issued the card; a card left with nothing is "
            "closed. Exactly once per request_id: the same id again answers the first outcome "
            "(replayed=true) and moves nothing; the same id for another card or amount is 409. "
            "Refusals keep nothing."
        ),
        tag="cards",
        roles=BACKOFFICE,
        handler=cards.claw_back,
        params=(_CARD,),
        body=ClawbackRequest,
        answers={
            200: Answer(
                "What was taken back (or, replayed, what was taken back then).", ClawbackAnswer
            ),
            404: _card_missing(),
            409: Answer(
                "Not a campaign card, no issued value, nothing left, more than is left, or "
                "the request_id was used for another clawback."
            ),
        },
    ),
    # -- stores ----------------------------------------------------------------------------------
    Operation(
        id="listStores",
        method="GET",
        path="/v1/stores",
        summary="Stores (a store key: its own)",
        tag="stores",
        roles=STORES,
        handler=refdata.list_stores,
        answers={200: Answer("The stores.", StoreList)},
    ),
    Operation(
        id="createStore",
        method="POST",
        path="/v1/stores",
        summary="Add a store (audited)",
        tag="stores",
        roles=BACKOFFICE,
        handler=refdata.create_store,
        body=StoreCreate,
        answers={
            201: Answer("The store.", StoreOut),
            409: Answer("A store with that id exists."),
        },
    ),
    Operation(
        id="getStore",
        method="GET",
        path="/v1/stores/{store_id}",
        summary="One store",
        tag="stores",
        roles=STORES,
        handler=refdata.get_store,
        params=(_STORE,),
        answers={200: Answer("The store.", StoreOut), 404: Answer("No such store (for this key).")},
    ),
    Operation(
        id="updateStore",
        method="PATCH",
        path="/v1/stores/{store_id}",
        summary="Rename a store or (de)activate it (audited); an inactive store's terminals get 03",
        tag="stores",
        roles=BACKOFFICE,
        handler=refdata.update_store,
        params=(_STORE,),
        body=StoreUpdate,
        answers={200: Answer("The store.", StoreOut), 404: Answer("No such store.")},
    ),
    # -- terminals -------------------------------------------------------------------------------
    Operation(
        id="listTerminals",
        method="GET",
        path="/v1/terminals",
        summary="Terminals (a store key: its store's)",
        tag="terminals",
        roles=STORES,
        handler=refdata.list_terminals,
        answers={200: Answer("The terminals.", TerminalList)},
    ),
    Operation(
        id="createTerminal",
        method="POST",
        path="/v1/terminals",
        summary="Add a terminal to a store (a store key: to its own; audited)",
        tag="terminals",
        roles=STORES,
        handler=refdata.create_terminal,
        body=TerminalCreate,
        answers={
            201: Answer("The terminal.", TerminalOut),
            409: Answer("A terminal with that id exists."),
        },
    ),
    Operation(
        id="getTerminal",
        method="GET",
        path="/v1/terminals/{terminal_id}",
        summary="One terminal",
        tag="terminals",
        roles=STORES,
        handler=refdata.get_terminal,
        params=(_TERMINAL,),
        answers={
            200: Answer("The terminal.", TerminalOut),
            404: Answer("No such terminal (for this key)."),
        },
    ),
    Operation(
        id="updateTerminal",
        method="PATCH",
        path="/v1/terminals/{terminal_id}",
        summary="(De)activate a terminal (audited); an inactive terminal gets 03",
        tag="terminals",
        roles=STORES,
        handler=refdata.update_terminal,
        params=(_TERMINAL,),
        body=TerminalUpdate,
        answers={
            200: Answer("The terminal.", TerminalOut),
            404: Answer("No such terminal (for this key)."),
        },
    ),
    # -- products and campaigns --------------------------------------------------------------------
    Operation(
        id="listProducts",
        method="GET",
        path="/v1/products",
        summary="Products (gift and campaign), their current versions",
        tag="products",
        roles=STORES,
        handler=refdata.list_products,
        params=(
            Param(
                "kind",
                "query",
                Literal["gift", "campaign"],
                "only this kind (campaign: the campaigns)",
                required=False,
            ),
        ),
        answers={200: Answer("The products.", ProductList)},
    ),
    Operation(
        id="createProduct",
        method="POST",
        path="/v1/products",
        summary="Add a gift or campaign product as its version 1 (audited)",
        tag="products",
        roles=BACKOFFICE,
        handler=refdata.create_product,
        body=ProductCreate,
        answers={
            201: Answer("The product.", ProductOut),
            409: Answer("A product with that id exists."),
        },
    ),
    Operation(
        id="getProduct",
        method="GET",
        path="/v1/products/{product_id}",
        summary="A product and every version of it",
        tag="products",
        roles=STORES,
        handler=refdata.get_product,
        params=(_PRODUCT,),
        answers={200: Answer("The product.", ProductDetail), 404: Answer("No such product.")},
    ),
    Operation(
        id="changeProduct",
        method="PATCH",
        path="/v1/products/{product_id}",
        summary="Change a product: writes its next version (cards sold keep theirs; audited)",
        tag="products",
        roles=BACKOFFICE,
        handler=refdata.update_product,
        params=(_PRODUCT,),
        body=ProductChange,
        answers={
            200: Answer("The new version.", ProductOut),
            404: Answer("No such product."),
            409: Answer("The product already has these settings."),
        },
    ),
    # -- reports ---------------------------------------------------------------------------------
    Operation(
        id="getReport",
        method="GET",
        path="/v1/reports/{kind}",
        summary="A settlement report as CSV (a store key: liability and activity, its rows)",
        description=(
            "liability: gift-card value outstanding now, by store of sale and month of issue; "
            "breakage: value expired, by month and product; activity: loads, uses and "
            "reversals per store and day; summary: per day. The day reports cover closed days "
            "from..to (default: all)."
        ),
        tag="reports",
        roles=STORES,
        handler=reports.report,
        params=(
            Param(
                "kind",
                "path",
                Literal["liability", "breakage", "activity", "summary"],
                "which report",
            ),
            Param("from", "query", Day, "first closed day (default: the first)", required=False),
            Param("to", "query", Day, "last closed day (default: the last)", required=False),
        ),
        answers={
            200: Answer("The report.", media=CSV),
            404: Answer("No such closed day, or no day has closed yet."),
        },
    ),
    Operation(
        id="getNetReport",
        method="GET",
        path="/v1/reports/net/{day}",
        summary="A closed day's net settlement as CSV (a store key: its own row)",
        tag="reports",
        roles=STORES,
        handler=reports.net_report,
        params=(_DAY,),
        answers={
            200: Answer("The net settlement.", media=CSV),
            404: Answer("No such closed day."),
        },
    ),
    Operation(
        id="getClearingFile",
        method="GET",
        path="/v1/reports/clearing/{day}",
        summary="A closed day's clearing file (CSV or IPM; masked card numbers)",
        tag="reports",
        roles=BACKOFFICE,
        handler=reports.clearing_file,
        params=(
            _DAY,
            Param("format", "query", Literal["csv", "ipm"], "csv (default) or ipm", False),
        ),
        answers={
            200: Answer("The clearing file.", media=CSV, more_media=(OCTETS,)),
            404: Answer("No such closed day."),
        },
    ),
    # -- the web shop (a store key) --------------------------------------------------------------
    Operation(
        id="createShopLoad",
        method="POST",
        path="/v1/shop/loads",
        summary="Sell a gift card with its first value, or load one, paid in the web shop",
        description=(
            "Decided by the host's engine as the 0200 a terminal of the key's store would send "
            "(activate: processing code 72, load: 21): the product's limits, the card's state "
            "and scopes apply. terminal_id names the web shop's terminal, one of the key's "
            "store's (active, no sign-on). Exactly once per store and payment_ref: the same "
            "body again answers the first answer (replayed=true) and moves nothing; another "
            "body with that payment_ref is 409."
        ),
        tag="shop",
        roles=STORE_ONLY,
        handler=shop.shop_load,
        body=ShopLoadRequest,
        answers={
            200: Answer("The card was sold or loaded.", ShopLoadAnswer),
            404: Answer("No card with that number."),
            409: Answer(
                "terminal_id is not an active terminal of the key's store (or needs a "
                "sign-on), the store is inactive, or payment_ref was used for another request."
            ),
            422: Answer(
                "A field is wrong (`field` names it), or the host declined: code `declined`, "
                "`rc` the response code (e.g. 61 over the product's limit, 57 not permitted "
                "for the card), the message its reason."
            ),
        },
    ),
    # -- the audit log ---------------------------------------------------------------------------
    Operation(
        id="listAudit",
        method="GET",
        path="/v1/audit",
        summary="The audit log: who changed what, when",
        tag="audit",
        roles=BACKOFFICE,
        handler=refdata.list_audit,
        params=(
            Param(
                "after",
                "query",
                Annotated[int, Meta(ge=0, le=2**53)],
                "entries after this sequence number (default 0)",
                required=False,
            ),
            Param(
                "limit",
                "query",
                Annotated[int, Meta(ge=1, le=refdata.AUDIT_PAGE_MAX)],
                "at most this many (default 100)",
                required=False,
            ),
        ),
        answers={200: Answer("A page of entries, oldest first.", AuditPage)},
    ),
    # -- self-service (card holders) -------------------------------------------------------------
    Operation(
        id="getHolderCard",
        method="POST",
        path="/v1/self/card",
        summary="A card holder's card: balance, expiry, recent transactions (rate-limited)",
        description=(
            "Give card_number and the mobile recorded at activation, or the card token issued "
            "to the holder. Anything that does not match answers the same 404. Limited per "
            "client (key and address) and per card."
        ),
        tag="self-service",
        roles=SELF,
        handler=selfservice.card_for_holder,
        body=SelfCardRequest,
        self_service=True,
        answers={
            200: Answer("The card.", SelfCard),
            404: Answer("No card matches what was given."),
        },
    ),
    Operation(
        id="activateCard",
        method="POST",
        path="/v1/self/activate",
        summary="Activate a campaign card online with the code on its receipt (rate-limited)",
        description=(
            "Records the holder (mobile, e-mail, consents, interests) and answers a card token "
            "for POST /v1/self/card. Rate-limited per client (key and address) before the "
            "body is read, and per card (a keyed hash of the number) before anything is looked "
            "up. An unknown number, a bad check digit and a card that is not a campaign card "
            "awaiting online activation answer the same 404. A wrong code counts on the card "
            "(422 with tries_left); the campaign.activation_tries_max-th locks online "
            "activation (423, also for the right code, until the back office unlocks it)."
        ),
        tag="self-service",
        roles=SELF,
        handler=selfservice.activate,
        body=ActivationRequest,
        self_service=True,
        answers={
            200: Answer("The card is active; its token (shown this once).", ActivationAnswer),
            404: Answer("No campaign card with that number awaits online activation."),
            409: Answer("The card is not awaiting online activation, or it has expired."),
            422: Answer(
                "A field is wrong (`field` names it), or the activation code is wrong: code "
                "`wrong_code`, `tries_left` more wrong codes before the lock."
            ),
            423: Answer("Online activation of the card is locked (too many wrong codes)."),
        },
    ),
)

assert len({op.id for op in OPERATIONS}) == len(OPERATIONS), "operation ids are unique"
