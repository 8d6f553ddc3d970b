"""``authsrv``: one command line for operators, integrators and testers (DESIGN §7).

Every subcommand has ``--help`` ending with examples. A bad argument or setting gets one line on
stderr saying what is wrong and how to fix it, and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio

from authsrv.admin import (
    AdminError,
    add_product,
    add_store,
    add_terminal,
    card_view,
    issue_cards,
    update_product,
)
from authsrv.app import day_clock, init_store, open_host, open_keys, open_store
from authsrv.config import Config, ConfigError, load_config
from authsrv.logs import configure_logging, get_logger
from authsrv.model import Product, Store, Terminal
from authsrv.products import defaults_of
from authsrv.store import StoreError, check_ledger
from keys import KeyStoreError
from protocol.currency import CURRENCIES, format_minor, parse_major
from simulators.terminal import SimError

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem (check, scenario)
EXIT_USAGE = 2  # bad argument, setting or state


class UsageError(Exception):
    """One line for the user: what is wrong and how to fix it."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command and where help is."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(EXIT_USAGE)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add(
    sub: Any,
    name: str,
    help_text: str,
    examples: Sequence[str],
    func: Callable[..., int],
    store_args: bool = True,
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=_examples(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
    if store_args:
        _data_arg(p)
        _config_arg(p)
    return p


def _group(sub: Any, name: str, help_text: str, examples: Sequence[str]) -> Any:
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=_examples(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="store directory (default: $AUTHSRV_DATA, else store.path of the config, 'data')",
    )


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML configuration file (default: $AUTHSRV_CONFIG)",
    )


def _load_cfg(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Config:
    path = getattr(args, "config", None) or (
        Path(os.environ["AUTHSRV_CONFIG"]) if "AUTHSRV_CONFIG" in os.environ else None
    )
    over = dict(overrides or {})
    data = getattr(args, "data", None) or os.environ.get("AUTHSRV_DATA")
    if data:
        over["store.path"] = str(data)
    return load_config(path, os.environ, over)


def _money(text: str, currency: str, what: str) -> int:
    try:
        return parse_major(text, currency)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


# -- init, products, stores, terminals ---------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    store, generated = init_store(cfg.data_path, cfg.store.map_size_mib, day_clock(cfg))
    store.close()
    print(f"created store at {cfg.data_path}")
    if generated:
        print(
            f"WARNING: generated a development key-encrypting key in {cfg.data_path}/master.kek; "
            "for production keep the KEK outside the data directory (AUTHSRV_KEK_FILE)",
            file=sys.stderr,
        )
    return EXIT_OK


# Product settings as options: (option, field, kind of value). Money in major units.
_MONEY_OPTIONS = (
    ("fixed_value", "fixed_value_minor"),
    ("load_min", "load_min_minor"),
    ("load_max", "load_max_minor"),
    ("max_balance", "balance_max_minor"),
    ("min_redeem", "redeem_min_minor"),
    ("min_purchase", "min_purchase_minor"),
    ("max_value", "max_value_minor"),
)
_PLAIN_OPTIONS = (
    ("expiry_months", "expiry_months"),
    ("share_bp", "share_bp"),
    ("expiry_days", "expiry_days"),
    ("expiry_date", "expiry_date"),
    ("cashout", "cashout"),
    ("pin_required", "pin_required"),
    ("online_activation", "online_activation"),
)
_LIST_OPTIONS = (
    ("issue_stores", "issue_stores"),
    ("issue_chains", "issue_chains"),
    ("redeem_stores", "redeem_stores"),
    ("redeem_chains", "redeem_chains"),
)


def _names(text: str) -> tuple[str, ...]:
    """``--issue-chains ACME,BETA`` -> ("ACME", "BETA"); "" -> () (the product's chain)."""
    return tuple(sorted({n.strip() for n in text.split(",") if n.strip()}))


def _product_settings(args: argparse.Namespace, currency: str) -> dict[str, Any]:
    """The product settings given on the command line (options left out are not included)."""
    out: dict[str, Any] = {}
    for option, name in _MONEY_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            out[name] = _money(value, currency, "--" + option.replace("_", "-"))
    for option, name in _PLAIN_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            out[name] = value
    for option, name in _LIST_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            out[name] = _names(value)
    if args.completion_tolerance_pct is not None:
        out["completion_tolerance_bp"] = _money(
            args.completion_tolerance_pct, "978", "--completion-tolerance-pct"
        )
    if args.reload is not None:
        out["reloadable"] = args.reload
    return out


def cmd_products_add(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    cur = args.currency
    if cur not in CURRENCIES:
        raise UsageError(f"--currency {cur!r} is not a known ISO 4217 numeric code, e.g. 978")
    given = _product_settings(args, cur)
    settings = {**defaults_of(args.kind), **given}
    if args.kind == "campaign" and "balance_max_minor" not in given:
        # The largest balance a campaign card can reach is one issue's largest value.
        settings["balance_max_minor"] = settings.get("max_value_minor", 0)
    product = Product(
        id=args.id,
        chain=args.chain,
        kind=args.kind,
        currency=cur,
        prefix=args.prefix,
        pan_len=args.pan_length,
        **settings,
    )
    with _store(cfg) as store:
        add_product(store, product)
    print(
        f"added product {product.id} ({product.kind}, {product.currency}, range {product.prefix}) "
        "as version 1"
    )
    return EXIT_OK


def cmd_products_change(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg) as store:
        with store.read() as led:
            current = led.product(args.id)
        if current is None:
            raise UsageError(f"product {args.id} does not exist; see `authsrv products list`")
        changes = _product_settings(args, current.currency)
        if not changes:
            raise UsageError("give at least one setting to change, e.g. --share-bp 2500")
        new = update_product(store, args.id, changes)
    print(
        f"product {new.id} is now version {new.version} ({', '.join(sorted(changes))}); cards "
        "sold under earlier versions keep their version's rules"
    )
    return EXIT_OK


def _product_line(p: Product) -> str:
    c = p.currency
    scope = ""
    if p.redeem_stores or p.redeem_chains:
        scope = f" accepted at {','.join((*p.redeem_chains, *p.redeem_stores))}"
    if p.kind == "campaign":
        expiry = f"value {p.expiry_days} days" if p.expiry_days else f"value to {p.expiry_date}"
        issued_at = ",".join((*p.issue_chains, *p.issue_stores)) or p.chain
        pct = f"{p.share_bp // 100}.{p.share_bp % 100:02d} %"
        return (
            f"{p.id:<12} v{p.version:<3} chain {p.chain:<10} {p.kind:<8} range {p.prefix:<11} "
            f"{pct} of purchases from {format_minor(p.min_purchase_minor, c)}, at most "
            f"{format_minor(p.max_value_minor, c)}, {expiry}, issued at {issued_at}{scope}"
            f"{', online activation' if p.online_activation else ''}"
        )
    value = (
        "pre-valued " + format_minor(p.fixed_value_minor, c)
        if p.fixed_value_minor
        else "open value"
    )
    return (
        f"{p.id:<12} v{p.version:<3} chain {p.chain:<10} {p.kind:<8} range {p.prefix:<11} "
        f"load {format_minor(p.load_min_minor, c)}..{format_minor(p.load_max_minor, c)} "
        f"max balance {format_minor(p.balance_max_minor, c)} "
        f"{value} "
        f"expiry {p.expiry_months} months{'' if p.reloadable else ' not reloadable'}"
        f"{' cash-out' if p.cashout else ''}{scope}"
    )


def cmd_products_list(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store, store.read() as led:
        for p in led.products():
            print(_product_line(p))
    return EXIT_OK


def cmd_products_versions(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store, store.read() as led:
        versions = led.product_versions(args.id)
        if not versions:
            raise UsageError(f"product {args.id} does not exist; see `authsrv products list`")
        for p in versions:
            when = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(p.changed_ms / 1000)) + "Z"
                if p.changed_ms
                else "(before versions were kept)"
            )
            print(f"{when:<21} {_product_line(p)}")
    return EXIT_OK


def cmd_stores_add(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg) as store:
        add_store(store, Store(id=args.id, name=args.name, chain=args.chain))
    print(f"added store {args.id} ({args.name}, chain {args.chain})")
    return EXIT_OK


def cmd_stores_list(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store, store.read() as led:
        for s in led.stores():
            print(
                f"{s.id:<15} chain {s.chain:<10} {'active' if s.active else 'inactive':<8} {s.name}"
            )
    return EXIT_OK


def cmd_terminals_add(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg) as store:
        add_terminal(
            store, Terminal(id=args.id, store_id=args.store, signon_required=args.signon_required)
        )
    print(f"added terminal {args.id} in store {args.store}")
    return EXIT_OK


def cmd_terminals_list(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store, store.read() as led:
        for t in led.terminals():
            print(
                f"{t.id}  store {t.store_id:<15} {'active' if t.active else 'inactive':<8} "
                f"sign-on {'required' if t.signon_required else 'optional'}"
                f"{', signed on' if t.signed_on else ''}  security {t.security}"
            )
    return EXIT_OK


# -- cards and keys ----------------------------------------------------------------------------
def cmd_cards_issue(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg) as store:
        keys = open_keys(store)
        ids = issue_cards(store, keys, args.product, args.count, args.out, expiry=args.expiry)
    print(
        f"issued {len(ids)} cards of product {args.product} (ids {ids[0]}..{ids[-1]}); "
        f"card numbers written once to {args.out} (mode 0600)"
    )
    return EXIT_OK


def _card_pan(args: argparse.Namespace) -> str | None:
    """--card NUMBER (or @N with --cards FILE); None with --id N."""
    from simulators.terminal import CardBook

    if args.card is not None:
        book = CardBook()
        if args.cards is not None:
            book.add_file("default", args.cards)
        return book.resolve(args.card)
    if args.id is None:
        raise UsageError("give --card NUMBER (or @N with --cards FILE) or --id N")
    return None


def cmd_cards_show(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    pan = _card_pan(args)
    with _store(cfg, readonly=True) as store:
        keys = open_keys(store)
        view = card_view(store, keys, pan=pan, card_id=args.id)
    c, p = view.card, view.product
    cur = p.currency
    print(f"card      {c.masked}  (id {c.id})")
    print(f"product   {p.id} version {p.version} (chain {p.chain})")
    print(f"state     {c.state.value}{'  [expired]' if view.expired else ''}")
    print(f"expiry    {c.expiry[2:]}/{c.expiry[:2]}")
    if c.campaign is not None:
        issue = c.campaign
        day = issue.value_expiry
        valid = f"{day[:4]}-{day[4:6]}-{day[6:]}"
        print(f"issued    at store {issue.store_id}; value valid through {valid}")
        if issue.code_verifier:
            lock = "LOCKED" if issue.locked else "open"
            print(f"online    activation {lock}, {issue.wrong_codes} wrong code(s)")
    print(f"balance   {format_minor(view.balance_minor, cur)}")
    print("history:")
    if not view.history:
        print("  (none)")
    for t in view.history:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t.at_ms / 1000))
        sign = "+" if t.credit.startswith("card:") else "-"
        print(
            f"  {when}Z  {t.op:<9} {sign}{format_minor(t.amount_minor, cur):>14}  "
            f"store {t.store_id} terminal {t.terminal_id} stan {t.stan} rrn {t.rrn} "
            f"approval {t.approval}"
        )
    return EXIT_OK


def cmd_cards_unlock_activation(args: argparse.Namespace) -> int:
    from authsrv.campaign import CampaignError, unlock_activation

    cfg = _load_cfg(args)
    pan = _card_pan(args)
    with _store(cfg) as store:
        card_id = args.id
        if pan is not None:
            keys = open_keys(store)
            card_id = card_view(store, keys, pan=pan).card.id
        try:
            with store.write() as led:
                card = unlock_activation(
                    led, card_id, f"cli:{_user()}", args.reason, int(time.time() * 1000)
                )
        except CampaignError as exc:
            raise UsageError(str(exc)) from None
    print(f"online activation of card {card.masked} (id {card.id}) unlocked; wrong codes reset")
    return EXIT_OK


def _user() -> str:
    """Who runs the command, for the audit entry."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


EXCEPTION_TEXT = {
    "below_zero": "took the card below zero",
    "forced_completion": "completion beyond its hold (or without one)",
    "unknown_card": "advice for an unknown card",
    "currency_mismatch": "advice in another currency than the card's",
    "unmatched_reversal": "reversal advice for a transaction the host does not know",
}


def cmd_cards_exceptions(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    count = 0
    with _store(cfg, readonly=True) as store, store.read() as led:
        for case in led.exception_cases():
            card = led.card(case.card_id) if case.card_id else None
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(case.at_ms / 1000))
            amount = format_minor(case.amount_minor, case.currency or "978")
            after = format_minor(case.balance_after_minor, case.currency or "978")
            print(
                f"{when}Z  {case.kind:<18} {case.op:<10} card {card.masked if card else '-':<19} "
                f"amount {amount:>14}  balance after {after:>14}  store {case.store_id} "
                f"terminal {case.terminal_id} stan {case.stan}  "
                f"({EXCEPTION_TEXT.get(case.kind, case.kind)})"
            )
            count += 1
    print(f"{count} exception(s)")
    return EXIT_OK


# -- check, backup -----------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store, store.read() as led:
        problems = check_ledger(led)
        accounts = sum(1 for _ in led.accounts())
        transfers = sum(1 for _ in led.journal())
    if problems:
        for p in problems:
            print(f"PROBLEM {p}")
        print(f"check failed: {len(problems)} problem(s)")
        return EXIT_FAILED
    print(
        f"check passed: {accounts} accounts, {transfers} transfers; every unit sums to zero and "
        "every balance equals its transfers"
    )
    return EXIT_OK


def cmd_backup(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store:
        store.backup(args.target)
    print(f"backup written to {args.target} (restore: stop the host, copy data.mdb back)")
    return EXIT_OK


class _store:
    def __init__(self, cfg: Config, readonly: bool = False) -> None:
        self.store = open_store(cfg.data_path, cfg.store.map_size_mib, readonly=readonly)

    def __enter__(self) -> Any:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


# -- serve, demo -------------------------------------------------------------------------------
def _serve(cfg: Config, banner: Callable[[int, int | None], None] | None = None) -> int:
    configure_logging(cfg.log.level)
    if cfg.server.workers > 1:
        from authsrv.workers import run_supervisor

        open_store(cfg.data_path, cfg.store.map_size_mib).close()  # fail early: no store
        try:
            return run_supervisor(cfg, get_logger())
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {cfg.server.host}:{cfg.server.port}: {exc.strerror}; "
                "choose another port (--port or server.port)"
            ) from None
    host = open_host(cfg)
    metrics_port = None
    if cfg.metrics.enabled:
        try:
            metrics_port = host.metrics.serve(cfg.metrics.host, cfg.metrics.port)
        except OSError as exc:
            host.close()
            raise UsageError(
                f"cannot serve metrics on {cfg.metrics.host}:{cfg.metrics.port}: {exc.strerror}; "
                "choose another port (--metrics-port or metrics.port) or metrics.enabled = false"
            ) from None
        host.log.info("metrics", url=f"http://{cfg.metrics.host}:{metrics_port}/metrics")

    async def main() -> None:
        await host.server.bind()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_run_server, host)
            if banner is not None:
                banner(port, metrics_port)

    try:
        trio.run(main)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise UsageError(
            f"cannot listen on {cfg.server.host}:{cfg.server.port}: {exc.strerror}; "
            "choose another port (--port or server.port)"
        ) from None
    finally:
        host.close()
    return EXIT_OK


async def _run_server(
    host: Any, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    await host.server.run(handle_signals=True, task_status=task_status)


def cmd_serve(args: argparse.Namespace) -> int:
    over: dict[str, Any] = {}
    if args.port is not None:
        over["server.port"] = args.port
    if args.metrics_port is not None:
        over["metrics.port"] = args.metrics_port
    if args.workers is not None:
        over["server.workers"] = args.workers
    return _serve(_load_cfg(args, over))


def cmd_demo(args: argparse.Namespace) -> int:
    from authsrv.demo import demo_banner, provision_demo

    # The demo terminals have no security profile: demo mode serves them (and says so).
    over: dict[str, Any] = {"store.path": str(args.data), "security.demo_mode": True}
    if args.port is not None:
        over["server.port"] = args.port
    if args.metrics_port is not None:
        over["metrics.port"] = args.metrics_port
    # The demo serves the HTTP API too (on loopback), with keys written beside the store.
    over["api.enabled"] = True
    if args.api_port is not None:
        over["api.port"] = args.api_port
    cfg = load_config(None, os.environ, over)
    cards_file = provision_demo(cfg)
    return _serve(cfg, lambda port, mport: demo_banner(cfg, cards_file, port, mport))


# -- simulate ----------------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators import commands

    return commands.run(args)


def _product_options(p: argparse.ArgumentParser, *, change: bool) -> None:
    """The settings of `products add` (with their defaults) and `products change` (each
    optional: what is left out stays as it is)."""

    def default(text: str) -> str:
        return "" if change else f" (default {text})"

    flag: dict[str, Any] = {"action": argparse.BooleanOptionalAction, "default": None}
    p.add_argument(
        "--fixed-value", default=None, help="pre-valued gift card amount" + default("open value")
    )
    p.add_argument("--load-min", default=None, help="smallest load or activation" + default("1.00"))
    p.add_argument(
        "--load-max", default=None, help="largest load or activation" + default("500.00")
    )
    p.add_argument(
        "--max-balance",
        default=None,
        help="largest balance" + default("1000.00; campaign: --max-value"),
    )
    p.add_argument("--min-redeem", default=None, help="smallest redemption" + default("0.01"))
    p.add_argument(
        "--expiry-months",
        type=int,
        default=None,
        help="validity of the card itself from its production" + default("36"),
    )
    p.add_argument(
        "--reload",
        **flag,
        help="accept loads after activation; --no-reload refuses them (campaign cards are "
        "never reloaded)",
    )
    p.add_argument("--cashout", **flag, help="allow cash-out of the balance (gift cards)")
    p.add_argument(
        "--pin-required",
        **flag,
        help="debits (redeem, cash-out, pre-authorization) need the card's PIN",
    )
    p.add_argument(
        "--completion-tolerance-pct",
        default=None,
        help="how far a completion may exceed its hold, in percent, e.g. 15" + default("0"),
    )
    p.add_argument(
        "--redeem-stores",
        default=None,
        help="store ids where the cards are accepted, comma-separated (with --redeem-chains; "
        "neither: the product's chain)",
    )
    p.add_argument(
        "--redeem-chains", default=None, help="chains where the cards are accepted, e.g. ACME"
    )
    campaign = p.add_argument_group("campaign products (--kind campaign)")
    campaign.add_argument(
        "--share-bp",
        type=int,
        default=None,
        help="value of an issue in basis points of the purchase (3000 = 30 %%)",
    )
    campaign.add_argument(
        "--min-purchase", default=None, help="smallest qualifying purchase, e.g. 100.00"
    )
    campaign.add_argument("--max-value", default=None, help="most one issue loads, e.g. 500.00")
    campaign.add_argument(
        "--expiry-days", type=int, default=None, help="the value is valid this many days"
    )
    campaign.add_argument("--expiry-date", default=None, help="or through this day, YYYYMMDD (UTC)")
    campaign.add_argument(
        "--issue-stores", default=None, help="store ids where cards may be issued"
    )
    campaign.add_argument(
        "--issue-chains",
        default=None,
        help="chains where cards may be issued (neither: the product's chain)",
    )
    campaign.add_argument(
        "--online-activation",
        **flag,
        help="issued cards await online activation with the receipt's code" + default("on"),
    )


def build_parser() -> argparse.ArgumentParser:
    from authsrv.keycli import (
        add_card_pin_parser,
        add_keys_commands,
        add_terminal_security_parser,
    )

    parser = _Parser(
        prog="authsrv",
        description="Card authorization host for gift, campaign and loyalty cards "
        "(ISO 8583 over TCP, LMDB ledger).",
        epilog=_examples(
            "authsrv demo                                  # host with demo data on :8583",
            "authsrv simulate redeem --card @1 --amount 12.50",
            "authsrv init --data /var/lib/authsrv",
            "authsrv serve --config /etc/authsrv.toml",
            "authsrv check --data /var/lib/authsrv",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = _add(
        sub,
        "init",
        "create an empty store and its working keys",
        ["authsrv init --data /var/lib/authsrv"],
        cmd_init,
    )

    products = _group(
        sub,
        "products",
        "card products and their limits",
        ["authsrv products add --id GIFT --chain ACME --prefix 603628", "authsrv products list"],
    )
    psub = products.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = _add(
        psub,
        "add",
        "add a product (gift or campaign) as its version 1",
        [
            "authsrv products add --id GIFT --chain ACME --currency 978 --prefix 603628 "
            "--load-min 5.00 --load-max 500.00 --max-balance 1000.00",
            "authsrv products add --id GIFT50 --chain ACME --prefix 6036281 --fixed-value 50.00",
            "authsrv products add --id CAMP30 --chain ACME --prefix 603629 --kind campaign "
            "--share-bp 3000 --min-purchase 100.00 --max-value 500.00 --expiry-days 90 "
            "--issue-chains ACME --redeem-chains ACME",
        ],
        cmd_products_add,
    )
    p.add_argument("--id", required=True, help="product id, e.g. GIFT")
    p.add_argument("--chain", required=True, help="the retail chain the product belongs to")
    p.add_argument(
        "--kind", choices=("gift", "campaign"), default="gift", help="gift (default) or campaign"
    )
    p.add_argument("--currency", default="978", help="ISO 4217 numeric (default 978, EUR)")
    p.add_argument("--prefix", required=True, help="card range: first 4-11 digits of every card")
    p.add_argument("--pan-length", type=int, default=16, help="card number length (default 16)")
    _product_options(p, change=False)
    p = _add(
        psub,
        "change",
        "change a product: writes its next version, keeps the earlier ones (cards sold under "
        "them keep their rules)",
        [
            "authsrv products change --id CAMP30 --share-bp 2500 --max-value 400.00",
            "authsrv products change --id GIFT --redeem-chains ACME,BETA",
        ],
        cmd_products_change,
    )
    p.add_argument("--id", required=True, help="product id")
    _product_options(p, change=True)
    p = _add(
        psub,
        "list",
        "list products (their current versions)",
        ["authsrv products list --data /var/lib/authsrv"],
        cmd_products_list,
    )
    p = _add(
        psub,
        "versions",
        "list every version of one product, oldest first",
        ["authsrv products versions --id CAMP30"],
        cmd_products_versions,
    )
    p.add_argument("--id", required=True, help="product id")

    stores = _group(
        sub,
        "stores",
        "stores (card acceptors, field 42)",
        ["authsrv stores add --id S0001 --name 'Oslo City' --chain ACME", "authsrv stores list"],
    )
    ssub = stores.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = _add(
        ssub,
        "add",
        "add a store",
        ["authsrv stores add --id S0001 --name 'Oslo City' --chain ACME"],
        cmd_stores_add,
    )
    p.add_argument("--id", required=True, help="store id as sent in field 42 (1-15 characters)")
    p.add_argument("--name", required=True, help="store name for reports")
    p.add_argument("--chain", required=True, help="the chain the store belongs to")
    p = _add(ssub, "list", "list stores", ["authsrv stores list"], cmd_stores_list)

    terminals = _group(
        sub,
        "terminals",
        "terminals (field 41)",
        ["authsrv terminals add --id T0000001 --store S0001", "authsrv terminals list"],
    )
    tsub = terminals.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = _add(
        tsub,
        "add",
        "add a terminal to a store",
        [
            "authsrv terminals add --id T0000001 --store S0001",
            "authsrv terminals add --id T0000002 --store S0001 --signon-required",
        ],
        cmd_terminals_add,
    )
    p.add_argument("--id", required=True, help="terminal id as sent in field 41 (8 characters)")
    p.add_argument("--store", required=True, help="the store the terminal stands in")
    p.add_argument(
        "--signon-required",
        action="store_true",
        help="answer financial requests 91 until the terminal signs on (0800/001)",
    )
    p = _add(tsub, "list", "list terminals", ["authsrv terminals list"], cmd_terminals_list)
    add_terminal_security_parser(tsub, _add)

    cards = _group(
        sub,
        "cards",
        "issue and inspect cards",
        [
            "authsrv cards issue --product GIFT --count 100 --out cards-2026-11.csv",
            "authsrv cards show --card @1 --cards cards-2026-11.csv",
        ],
    )
    csub = cards.add_subparsers(dest="action", required=True, parser_class=_Parser)
    p = _add(
        csub,
        "issue",
        "issue cards (state 'issued'); numbers go once to a 0600 file",
        [
            "authsrv cards issue --product GIFT --count 1000 --out cards-2026-11.csv",
            "authsrv cards issue --product GIFT --count 1 --expiry 2412 --out expired.csv",
        ],
        cmd_cards_issue,
    )
    p.add_argument("--product", required=True, help="product id")
    p.add_argument("--count", type=int, required=True, help="how many cards")
    p.add_argument("--out", type=Path, required=True, help="new file for the card numbers (CSV)")
    p.add_argument("--expiry", default=None, help="YYMM instead of the product's validity")
    p = _add(
        csub,
        "show",
        "show one card: masked number, state, balance, history",
        [
            "authsrv cards show --card @1 --cards demo-data/demo-cards.csv --data demo-data",
            "authsrv cards show --id 42",
        ],
        cmd_cards_show,
    )
    p.add_argument("--card", default=None, help="card number, or @N with --cards")
    p.add_argument("--cards", type=Path, default=None, help="card-issue file for @N")
    p.add_argument("--id", type=int, default=None, help="internal card id")
    p = _add(
        csub,
        "exceptions",
        "advices the host had to accept although they break a rule (below zero, forced "
        "completions, unknown cards)",
        ["authsrv cards exceptions --data /var/lib/authsrv"],
        cmd_cards_exceptions,
    )
    p = _add(
        csub,
        "unlock-activation",
        "lift a campaign card's online-activation lock after too many wrong codes (audited)",
        [
            "authsrv cards unlock-activation --id 42 --reason 'customer called, ID checked'",
            "authsrv cards unlock-activation --card @1 --cards camp.csv --reason 'typo'",
        ],
        cmd_cards_unlock_activation,
    )
    p.add_argument("--card", default=None, help="card number, or @N with --cards")
    p.add_argument("--cards", type=Path, default=None, help="card-issue file for @N")
    p.add_argument("--id", type=int, default=None, help="internal card id")
    p.add_argument("--reason", required=True, help="why, for the audit entry")
    add_card_pin_parser(csub, _add)

    keys = _group(
        sub,
        "keys",
        "the key-encrypting key and the keys under it (names and check values, never keys)",
        ["authsrv keys init", "authsrv keys list", "authsrv keys add bdk/2026 --algorithm A"],
    )
    ksub = keys.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add_keys_commands(ksub, _add)

    p = _add(
        sub,
        "serve",
        "run the host (stops cleanly on SIGTERM)",
        [
            "authsrv serve --data /var/lib/authsrv",
            "AUTHSRV_SERVER_PORT=9000 authsrv serve --config /etc/authsrv.toml",
        ],
        cmd_serve,
    )
    p.add_argument("--port", type=int, default=None, help="ISO 8583 port (0: any free port)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server processes sharing the port and the store (server.workers, default 1)",
    )

    p = _add(
        sub,
        "demo",
        "create demo data (if missing) and run the host on it",
        [
            "authsrv demo",
            "authsrv demo --data /tmp/demo --port 18583 --metrics-port 19583 --api-port 19584",
        ],
        cmd_demo,
        store_args=False,
    )
    p.add_argument("--data", type=Path, default=Path("demo-data"), help="demo store (demo-data)")
    p.add_argument("--port", type=int, default=None, help="ISO 8583 port (default 8583)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (9583)")
    p.add_argument("--api-port", type=int, default=None, help="HTTP API port (9584)")

    p = _add(
        sub,
        "check",
        "prove the ledger balances: per unit and per account",
        ["authsrv check --data /var/lib/authsrv"],
        cmd_check,
    )

    p = _add(
        sub,
        "backup",
        "hot, consistent, compacted copy of the store",
        ["authsrv backup --data /var/lib/authsrv /backup/authsrv-2026-11-22"],
        cmd_backup,
    )
    p.add_argument("target", type=Path, help="new or empty directory")

    from simulators.commands import add_simulate_parser

    add_simulate_parser(sub, _add, cmd_simulate)

    from bench.commands import add_bench_parser

    add_bench_parser(sub, _add)

    from settlement.commands import add_settle_parser

    add_settle_parser(sub, _add)

    from api.commands import add_api_parsers

    add_api_parsers(sub, _add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log = get_logger()
    try:
        result: int = args.func(args)
        return result
    except (UsageError, ConfigError, StoreError, KeyStoreError, AdminError, SimError) as exc:
        sys.stderr.write(f"authsrv {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED
    except Exception:
        log.exception("unexpected_error", command=args.command)
        raise


if __name__ == "__main__":
    sys.exit(main())
