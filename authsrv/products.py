"""Products as data: validation, versions, and which version governs a card (docs/products.md).

A product is a record (:class:`authsrv.model.Product`). A change never rewrites it: it writes
the next version, and every version stays in the ``product_versions`` database. A card records
the version its value was created under (its activation, or its campaign issue); from then on
the rules that apply to that value (value expiry, where it is accepted, its limits) come from
that version, so a later change does not rewrite the history of cards already sold. A card
that is still ``issued`` (no value yet) follows the current version.

What a version may not change: ``id``, ``kind``, ``chain``, ``currency``, ``prefix`` and
``pan_len`` (they fix the card range and the funding account every settlement report places
the product's cards under). Make a new product for those.

Error handling: :class:`ProductError`, one line saying what is wrong and how to fix it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec

from authsrv.engine import BP_PER_UNIT
from authsrv.model import KIND_CAMPAIGN, KIND_GIFT, Card, CardState, Product
from authsrv.store import Ledger

__all__ = [
    "CAMPAIGN_DEFAULTS",
    "FIXED_FIELDS",
    "GIFT_DEFAULTS",
    "KINDS",
    "ProductError",
    "change_product",
    "check_stores_known",
    "defaults_of",
    "governing_product",
    "validate_product",
]

KINDS = (KIND_GIFT, KIND_CAMPAIGN)
# Fields that identify the product's cards and funding: the same in every version.
FIXED_FIELDS = ("id", "kind", "chain", "currency", "prefix", "pan_len")
# Fields a change may not set directly (the store sets them).
MANAGED_FIELDS = ("version", "changed_ms")
EXPIRY_DAYS_MAX = 3660  # ten years of days
EXPIRY_MONTHS_MAX = 240
CAMPAIGN_FIELDS = (
    "share_bp",
    "min_purchase_minor",
    "max_value_minor",
    "expiry_days",
    "expiry_date",
    "issue_stores",
    "issue_chains",
    "online_activation",
)
# The command-line option of each field, for messages that say what to fix.
OPTION = {
    "share_bp": "--share-bp",
    "min_purchase_minor": "--min-purchase",
    "max_value_minor": "--max-value",
    "expiry_days": "--expiry-days",
    "expiry_date": "--expiry-date",
    "issue_stores": "--issue-stores",
    "issue_chains": "--issue-chains",
    "online_activation": "--online-activation",
}
# The defaults of a new product's settings per kind, for `authsrv products add` and the API
# (a campaign's value is computed: no loads, no cash-out).
GIFT_DEFAULTS: dict[str, Any] = {
    "fixed_value_minor": 0,
    "load_min_minor": 100,
    "load_max_minor": 50_000,
    "balance_max_minor": 100_000,
    "redeem_min_minor": 1,
    "expiry_months": 36,
    "reloadable": True,
    "cashout": False,
    "pin_required": False,
    "completion_tolerance_bp": 0,
}
CAMPAIGN_DEFAULTS: dict[str, Any] = {
    **GIFT_DEFAULTS,
    "load_min_minor": 0,
    "load_max_minor": 0,
    "reloadable": False,
    "online_activation": True,
}


def defaults_of(kind: str) -> dict[str, Any]:
    """The default settings of a new product of ``kind``."""
    return dict(CAMPAIGN_DEFAULTS if kind == KIND_CAMPAIGN else GIFT_DEFAULTS)


class ProductError(Exception):
    """One line for the operator: what is wrong with a product and how to fix it."""


def _is_day(text: str) -> bool:
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        return False
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def _check_names(option: str, names: tuple[str, ...]) -> None:
    for name in names:
        if not (1 <= len(name) <= 15 and name.isascii() and name.isprintable()) or "," in name:
            raise ProductError(
                f"{option} holds {name!r}; give store ids or chains of 1-15 printable ASCII "
                "characters, separated by commas"
            )


def validate_product(product: Product) -> None:
    """Every rule a product record must meet, whatever its kind.

    Error handling: :class:`ProductError` naming the option to fix.
    """
    if product.kind not in KINDS:
        raise ProductError(f"--kind must be one of {', '.join(KINDS)}")
    if not (product.id and product.id.isascii() and product.id.isprintable()):
        raise ProductError("--id must be printable ASCII, e.g. GIFT")
    if not (product.prefix.isdigit() and 4 <= len(product.prefix) <= 11):
        raise ProductError("--prefix must be 4 to 11 digits (the card range)")
    if not 13 <= product.pan_len <= 19 or product.pan_len - len(product.prefix) < 6:
        raise ProductError("--pan-length must be 13-19 and leave at least 6 random digits")
    if not 1 <= product.expiry_months <= EXPIRY_MONTHS_MAX:
        raise ProductError(f"--expiry-months must be between 1 and {EXPIRY_MONTHS_MAX}")
    if product.load_min_minor > product.load_max_minor:
        raise ProductError("--load-min is above --load-max")
    if max(product.load_max_minor, product.fixed_value_minor) > product.balance_max_minor:
        raise ProductError("--load-max (or --fixed-value) is above --max-balance")
    _check_names("--redeem-stores", product.redeem_stores)
    _check_names("--redeem-chains", product.redeem_chains)
    if product.kind == KIND_CAMPAIGN:
        _validate_campaign(product)
        return
    for name in CAMPAIGN_FIELDS:
        if getattr(product, name) != _DEFAULTS[name]:
            raise ProductError(f"{OPTION[name]} is for campaign products (--kind campaign)")


_DEFAULTS: dict[str, object] = {
    f.name: f.default for f in msgspec.structs.fields(Product) if f.name in CAMPAIGN_FIELDS
}
assert set(_DEFAULTS) == set(CAMPAIGN_FIELDS), "every campaign field has a default"


def _validate_campaign(product: Product) -> None:
    if not 1 <= product.share_bp <= BP_PER_UNIT:
        raise ProductError("--share-bp must be 1 to 10000 basis points (3000 = 30 %)")
    if product.min_purchase_minor < 0:
        raise ProductError("--min-purchase must not be negative")
    if product.max_value_minor < 1:
        raise ProductError("--max-value must be above zero: the most one issue may load")
    if product.max_value_minor > product.balance_max_minor:
        raise ProductError("--max-value is above --max-balance")
    if bool(product.expiry_days) == bool(product.expiry_date):
        raise ProductError(
            "give exactly one of --expiry-days (validity from the issue) and --expiry-date "
            "(a fixed last day, YYYYMMDD)"
        )
    if product.expiry_days and not 1 <= product.expiry_days <= EXPIRY_DAYS_MAX:
        raise ProductError(f"--expiry-days must be between 1 and {EXPIRY_DAYS_MAX}")
    if product.expiry_date and not _is_day(product.expiry_date):
        raise ProductError("--expiry-date must be a date YYYYMMDD, e.g. 20270331")
    if product.fixed_value_minor:
        raise ProductError("--fixed-value is for gift products: a campaign's value is computed")
    if product.reloadable or product.cashout:
        raise ProductError("campaign cards cannot be reloaded or cashed out (drop --cashout)")
    _check_names("--issue-stores", product.issue_stores)
    _check_names("--issue-chains", product.issue_chains)


def check_stores_known(led: Ledger, product: Product) -> None:
    """The stores a product's scopes name exist (chains are free: stores join them later)."""
    for option, names in (
        ("--issue-stores", product.issue_stores),
        ("--redeem-stores", product.redeem_stores),
    ):
        for name in names:
            if led.store(name) is None:
                raise ProductError(
                    f"{option}: store {name} does not exist; add it with `authsrv stores add` "
                    "or leave it out"
                )


