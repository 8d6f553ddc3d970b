"""Administrative operations on the store: products, stores, terminals, card issue, card view.

Each runs in its own write transaction (LMDB serialises it with a running host's writer).
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import msgspec

from authsrv.engine import value_expired
from authsrv.model import (
    KIND_CAMPAIGN,
    Card,
    CardState,
    Product,
    Store,
    Terminal,
    Transfer,
    card_account,
)
from authsrv.products import ProductError, change_product, check_stores_known, validate_product
from authsrv.store import Ledger, LedgerStore
from keys import KeyStore
from protocol.cards import luhn_check_digit, luhn_valid

__all__ = [
    "AdminError",
    "CardView",
    "add_product",
    "add_store",
    "add_terminal",
    "card_view",
    "issue_cards",
    "issue_cards_into",
    "register_card",
    "update_product",
]

ISSUE_COUNT_MAX = 1_000_000
HISTORY_ROWS_MAX = 50
# Random card numbers: this many tries to find one not yet used before the range counts as full.
PAN_TRIES_MAX = 1000


class AdminError(Exception):
    """One line for the operator: what is wrong and how to fix it."""


def add_product(
    store: LedgerStore, product: Product, *, now_ms: int | None = None, actor: str = "cli"
) -> None:
    """Add a product as its version 1 (audited).

    Error handling: :class:`AdminError` with the option to fix.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        validate_product(product)
    except ProductError as exc:
        raise AdminError(str(exc)) from None
    first = msgspec.structs.replace(product, version=1, changed_ms=now_ms)
    with store.write() as led:
        if led.product(product.id) is not None:
            raise AdminError(
                f"product {product.id} exists already; change it with `products change`"
            )
        try:
            check_stores_known(led, first)
        except ProductError as exc:
            raise AdminError(str(exc)) from None
        led.put_product(first)
        led.add_audit(
            at_ms=now_ms,
            actor=actor,
            action="product_add",
            target=f"product:{product.id}",
            detail={"version": 1, "kind": product.kind},
        )


