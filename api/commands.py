"""The command line of the API: ``authsrv api`` (serve it alone), ``authsrv api-keys``
(add, list, revoke) and ``authsrv holders`` (export, delete: GDPR requests).

Registered by :func:`authsrv.cli.build_parser` through :func:`add_api_parsers`; errors are one
line on stderr and exit status 2, as for every command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_api_parsers"]

EXIT_OK = 0


def add_api_parsers(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        sub,
        "api",
        "run the HTTP API alone on the store (`authsrv serve` runs it too when api.enabled); "
        "stops cleanly on SIGTERM",
        [
            "authsrv api --data /var/lib/authsrv",
            "AUTHSRV_API_PORT=9600 authsrv api --config /etc/authsrv.toml",
            "authsrv api --print-openapi > docs/openapi.json",
        ],
        cmd_api,
    )
    p.add_argument("--port", type=int, default=None, help="HTTP port (api.port; 0: any free)")
    p.add_argument(
        "--print-openapi",
        action="store_true",
        help="print the OpenAPI document and exit (the store is not opened)",
    )

    keys = add(
        sub,
        "api-keys",
        "API keys: make one (its token is shown once), list them (never tokens), revoke one",
        ["authsrv api-keys add --role backoffice --name 'Back office'", "authsrv api-keys list"],
        cmd_api_keys,
        store_args=False,
    )
    ksub = keys.add_subparsers(dest="keys_action", required=True)
    k = add(
        ksub,
        "add",
        "make an API key and print its token once (keep it: only its hash is stored)",
        [
            "authsrv api-keys add --role backoffice --name 'Back office (Kari)'",
            "authsrv api-keys add --role store --store S0001 --name 'City store'",
            "authsrv api-keys add --role selfservice --name 'Web self-service'",
        ],
        cmd_api_keys,
    )
    k.add_argument("--role", required=True, choices=("backoffice", "store", "selfservice"))
    k.add_argument("--store", default="", help="role store: the one store the key may see")
    k.add_argument("--name", required=True, help="who holds the key (shown in the audit log)")
    k = add(ksub, "list", "list API keys (no tokens)", ["authsrv api-keys list"], cmd_api_keys)
    k = add(
        ksub,
        "revoke",
        "revoke an API key (from its next request on, in every process)",
        ["authsrv api-keys revoke --id 3f9c0a1b2c3d"],
        cmd_api_keys,
    )
    k.add_argument("--id", required=True, help="the key's id (see `authsrv api-keys list`)")

    holders = add(
        sub,
        "holders",
        "card holders' personal data: export it (GDPR access) or delete it (erasure, audited)",
        [
            "authsrv holders export --mobile +4791234567",
            "authsrv holders delete --id 42 --reason 'GDPR request 2026-118'",
        ],
        cmd_holders,
        store_args=False,
    )
    hsub = holders.add_subparsers(dest="holders_action", required=True)
    for action, text, examples in (
        (
            "export",
            "print every holder record of a card or a mobile number as JSON",
            [
                "authsrv holders export --mobile +4791234567",
                "authsrv holders export --card @1 --cards cards.csv",
                "authsrv holders export --id 42 > holder-42.json",
            ],
        ),
        (
            "delete",
            "delete the holder records of a card or a mobile number (the audit log keeps that "
            "it happened, not the data)",
            [
                "authsrv holders delete --mobile +4791234567 --reason 'GDPR request 2026-118'",
                "authsrv holders delete --id 42 --reason 'GDPR request 2026-119'",
            ],
        ),
    ):
        h = add(hsub, action, text, examples, cmd_holders)
        which = h.add_mutually_exclusive_group(required=True)
        which.add_argument("--card", default=None, help="card number, or @N with --cards")
        which.add_argument("--id", type=int, default=None, help="internal card id")
        which.add_argument("--mobile", default=None, help="mobile number, e.g. +4791234567")
        h.add_argument("--cards", type=Path, default=None, help="card-issue file for @N")
        if action == "delete":
            h.add_argument("--reason", required=True, help="why, for the audit log")


def cmd_api(args: argparse.Namespace) -> int:
    if args.print_openapi:
        from api.openapi import openapi_bytes
        from api.operations import OPERATIONS

        sys.stdout.write(openapi_bytes(OPERATIONS).decode())
        return EXIT_OK
    from api.serve import run_standalone
    from authsrv.cli import _load_cfg

    over: dict[str, Any] = {}
    if args.port is not None:
        over["api.port"] = args.port
    return run_standalone(_load_cfg(args, over))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _utc(at_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at_ms / 1000)) + "Z"


def cmd_api_keys(args: argparse.Namespace) -> int:
    from api.access import ApiKeyError, add_key, revoke_key
    from authsrv.cli import UsageError, _load_cfg, _store, _user
    from authsrv.model import ApiRole

    cfg = _load_cfg(args)
    actor = f"cli:{_user()}"
    try:
        if args.keys_action == "add":
            with _store(cfg) as store, store.write() as led:
                key, token = add_key(
                    led,
                    name=args.name,
                    role=ApiRole(args.role),
                    store_id=args.store,
                    now_ms=_now_ms(),
                    actor=actor,
                )
            scope = f" of store {key.store_id}" if key.store_id else ""
            sys.stderr.write(
                f"made API key {key.id} ({key.role.value}{scope}, {key.name}); its token "
                "follows, shown this once: keep it secret (only its hash is stored)\n"
            )
            sys.stdout.write(token + "\n")
        elif args.keys_action == "revoke":
            with _store(cfg) as store, store.write() as led:
                key = revoke_key(led, args.id, now_ms=_now_ms(), actor=actor)
            print(f"revoked API key {key.id} ({key.role.value}, {key.name})")
        else:
            with _store(cfg, readonly=True) as store, store.read() as led:
                keys = list(led.api_keys())
            for k in keys:
                state = f"revoked {_utc(k.revoked_ms)}" if k.revoked_ms else "in force"
                print(
                    f"{k.id}  {k.role.value:<11} {k.store_id or '-':<15} {state:<29} "
                    f"made {_utc(k.created_ms)} by {k.created_by}  {k.name}"
                )
            print(f"{len(keys)} key(s)")
    except ApiKeyError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def cmd_holders(args: argparse.Namespace) -> int:
    from api.holders import HolderError, delete_holders, export_record, holders_of_mobile
    from authsrv.app import open_keys
    from authsrv.cli import UsageError, _load_cfg, _store, _user
    from simulators.terminal import CardBook

    cfg = _load_cfg(args)
    deleting = args.holders_action == "delete"
    with _store(cfg, readonly=not deleting) as store:
        card_id: int | None = args.id
        if args.card is not None:
            book = CardBook()
            if args.cards is not None:
                book.add_file("default", args.cards)
            pan = book.resolve(args.card)
            with store.read() as led:
                card = led.card_by_hashes(open_keys(store).pan_hashes(pan))
            if card is None:
                raise UsageError("no such card")
            card_id = card.id
        # A deletion looks the records up in its own write transaction.
        txn = store.write() if deleting else store.read()
        try:
            with txn as led:
                if card_id is not None:
                    one = led.holder(card_id)
                    found = [one] if one is not None else []
                else:
                    found = holders_of_mobile(led, args.mobile)
                if not deleting:
                    records = [export_record(led, h) for h in found]
                    sys.stdout.write(json.dumps(records, indent=2) + "\n")
                    return EXIT_OK
                erased = delete_holders(
                    led,
                    [h.card_id for h in found],
                    actor=f"cli:{_user()}",
                    reason=args.reason,
                    now_ms=_now_ms(),
                )
        except HolderError as exc:
            raise UsageError(str(exc)) from None
    print(f"deleted {erased} holder record(s); the audit log records each deletion")
    return EXIT_OK
