"""``authsrv settle``: clearing files (verify, describe); later cut-over, reports and import.

Each action is a sub-subcommand (``authsrv settle verify FILE``), so that the ones that need
the store (``cutover``, ``report``, ``import``) can take ``--data``/``--config`` and the ones
that read a file need not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_settle_parser", "cmd_settle"]

EXIT_OK = 0
EXIT_FAILED = 1  # the file was read and is not a good clearing file
EXIT_USAGE = 2  # the file cannot be read at all


def add_settle_parser(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        sub,
        "settle",
        "settlement: check and read the clearing files of closed business days",
        [
            "authsrv settle verify out/clearing-20261122-000001.ipm",
            "authsrv settle describe out/clearing-20261122-000001.ipm | less",
        ],
        cmd_settle,
        store_args=False,
    )
    actions = p.add_subparsers(dest="settle_command", metavar="ACTION", required=True)
    v = add(
        actions,
        "verify",
        "check a clearing file: framing, header and trailer, record numbers, masked cards, "
        "count and totals per currency, and its digest FILE.sha256; exit 0 with one OK "
        "line, 1 with the first problem (where and what)",
        [
            "authsrv settle verify clearing-20261122-000001.ipm",
            "authsrv settle verify --no-digest /tmp/received/clearing-20261122-000001.ipm",
            "sha256sum --check clearing-20261122-000001.ipm.sha256   # the digest, by hand",
        ],
        cmd_settle,
        store_args=False,
    )
    v.add_argument("file", type=Path, help="the clearing file (.ipm)")
    v.add_argument(
        "--no-digest",
        dest="digest",
        action="store_false",
        help="do not require or check FILE.sha256 (a file received without one)",
    )
    d = add(
        actions,
        "describe",
        "print a clearing file readably: header, totals per currency, one line per record "
        "(a reversal names its original); the file is checked as it is read",
        [
            "authsrv settle describe clearing-20261122-000001.ipm",
            "authsrv settle describe clearing-20261122-000001.ipm | grep reverses",
        ],
        cmd_settle,
        store_args=False,
    )
    d.add_argument("file", type=Path, help="the clearing file (.ipm)")


def cmd_settle(args: argparse.Namespace) -> int:
    actions: dict[str, Callable[[argparse.Namespace], int]] = {
        "verify": _verify,
        "describe": _describe,
    }
    return actions[args.settle_command](args)


def _fail(args: argparse.Namespace, text: str) -> None:
    sys.stderr.write(f"authsrv settle {args.settle_command}: {text}\n")


def _verify(args: argparse.Namespace) -> int:
    from settlement.clearing import ClearingFileError, verify_clearing_file

    try:
        report = verify_clearing_file(args.file, digest=args.digest)
    except ClearingFileError as exc:
        _fail(args, f"FAILED: {args.file}: {exc}")
        return EXIT_FAILED
    except OSError as exc:
        _fail(args, f"error: cannot read {args.file}: {exc.strerror or exc}")
        return EXIT_USAGE
    sys.stdout.write(report.line() + "\n")
    return EXIT_OK


def _describe(args: argparse.Namespace) -> int:
    from settlement.clearing import ClearingFileError, describe_clearing_file

    try:
        text = describe_clearing_file(args.file)
    except ClearingFileError as exc:
        _fail(args, f"FAILED: {args.file}: {exc}")
        return EXIT_FAILED
    except OSError as exc:
        _fail(args, f"error: cannot read {args.file}: {exc.strerror or exc}")
        return EXIT_USAGE
    sys.stdout.write(text)
    return EXIT_OK