def update_product(
    store: LedgerStore,
    product_id: str,
    changes: dict[str, object],
    *,
    now_ms: int | None = None,
    actor: str = "cli",
) -> Product:
    """Write the next version of a product (the earlier ones are kept; audited).

    Error handling: :class:`AdminError` with what to fix.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        with store.write() as led:
            return change_product(led, product_id, changes, now_ms, actor)
    except ProductError as exc:
        raise AdminError(str(exc)) from None


def add_store(store: LedgerStore, record: Store) -> None:
    if not 1 <= len(record.id) <= 15 or not record.id.isascii() or not record.id.isprintable():
        raise AdminError("--id must be 1 to 15 printable ASCII characters (field 42)")
    with store.write() as led:
        if led.store(record.id) is not None:
            raise AdminError(f"store {record.id} exists already")
        led.put_store(record)


def add_terminal(store: LedgerStore, record: Terminal) -> None:
    if len(record.id) != 8 or not record.id.isascii() or not record.id.isprintable():
        raise AdminError("--id must be exactly 8 printable ASCII characters (field 41)")
    with store.write() as led:
        if led.terminal(record.id) is not None:
            raise AdminError(f"terminal {record.id} exists already")
        if led.store(record.store_id) is None:
            raise AdminError(f"store {record.store_id} does not exist; add it with `stores add`")
        led.put_terminal(record)


def _check_expiry(expiry: str) -> None:
    if not (
        len(expiry) == 4 and expiry.isascii() and expiry.isdigit() and 1 <= int(expiry[2:]) <= 12
    ):
        raise AdminError("--expiry must be YYMM, e.g. 2912")


def _expiry_from(now_ms: int, months: int) -> str:
    t = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    index = t.year * 12 + (t.month - 1) + months
    return f"{(index // 12) % 100:02d}{index % 12 + 1:02d}"


def issue_cards(
    store: LedgerStore,
    keys: KeyStore,
    product_id: str,
    count: int,
    out: Path,
    *,
    expiry: str | None = None,
    now_ms: int | None = None,
) -> list[int]:
    """Create ``count`` cards in state issued; write their numbers once to ``out`` (0600).

    The file is the one place a full card number is written on purpose (DESIGN §6); the store
    keeps only the keyed hash, the first six and the last four digits.

    Error handling: :class:`AdminError`; on any failure the file is removed and no card exists.
    """
    if not 1 <= count <= ISSUE_COUNT_MAX:
        raise AdminError(f"--count must be between 1 and {ISSUE_COUNT_MAX}")
    if expiry is not None:
        _check_expiry(expiry)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AdminError(f"{out} exists; card files are written once, choose a new name") from None
    except OSError as exc:
        raise AdminError(f"cannot create {out}: {exc.strerror}") from None
    ids: list[int] = []
    try:
        with os.fdopen(fd, "w", newline="") as fh, store.write() as led:
            product = led.product(product_id)
            if product is None:
                raise AdminError(f"product {product_id} does not exist; add it with `products add`")
            card_expiry = expiry or _expiry_from(now_ms, product.expiry_months)
            writer = csv.writer(fh)
            writer.writerow(["pan", "expiry", "product", "card_id"])
            random_len = product.pan_len - len(product.prefix) - 1
            for _ in range(count):
                pan, digest = _new_pan(
                    led_taken=led.card_hash_taken,
                    keys=keys,
                    prefix=product.prefix,
                    random_len=random_len,
                )
                card = _put_new_card(led, product, pan, digest, card_expiry, now_ms)
                writer.writerow([pan, card_expiry, product.id, card.id])
                ids.append(card.id)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        raise
    return ids


def _put_new_card(
    led: Ledger, product: Product, pan: str, digest: bytes, expiry: str, now_ms: int
) -> Card:
    card = Card(
        id=led.next_seq("card"),
        product=product.id,
        state=CardState.ISSUED,
        first6=pan[:6],
        last4=pan[-4:],
        pan_len=len(pan),
        expiry=expiry,
        hash_version=digest[0],
        issued_ms=now_ms,
        product_version=product.version,
    )
    led.put_card(card, digest)
    return card


def register_card(
    store: LedgerStore, keys: KeyStore, product_id: str, pan: str, expiry: str, now_ms: int
) -> int:
    """Register one known card number (cards made elsewhere, e.g. by a card manufacturer).

    Error handling: :class:`AdminError` for a number outside the product's range, a bad check
    digit, a number already registered, or a campaign product (DESIGN §6: campaign cards are
    drawn at random within their range, by :func:`issue_cards` only).
    """
    _check_expiry(expiry)
    with store.write() as led:
        product = led.product(product_id)
        if product is None:
            raise AdminError(f"product {product_id} does not exist")
        if product.kind == KIND_CAMPAIGN:
            raise AdminError(
                f"product {product_id} is a campaign: its cards are drawn at random by "
                "`cards issue`, not registered one by one"
            )
        if not (pan.startswith(product.prefix) and len(pan) == product.pan_len):
            raise AdminError("card number is not in the product's range")
        if not luhn_valid(pan):
            raise AdminError("card number has a bad check digit")
        if any(led.card_hash_taken(h) for h in keys.pan_hashes(pan)):
            raise AdminError("card number is already registered")
        return _put_new_card(led, product, pan, keys.pan_hash(pan), expiry, now_ms).id


def _new_pan(
    *, led_taken: Callable[[bytes], bool], keys: KeyStore, prefix: str, random_len: int
) -> tuple[str, bytes]:
    for _ in range(PAN_TRIES_MAX):
        body = prefix + "".join(str(secrets.randbelow(10)) for _ in range(random_len))
        pan = body + luhn_check_digit(body)
        hashes = keys.pan_hashes(pan)
        if not any(led_taken(h) for h in hashes):
            return pan, keys.pan_hash(pan)
    raise AdminError(f"card range {prefix} is too full to find a free number")


@dataclass(frozen=True, slots=True)
class CardView:
    card: Card
    product: Product
    balance_minor: int
    expired: bool
    history: list[Transfer]


def card_view(
    store: LedgerStore, keys: KeyStore, *, pan: str | None = None, card_id: int | None = None
) -> CardView:
    with store.read() as led:
        if pan is not None:
            card = led.card_by_hashes(keys.pan_hashes(pan))
        else:
            assert card_id is not None
            card = led.card(card_id)
        if card is None:
            raise AdminError("no such card")
        product = led.product_version(card.product, card.product_version) or led.product(
            card.product
        )
        assert product is not None
        return CardView(
            card=card,
            product=product,
            balance_minor=led.balance(card_account(card.id)),
            expired=value_expired(card, int(time.time() * 1000)),
            history=led.card_history(card.id, HISTORY_ROWS_MAX),
        )


def issue_cards_into(
    led: Ledger,
    keys: KeyStore,
    product_id: str,
    count: int,
    out: TextIO,
    *,
    now_ms: int,
    expiry: str | None = None,
) -> list[int]:
    """:func:`issue_cards` inside the caller's write transaction (the HTTP API's writer job):
    the card file's rows go to ``out``, which the caller created (0600) and removes when the
    transaction does not commit.

    Error handling: :class:`AdminError` (nothing is written to the store then).
    """
    if not 1 <= count <= ISSUE_COUNT_MAX:
        raise AdminError(f"count must be between 1 and {ISSUE_COUNT_MAX}")
    if expiry is not None:
        _check_expiry(expiry)
    product = led.product(product_id)
    if product is None:
        raise AdminError(f"product {product_id} does not exist")
    card_expiry = expiry or _expiry_from(now_ms, product.expiry_months)
    writer = csv.writer(out)
    writer.writerow(["pan", "expiry", "product", "card_id"])
    random_len = product.pan_len - len(product.prefix) - 1
    ids: list[int] = []
    for _ in range(count):
        pan, digest = _new_pan(
            led_taken=led.card_hash_taken, keys=keys, prefix=product.prefix, random_len=random_len
        )
        card = _put_new_card(led, product, pan, digest, card_expiry, now_ms)
        writer.writerow([pan, card_expiry, product.id, card.id])
        ids.append(card.id)
    return ids
