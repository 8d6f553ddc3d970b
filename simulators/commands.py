"""``authsrv simulate``: one operation, a scenario file, or a timed load.

The simulator is a terminal, so it holds a terminal's keys: a terminal master key (``mac-*``
profiles) or a DUKPT initial key with its KSN (``dukpt-*``), each from a hex file that only its
owner may read. Beside those files it keeps what a terminal keeps between transactions:
``<ik-file>.ksn``, the last KSN used (rewritten atomically before each request leaves, so a
counter never goes back), and ``<tmk-file>.keys``, the last key change's working keys as the
host sent them (wrapped under the master key), which the next key change is MACed with.

``--batch-file FILE`` keeps what a terminal keeps for its reconciliation: its batch number and
the running totals of what it sent and got approved. ``close-batch`` sends them in a 0500 and
starts the next batch when the host has closed this one (00 in balance, 95 out of balance).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from protocol.currency import CURRENCIES, parse_major
from protocol.reconciliation import BATCH_NUMBER_LEN
from protocol.tlv import decode_tlv
from simulators.batch import TerminalBatches, describe_close_batch, parse_totals, with_offset
from simulators.load import run_load
from simulators.scenario import (
    TerminalKeys,
    check_pin,
    load_scenario,
    open_link,
    run_scenario,
    scenario_keys,
    write_private,
)
from simulators.security import PROFILES
from simulators.terminal import (
    OPERATIONS,
    CardBook,
    SimError,
    as_repeat,
    build_request,
    decode_response,
    describe_exchange,
    parse_original,
)

__all__ = ["add_simulate_parser", "run"]

DEMO_CARDS = Path("demo-data/demo-cards.csv")
EXIT_OK = 0
EXIT_FAILED = 1
LOAD_CONNECTIONS = 16  # simulate load's default; a DUKPT device has one counter: 1


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
            "authsrv simulate redeem --card @1 --amount 12.50 --batch-file T0000001.batch",
            "authsrv simulate close-batch --batch-file T0000001.batch",
            "authsrv simulate close-batch --batch-file T0000001.batch --batch-offset-minor 100",
            "authsrv simulate close-batch --batch 000042 --totals credits=1/500.00,debits=2/35.00",
            "authsrv simulate run scenarios/giftcard-demo.toml",
            "authsrv simulate load --count 10000 --connections 16 --amount 0.01",
            "authsrv simulate redeem --card @1 --amount 5.00 --security mac-aes "
            "--tmk-file T0000001.tmk",
            "authsrv simulate redeem --card @1 --amount 5.00 --pin 1234 --terminal T0000002 "
            "--security dukpt-aes --ik-file T0000002.ik --ksn 123456789012345600000000",
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
    b = p.add_argument_group("reconciliation (close-batch: a 0500 with the terminal's totals)")
    b.add_argument(
        "--batch-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="the terminal's own batch totals, kept between runs: every operation whose answer "
        "moved money adds to them; close-batch sends them and starts the next batch",
    )
    b.add_argument(
        "--batch",
        default=None,
        metavar="NNNNNN",
        help="close-batch: the batch number (field 60); default from --batch-file, else 000001",
    )
    b.add_argument(
        "--totals",
        default=None,
        metavar="KIND=COUNT/AMOUNT,...",
        help="close-batch: these totals instead of --batch-file's (kinds credits, "
        "credit-reversals, debits, debit-reversals; the others are 0)",
    )
    b.add_argument(
        "--batch-offset-minor",
        type=int,
        default=0,
        metavar="N",
        help="close-batch: send deliberately wrong totals, the debit amount N minor units off "
        "(the host answers 95 and closes the batch anyway)",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="print every field")
    p.add_argument("--count", type=int, default=10_000, help="load: requests in all (10000)")
    p.add_argument(
        "--connections",
        type=int,
        default=None,
        help=f"load: connections ({LOAD_CONNECTIONS}); a static-key terminal's connections "
        "share one key change; a DUKPT profile runs on 1 (one device, one counter)",
    )
    g = p.add_argument_group("terminal security (the terminal's profile on the host must match)")
    g.add_argument(
        "--security",
        choices=PROFILES,
        default=None,
        help="how requests are protected: none (a host in demo mode only), mac-tdes, mac-aes "
        "(a key change 0800 70=101 on each connection first), dukpt-tdes, dukpt-aes; a "
        "scenario's [terminal] table otherwise (none)",
    )
    g.add_argument(
        "--tmk-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="mac-*: the terminal master key in hex (mode 0600); the working keys of its last "
        "key change are kept in FILE.keys",
    )
    g.add_argument(
        "--ik-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="dukpt-*: the device's initial key (IPEK or AES initial key) in hex (mode 0600); "
        "the last KSN used is kept in FILE.ksn",
    )
    g.add_argument(
        "--ksn",
        default=None,
        metavar="HEX",
        help="dukpt-*: the KSN to start from (TDES 20, AES 24 hex digits); FILE.ksn wins when "
        "its counter is higher",
    )
    g.add_argument(
        "--pin",
        default=None,
        metavar="DIGITS",
        help="the PIN typed on the pad, sent as a PIN block (format 0 in field 52 under TDES, "
        "format 4 in field 48 PB under AES); a test PIN: the command line is visible to ps",
    )


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


def _keys(args: argparse.Namespace) -> TerminalKeys:
    """The terminal's keys from the options; bad combinations are one line (exit 2)."""
    keys = TerminalKeys.from_options(args.security, args.tmk_file, args.ik_file, args.ksn)
    if args.pin is not None:
        check_pin(args.pin)
        if keys.profile == "none":
            raise SimError("--pin needs a security profile (--security): a PIN travels enciphered")
    return keys


