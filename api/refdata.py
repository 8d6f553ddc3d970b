"""Back-office reference data: stores, terminals, products (gift and campaign), the audit log,
and who the caller is. A store key sees its own store and its terminals only (anything else
answers 404, as if it did not exist) and may add and (de)activate its own terminals.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from api.errors import conflict, forbidden, invalid, not_found
from api.routing import Call, Reply
from api.schemas import (
    AuditPage,
    Me,
    ProductChange,
    ProductCreate,
    ProductDetail,
    ProductList,
    StoreCreate,
    StoreList,
    StoreOut,
    StoreUpdate,
    TerminalCreate,
    TerminalList,
    TerminalOut,
    TerminalUpdate,
)
from api.views import audit_out, product_out, store_out, terminal_out
from authsrv.model import ApiKey, ApiRole, Product, Store, Terminal
from authsrv.products import (
    ProductError,
    change_product,
    check_stores_known,
    defaults_of,
    validate_product,
)
from authsrv.store import Ledger
from protocol.currency import CURRENCIES

__all__ = [
    "create_product",
    "create_store",
    "create_terminal",
    "get_product",
    "get_store",
    "get_terminal",
    "list_audit",
    "list_products",
    "list_stores",
    "list_terminals",
    "me",
    "update_product",
    "update_store",
    "update_terminal",
]

AUDIT_PAGE_MAX = 1000

# Product messages name command-line options; the API names its fields.
_OPTION_FIELDS = {
    "--fixed-value": "fixed_value_minor",
    "--load-min": "load_min_minor",
    "--load-max": "load_max_minor",
    "--max-balance": "balance_max_minor",
    "--min-redeem": "redeem_min_minor",
    "--expiry-months": "expiry_months",
    "--pan-length": "pan_len",
    "--prefix": "prefix",
    "--kind": "kind",
    "--id": "id",
    "--share-bp": "share_bp",
    "--min-purchase": "min_purchase_minor",
    "--max-value": "max_value_minor",
    "--expiry-days": "expiry_days",
    "--expiry-date": "expiry_date",
    "--issue-stores": "issue_stores",
    "--issue-chains": "issue_chains",
    "--redeem-stores": "redeem_stores",
    "--redeem-chains": "redeem_chains",
    "--online-activation": "online_activation",
    "--cashout": "cashout",
}
_OPTION = re.compile(r"--[a-z][a-z-]*")


def _scoped(key: ApiKey) -> str | None:
    """The one store a store key is bound to (None: every store)."""
    return key.store_id if key.role is ApiRole.STORE else None


async def me(call: Call) -> Reply:
    k = call.key
    return Reply(
        200,
        Me(key_id=k.id, name=k.name, role=k.role.value, store_id=k.store_id or None),
    )


# -- stores ----------------------------------------------------------------------------------


async def list_stores(call: Call) -> Reply:
    only = _scoped(call.key)
    with call.ctx.store.read() as led:
        stores = [store_out(s) for s in led.stores() if only is None or s.id == only]
    return Reply(200, StoreList(stores))


def _store(led: Ledger, store_id: str, only: str | None) -> Store:
    store = led.store(store_id) if only is None or store_id == only else None
    if store is None:
        raise not_found(f"no store {store_id}")
    return store


async def get_store(call: Call) -> Reply:
    with call.ctx.store.read() as led:
        store = _store(led, call.params["store_id"], _scoped(call.key))
    return Reply(200, store_out(store))


async def create_store(call: Call) -> Reply:
    body: StoreCreate = call.body
    now_ms = call.ctx.clock_ms()

    def job(led: Ledger) -> StoreOut:
        if led.store(body.id) is not None:
            raise conflict(f"store {body.id} exists already", "id")
        store = Store(id=body.id, name=body.name, chain=body.chain)
        led.put_store(store)
        led.add_audit(
            at_ms=now_ms,
            actor=call.actor,
            action="store_add",
            target=f"store:{store.id}",
            detail={"endpoint": "POST /v1/stores", "name": store.name, "chain": store.chain},
        )
        return store_out(store)

    return Reply(201, await call.ctx.writer.write(job))


async def update_store(call: Call) -> Reply:
    body: StoreUpdate = call.body
    if body.active is None and body.name is None:
        raise invalid("give at least one of active and name")
    store_id: str = call.params["store_id"]
    now_ms = call.ctx.clock_ms()

    def job(led: Ledger) -> StoreOut:
        store = _store(led, store_id, None)
        changes: dict[str, Any] = {}
        if body.active is not None and body.active != store.active:
            changes["active"] = body.active
        if body.name is not None and body.name != store.name:
            changes["name"] = body.name
        if not changes:
            return store_out(store)
        new = msgspec.structs.replace(store, **changes)
        led.put_store(new)
        detail: dict[str, str | int] = {"endpoint": "PATCH /v1/stores/{store_id}"}
        for name in changes:
            detail[f"{name}_before"] = _text(getattr(store, name))
            detail[f"{name}_after"] = _text(getattr(new, name))
        led.add_audit(
            at_ms=now_ms,
            actor=call.actor,
            action="store_update",
            target=f"store:{store.id}",
            detail=detail,
        )
        return store_out(new)

    return Reply(200, await call.ctx.writer.write(job))


def _text(value: object) -> str | int:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


# -- terminals -------------------------------------------------------------------------------


async def list_terminals(call: Call) -> Reply:
    only = _scoped(call.key)
    with call.ctx.store.read() as led:
        terminals = [terminal_out(t) for t in led.terminals() if only is None or t.store_id == only]
    return Reply(200, TerminalList(terminals))


def _terminal(led: Ledger, terminal_id: str, only: str | None) -> Terminal:
    terminal = led.terminal(terminal_id)
    if terminal is None or (only is not None and terminal.store_id != only):
        raise not_found(f"no terminal {terminal_id}")
    return terminal


async def get_terminal(call: Call) -> Reply:
    with call.ctx.store.read() as led:
        terminal = _terminal(led, call.params["terminal_id"], _scoped(call.key))
    return Reply(200, terminal_out(terminal))


async def create_terminal(call: Call) -> Reply:
    body: TerminalCreate = call.body
    only = _scoped(call.key)
    if only is not None and body.store_id != only:
        raise forbidden(f"this key adds terminals to store {only} only")
    now_ms = call.ctx.clock_ms()

    def job(led: Ledger) -> TerminalOut:
        if led.terminal(body.id) is not None:
            raise conflict(f"terminal {body.id} exists already", "id")
        if led.store(body.store_id) is None:
            raise invalid(f"store {body.store_id} does not exist", "store_id")
        terminal = Terminal(
            id=body.id, store_id=body.store_id, signon_required=body.signon_required
        )
        led.put_terminal(terminal)
        led.add_audit(
            at_ms=now_ms,
            actor=call.actor,
            action="terminal_add",
            target=f"terminal:{terminal.id}",
            detail={
                "endpoint": "POST /v1/terminals",
                "store": terminal.store_id,
                "signon_required": _text(terminal.signon_required),
            },
        )
        return terminal_out(terminal)

    return Reply(201, await call.ctx.writer.write(job))


async def update_terminal(call: Call) -> Reply:
    body: TerminalUpdate = call.body
    terminal_id: str = call.params["terminal_id"]
    only = _scoped(call.key)
    now_ms = call.ctx.clock_ms()

    def job(led: Ledger) -> TerminalOut:
        terminal = _terminal(led, terminal_id, only)
        if terminal.active == body.active:
            return terminal_out(terminal)
        new = msgspec.structs.replace(terminal, active=body.active)
        led.put_terminal(new)
        led.add_audit(
            at_ms=now_ms,
            actor=call.actor,
            action="terminal_update",
            target=f"terminal:{terminal.id}",
            detail={
                "endpoint": "PATCH /v1/terminals/{terminal_id}",
                "store": terminal.store_id,
                "active_before": _text(terminal.active),
                "active_after": _text(new.active),
            },
        )
        return terminal_out(new)

    return Reply(200, await call.ctx.writer.write(job))


# -- products ----------------------------------------------------------------------------------


async def list_products(call: Call) -> Reply:
    kind = call.params.get("kind")
    with call.ctx.store.read() as led:
        products = [product_out(p) for p in led.products() if kind is None or p.kind == kind]
    return Reply(200, ProductList(products))


async def get_product(call: Call) -> Reply:
    product_id: str = call.params["product_id"]
    with call.ctx.store.read() as led:
        current = led.product(product_id)
        if current is None:
            raise not_found(f"no product {product_id}")
        versions = led.product_versions(product_id)
    return Reply(
        200,
        ProductDetail(product=product_out(current), versions=[product_out(p) for p in versions]),
    )


def _settings(body: ProductChange) -> dict[str, Any]:
    """The settings a body gives (None: left out); lists of names as the store keeps them."""
    out: dict[str, Any] = {}
    for name in ProductChange.__struct_fields__:
        value = getattr(body, name)
        if value is None:
            continue
        out[name] = tuple(sorted(set(value))) if isinstance(value, list) else value
    return out


def _product_error(exc: ProductError) -> Exception:
    text = str(exc)
    options = _OPTION.findall(text)
    field = _OPTION_FIELDS.get(options[0]) if options else None
    for option in sorted(set(options), key=len, reverse=True):
        text = text.replace(option, _OPTION_FIELDS.get(option, option))
    return invalid(text, field)


async def create_product(call: Call) -> Reply:
    body: ProductCreate = call.body
    if body.currency not in CURRENCIES:
        raise invalid(f"currency {body.currency} is not a known ISO 4217 numeric code", "currency")
    given = _settings(body)
    settings = {**defaults_of(body.kind), **given}
    if body.kind == "campaign" and "balance_max_minor" not in given:
        settings["balance_max_minor"] = settings.get("max_value_minor", 0)
    now_ms = call.ctx.clock_ms()
    product = Product(
        id=body.id,
        chain=body.chain,
        kind=body.kind,
        currency=body.currency,
        prefix=body.prefix,
        pan_len=body.pan_len,
        version=1,
        changed_ms=now_ms,
        **settings,
    )
    try:
        validate_product(product)
    except ProductError as exc:
        raise _product_error(exc) from None

    def job(led: Ledger) -> Product:
        if led.product(product.id) is not None:
            raise conflict(f"product {product.id} exists already; change it with PATCH", "id")
        try:
            check_stores_known(led, product)
        except ProductError as exc:
            raise _product_error(exc) from None
        led.put_product(product)
        led.add_audit(
            at_ms=now_ms,
            actor=call.actor,
            action="product_add",
            target=f"product:{product.id}",
            detail={"endpoint": "POST /v1/products", "version": 1, "kind": product.kind},
        )
        return product

    return Reply(201, product_out(await call.ctx.writer.write(job)))


async def update_product(call: Call) -> Reply:
    body: ProductChange = call.body
    changes = _settings(body)
    if not changes:
        raise invalid("give at least one setting to change")
    product_id: str = call.params["product_id"]
    now_ms = call.ctx.clock_ms()

    def job(led: Ledger) -> Product:
        if led.product(product_id) is None:
            raise not_found(f"no product {product_id}")
        try:
            return change_product(led, product_id, changes, now_ms, call.actor)
        except ProductError as exc:
            if "already has these settings" in str(exc):
                raise conflict(str(exc)) from None
            raise _product_error(exc) from None

    return Reply(200, product_out(await call.ctx.writer.write(job)))


# -- the audit log -----------------------------------------------------------------------------


async def list_audit(call: Call) -> Reply:
    after: int = call.params.get("after") or 0
    limit: int = call.params.get("limit") or 100
    with call.ctx.store.read() as led:
        entries = led.audit_after(after, min(limit, AUDIT_PAGE_MAX))
    return Reply(
        200,
        AuditPage(
            entries=[audit_out(e) for e in entries],
            next_after=entries[-1].seq if entries else after,
        ),
    )
