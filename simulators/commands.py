"""``authsrv simulate``: one operation, a scenario file, or a timed load."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from protocol.currency import CURRENCIES, parse_major
from simulators.load import run_load
from simulators.scenario import load_scenario, run_scenario
from simulators.terminal import (
    OPERATIONS,
    CardBook,
    SimError,
    TerminalConnection,
    as_repeat,
    build_request,
    describe_exchange,
    parse_original,
)

__all__ = ["add_simulate_parser", "run"]

DEMO_CARDS = Path("demo-data/demo-cards.csv")
EXIT_OK = 0
EXIT_FAILED = 1


def add_simulate_parser(
    sub: Any, add: Callable[..., argparse.ArgumentParser], func: Callable[..., int]
) -> None:
    p = add(
        sub,
        "simulate",
        "act as a terminal: one operation, a scenario, or a timed load",
        [
            "authsrv simulate signon",
            "authsrv simulate activate --card @1 --amount 500.00",
            "authsrv simulate redeem --card @1 --amount 12.50 --terminal T0000001",
            "authsrv simulate redeem --card @1 --amount 400.00 --partial",
            "authsrv simulate redeem --card @1 --amount 5.00 --retransmit 1",
            "authsrv simulate reverse --card @1 --amount 5.00 --original 0200/000123/1122103000",
            "authsrv simulate preauth --card @1 --amount 80.00",
            "authsrv simulate complete --card @1 --amount 72.40 --original 0100/000124/1122103100",
            "authsrv simulate balance --card @2 --cards cards-2026-11.csv",
            "authsrv simulate run scenarios/giftcard-demo.toml",
            "authsrv simulate load --count 10000 --connections 16 --amount 0.01",
        ],
        func,
        store_args=False,
    )
    p.add_argument(
        "operation",
        choices=[*OPERATIONS, "run", "load"],
        help="what to send; 'run' plays a scenario file, 'load' times many redeems",
    )
    p.add_argument("scenario", nargs="?", type=Path, help="scenario file (with 'run')")
    p.add_argument("--host", default="127.0.0.1", help="host address (127.0.0.1)")
    p.add_argument("--port", type=int, default=8583, help="host port (8583)")
    p.add_argument("--terminal", default="T0000001", help="field 41 (T0000001)")
    p.add_argument("--store", default="S0001", help="field 42 (S0001)")
    p.add_argument("--card", default=None, help="card number, @N or @set:N from --cards, unknown")
    p.add_argument(
        "--cards",
        action="append",
        default=[],
        metavar="[NAME=]FILE",
        help=f"card-issue file(s) for @N references (default {DEMO_CARDS} if present)",
    )
    p.add_argument("--amount", default=None, help="amount in major units, e.g. 12.50")
    p.add_argument("--currency", default="978", help="ISO 4217 numeric (978)")
    p.add_argument("--partial", action="store_true", help="partial approval supported (PA=1)")
    p.add_argument(
        "--original",
        default=None,
        metavar="MTI/STAN/MMDDhhmmss[/PROC]",
        help="the request a complete/reverse names (printed as 'stan' and 'sent')",
    )
    p.add_argument(
        "--final",
        default=None,
        help="reverse: what the transaction finally came to (field 95, partial)",
    )
    p.add_argument(
        "--retransmit",
        type=int,
        default=0,
        metavar="N",
        help="send the same message N more times (a terminal that got no answer)",
    )
    p.add_argument(
        "--as-repeat",
        action="store_true",
        help="send retransmissions as repeats (0221, 0401, 0421)",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="print every field")
    p.add_argument("--count", type=int, default=10_000, help="load: requests in all (10000)")
    p.add_argument("--connections", type=int, default=16, help="load: connections (16)")


def _book(args: argparse.Namespace) -> CardBook:
    book = CardBook()
    specs: list[str] = list(args.cards)
    if not specs and DEMO_CARDS.exists():
        specs = [str(DEMO_CARDS)]
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "default", spec
        book.add_file(name, Path(path))
    return book


def run(args: argparse.Namespace) -> int:
    if args.currency not in CURRENCIES:
        raise SimError(f"--currency {args.currency!r} is not a known ISO 4217 numeric code")
    if not 0 < args.port < 65536:
        raise SimError("--port must be between 1 and 65535")
    book = _book(args)
    if args.operation == "run":
        if args.scenario is None:
            raise SimError("simulate run needs a scenario file")
        data = load_scenario(args.scenario)
        result = trio.run(run_scenario, data, book, args.host, args.port)
        print("\n".join(result.lines))
        return EXIT_OK if result.failed == 0 else EXIT_FAILED
    if args.operation == "load":
        return _load(args, book)
    return trio.run(_one, args, book)


async def _one(args: argparse.Namespace, book: CardBook) -> int:
    amount = None
    if args.amount is not None:
        try:
            amount = parse_major(args.amount, args.currency)
        except ValueError as exc:
            raise SimError(f"--amount: {exc}") from None
    pan = book.resolve(args.card) if args.card is not None else None
    if not 0 <= args.retransmit <= 100:
        raise SimError("--retransmit must be between 0 and 100")
    original = parse_original(args.original) if args.original is not None else None
    final = None
    if args.final is not None:
        try:
            final = parse_major(args.final, args.currency)
        except ValueError as exc:
            raise SimError(f"--final: {exc}") from None
    req = build_request(
        args.operation,
        terminal=args.terminal,
        store=args.store,
        pan=pan,
        amount_minor=amount,
        currency=args.currency,
        partial=args.partial,
        original=original,
        final_minor=final,
    )
    async with await TerminalConnection.open(args.host, args.port) as conn:
        for attempt in range(args.retransmit + 1):
            message = as_repeat(req) if attempt and args.as_repeat else req
            if attempt:
                print(f"(retransmission {attempt})")
            started = time.perf_counter()
            resp = await conn.exchange(message)
            elapsed = time.perf_counter() - started
            print(describe_exchange(args.operation, message, resp, elapsed, args.verbose))
    return EXIT_OK


def _load(args: argparse.Namespace, book: CardBook) -> int:
    if not 1 <= args.count <= 10_000_000:
        raise SimError("--count must be between 1 and 10000000")
    if not 1 <= args.connections <= 1024:
        raise SimError("--connections must be between 1 and 1024")
    cards = book.sets.get("default")
    if not cards:
        raise SimError("simulate load needs --cards FILE (activated cards to redeem from)")
    amount = parse_major(args.amount or "0.01", args.currency)
    report = trio.run(
        lambda: run_load(
            args.host,
            args.port,
            cards=cards,
            terminals=[(args.terminal, args.store)],
            count=args.count,
            connections=args.connections,
            amount_minor=amount,
            currency=args.currency,
        )
    )
    print("\n".join(report.lines()))
    sys.stdout.flush()
    return EXIT_OK
