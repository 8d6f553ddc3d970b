"""Who stands behind a card's value: funding and breakage accounts (DESIGN §4).

Every product has a *funding account*: the issuer's float for gift cards, the chain's central
campaign account for campaign cards. Card purses are sub-ledgers of their product's funding
account, so the funding account is not a ledger account of its own: the settlement report
derives its position from the card transfers (:mod:`settlement.net`). Its name is a label:

- ``float`` for gift cards (one per currency: the currency is a column beside it);
- ``campaign:<chain>`` for campaign cards.

*Breakage* accounts are real ledger accounts (one per unit, like every account): what is left
on a card when it expires moves there (:mod:`settlement.expiry`):

- ``breakage:issuer:<currency>`` for gift cards;
- ``breakage:<chain>:<currency>`` for campaign cards (their breakage belongs to the chain).

A product of another kind (points, later) has no rule yet: asking for its accounts raises
:class:`UnknownKindError`, so that no report or job guesses.
"""

from __future__ import annotations

from authsrv.model import Card, Product
from authsrv.store import Ledger

__all__ = [
    "BREAKAGE_PREFIX",
    "CARD_PREFIX",
    "KIND_CAMPAIGN",
    "KIND_GIFT",
    "STORE_PREFIX",
    "CardProducts",
    "UnknownKindError",
    "account_unit",
    "breakage_account",
    "funding_account",
    "store_of_account",
]

KIND_GIFT = "gift"
KIND_CAMPAIGN = "campaign"
FLOAT_ACCOUNT = "float"
CAMPAIGN_PREFIX = "campaign:"
BREAKAGE_PREFIX = "breakage:"
ISSUER = "issuer"
STORE_PREFIX = "store:"
CARD_PREFIX = "card:"


class UnknownKindError(ValueError):
    """A product of a kind that has no funding rule yet (the settlement rules need one)."""


def funding_account(product: Product) -> str:
    """The funding account of ``product`` (a label; its currency is the product's).

    Error handling: :class:`UnknownKindError` for a kind without a rule.
    """
    if product.kind == KIND_GIFT:
        return FLOAT_ACCOUNT
    if product.kind == KIND_CAMPAIGN:
        return f"{CAMPAIGN_PREFIX}{product.chain}"
    raise UnknownKindError(
        f"product {product.id} is of kind {product.kind!r}, which has no funding account "
        f"(known: {KIND_GIFT}, {KIND_CAMPAIGN})"
    )


def breakage_account(product: Product) -> str:
    """The ledger account that takes what is left on an expired card of ``product``.

    Error handling: :class:`UnknownKindError` for a kind without a rule.
    """
    if product.kind == KIND_GIFT:
        owner = ISSUER
    elif product.kind == KIND_CAMPAIGN:
        owner = product.chain
    else:
        raise UnknownKindError(
            f"product {product.id} is of kind {product.kind!r}, which has no breakage account"
        )
    return f"{BREAKAGE_PREFIX}{owner}:{product.currency}"


def account_unit(key: str) -> str:
    """The unit an account key ends with (every key but a card purse's ends with its unit).

    >>> account_unit("store:S0001:978")
    '978'
    """
    return key.rsplit(":", 1)[-1]


def store_of_account(key: str) -> str:
    """The store id of a settlement account key ``store:<id>:<unit>`` (the id may hold ``:``).

    >>> store_of_account("store:S:1:978")
    'S:1'
    """
    assert key.startswith(STORE_PREFIX), key
    return key[len(STORE_PREFIX) : key.rindex(":")]


class CardProducts:
    """Each card's record and product, read once (a day's transfers touch a card many times).

    Resource handling: keeps one entry per distinct card seen (a million cards take some
    100 MB); make one per report, not per process.
    """

    def __init__(self, led: Ledger) -> None:
        self.led = led
        self._cards: dict[int, tuple[Card, Product]] = {}

    def __call__(self, card_id: int) -> tuple[Card, Product]:
        hit = self._cards.get(card_id)
        if hit is None:
            card = self.led.card(card_id)
            assert card is not None, f"the journal names a missing card {card_id}"
            product = self.led.product(card.product)
            assert product is not None, f"card {card_id} has a missing product {card.product}"
            hit = self._cards[card_id] = (card, product)
        return hit