def _given(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.security, args.tmk_file, args.ik_file, args.ksn))


def run(args: argparse.Namespace) -> int:
    if args.currency not in CURRENCIES:
        raise SimError(f"--currency {args.currency!r} is not a known ISO 4217 numeric code")
    if not 0 < args.port < 65536:
        raise SimError("--port must be between 1 and 65535")
    if args.operation == "run":
        if args.scenario is None:
            raise SimError("simulate run needs a scenario file")
        if args.pin is not None:
            raise SimError('simulate run takes PINs from the steps (pin = "1234"), not --pin')
        data = load_scenario(args.scenario)
        # The options replace the scenario's [terminal] table.
        keys = _keys(args) if _given(args) else scenario_keys(data)
        book = _book(args)
        result = trio.run(
            lambda: run_scenario(data, book, args.host, args.port, verbose=args.verbose, keys=keys)
        )
        print("\n".join(result.lines))
        return EXIT_OK if result.failed == 0 else EXIT_FAILED
    keys = _keys(args)
    book = _book(args)
    if args.operation == "load":
        return _load(args, book, keys)
    if args.operation != "close-batch" and (
        args.batch is not None or args.totals is not None or args.batch_offset_minor
    ):
        raise SimError("--batch, --totals and --batch-offset-minor go with close-batch")
    return trio.run(_one, args, book, keys)


def _read_batches(path: Path | None) -> TerminalBatches:
    if path is None:
        return TerminalBatches()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return TerminalBatches()  # a terminal's first batch
    except OSError as exc:
        raise SimError(f"cannot read {path}: {exc.strerror}") from None
    return TerminalBatches.from_json(text, str(path))


def _close_batch_request(args: argparse.Namespace, batches: TerminalBatches) -> dict[str, str]:
    if args.totals is not None:
        totals = parse_totals(args.totals, args.currency)
    else:
        totals = batches.current(args.terminal, args.currency)
    batch = args.batch if args.batch is not None else batches.number(args.terminal)
    if not (len(batch) == BATCH_NUMBER_LEN and batch.isascii() and batch.isdigit()):
        raise SimError(f"--batch must be {BATCH_NUMBER_LEN} digits, e.g. 000001")
    return build_request(
        "close-batch",
        terminal=args.terminal,
        store=args.store,
        currency=args.currency,
        totals=with_offset(totals, args.batch_offset_minor),
        batch_number=batch,
    )


async def _one(args: argparse.Namespace, book: CardBook, keys: TerminalKeys) -> int:
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
    batches = _read_batches(args.batch_file)
    if args.operation == "close-batch":
        req = _close_batch_request(args, batches)
    else:
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
    if args.pin is not None and pan is None:
        raise SimError(f"--pin goes with an operation on a card (--card), not {args.operation}")
    link = await open_link(args.host, args.port, keys)
    async with link.conn:
        if keys.static:
            print(await link.key_change(args.terminal, args.store))
        exchange = None
        for attempt in range(args.retransmit + 1):
            message = as_repeat(req) if attempt and args.as_repeat else req
            if attempt:
                print(f"(retransmission {attempt})")
            if exchange is not None and message is req:
                # The same bytes: the same MAC and, under DUKPT, the same KSN.
                exchange = await link.resend(exchange.sealed)
            else:
                exchange = await link.send(message, args.pin)
            if attempt == 0 and args.batch_file is not None:
                _keep_batch(args.batch_file, batches, message, exchange.answer)
            if message["t"] == "0500":
                print(
                    describe_close_batch(message, exchange.answer, exchange.elapsed_s, args.verbose)
                )
            else:
                print(
                    describe_exchange(
                        args.operation, message, exchange.answer, exchange.elapsed_s, args.verbose
                    )
                )
            if args.verbose and keys.dukpt:
                print(f"    KSN  {_ksn_of(exchange.sealed.payload)}")
    return EXIT_OK


def _keep_batch(
    path: Path, batches: TerminalBatches, req: dict[str, str], answer: dict[str, str]
) -> None:
    """Count the first answer in the batch file; a close the host made starts the next batch
    (retransmissions are the same transaction: not counted again)."""
    if req["t"] != "0500":
        batches.record(req, answer)
    elif answer.get("39") in ("00", "95"):
        batches.closed(req["41"], req["49"])
    else:
        return  # not closed (a 30, 94, ...): the batch stays open
    write_private(path, batches.to_json())


def _ksn_of(payload: bytes) -> str:
    """Field 48 KS of a sealed request (a KSN is no secret: it travels in the clear)."""
    fields = decode_response(payload)
    return decode_tlv(fields.get("48", ""), 48).get("KS", "-")


def _load(args: argparse.Namespace, book: CardBook, keys: TerminalKeys) -> int:
    if not 1 <= args.count <= 10_000_000:
        raise SimError("--count must be between 1 and 10000000")
    connections = args.connections
    if connections is None:
        connections = 1 if keys.dukpt else LOAD_CONNECTIONS
    if not 1 <= connections <= 1024:
        raise SimError("--connections must be between 1 and 1024")
    if keys.dukpt and connections != 1:
        raise SimError(
            f"simulate load with {keys.profile} runs on one connection (one device, one "
            "counter); give --connections 1"
        )
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
            connections=connections,
            amount_minor=amount,
            currency=args.currency,
            keys=keys,
            pin=args.pin,
        )
    )
    print("\n".join(report.lines()))
    sys.stdout.flush()
    return EXIT_OK