def change_product(
    led: Ledger, product_id: str, changes: dict[str, Any], now_ms: int, actor: str
) -> Product:
    """Write the next version of ``product_id`` with ``changes`` (field -> new value) in the
    caller's write transaction, keep the earlier versions, and audit it.

    Error handling: :class:`ProductError` for an unknown product, no change, a field that may
    not change, or a version that breaks a rule (nothing is written then).
    """
    current = led.product(product_id)
    if current is None:
        raise ProductError(f"product {product_id} does not exist; add it with `products add`")
    for name in changes:
        if name in FIXED_FIELDS:
            raise ProductError(
                f"a product's {name} cannot change between versions; make a new product"
            )
        if name in MANAGED_FIELDS or name not in Product.__struct_fields__:
            raise ProductError(f"{name} is not a product setting")
    changed = {k: v for k, v in changes.items() if getattr(current, k) != v}
    if not changed:
        raise ProductError(f"product {product_id} already has these settings; nothing to change")
    new = msgspec.structs.replace(
        current, **changed, version=current.version + 1, changed_ms=now_ms
    )
    validate_product(new)
    check_stores_known(led, new)
    led.keep_product_version(current)  # a product from before versions has no version record
    led.put_product(new)
    led.add_audit(
        at_ms=now_ms,
        actor=actor,
        action="product_change",
        target=f"product:{product_id}",
        detail={
            "version": new.version,
            **{k: _audit_value(v) for k, v in sorted(changed.items())},
        },
    )
    return new


def _audit_value(value: object) -> str | int:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def governing_product(led: Ledger, card: Card) -> Product:
    """The product version that governs ``card`` now: the current one while the card is
    ``issued`` (its value is created under today's rules), else the version its value was
    created under (cards from before versions: the current one)."""
    current = led.product(card.product)
    assert current is not None, f"card {card.id} has no product {card.product}"
    if (
        card.state is CardState.ISSUED
        or not card.product_version
        or card.product_version == current.version
    ):
        return current
    version = led.product_version(card.product, card.product_version)
    assert version is not None, f"card {card.id}: product {card.product} v{card.product_version}"
    return version
