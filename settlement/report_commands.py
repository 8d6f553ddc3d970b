"""``authsrv settle net|expire|report``: what the actions do (their parsers are in
:mod:`settlement.commands` with the other ``settle`` actions).

Exit codes, as the other ``settle`` actions: 0 done; 1 a report that does not reconcile (the
line names every differing figure; no file is written); 2 a day that cannot be used (not
YYYYMMDD, not in the store, still open) or a file that cannot be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from settlement.commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _dir, _fail, _now_ms

__all__ = ["REPORT_ACTIONS"]

STDOUT = "-"


def _net(args: argparse.Namespace) -> int:
    from authsrv.cli import _load_cfg, _store
    from settlement.day import DayError, parse_day
    from settlement.net import ReconcileError, write_net_report

    cfg = _load_cfg(args)
    directory = _dir(args, cfg)
    with _store(cfg, readonly=True) as store:
        try:
            parse_day(args.day)
            written = write_net_report(store, directory, args.day)
        except DayError as exc:
            _fail(args, f"error: {exc}")
            return EXIT_USAGE
        except ReconcileError as exc:
            _fail(args, f"FAILED: {exc}")
            return EXIT_FAILED
        except OSError as exc:
            _fail(args, f"error: cannot write into {directory}: {exc.strerror or exc}")
            return EXIT_USAGE
    if args.csv:
        sys.stdout.write(written.report.csv().decode())
    else:
        sys.stdout.write(written.report.text())
        sys.stdout.write(f"wrote {written.path}\n")
    return EXIT_OK


def _expire(args: argparse.Namespace) -> int:
    from authsrv.cli import _load_cfg, _store
    from settlement.expiry import expire_all
    from settlement.output import money

    cfg = _load_cfg(args)
    with _store(cfg, readonly=args.dry_run) as store:
        res = expire_all(store, _now_ms(), args.batch, dry_run=args.dry_run)
    verb = "would expire" if args.dry_run else "expired"
    moved = "would move" if args.dry_run else "moved"
    out = [f"{verb} {res.expired} cards; {moved} {res.transfers} balances to breakage"]
    for account, amount in sorted(res.moved.items()):
        out.append(f"  {account:<32} {money(amount, account.rsplit(':', 1)[-1]):>20}")
    skipped = [
        (res.negative, "with a negative balance (an exception case; nothing to move)"),
        (res.held, "with open holds (a later run takes them once the holds are done)"),
        (res.lost_or_stolen, "lost or stolen (their value awaits a replacement card)"),
        (res.unknown_kind, "of a product kind without a breakage rule"),
        (res.unsold, "never sold (no value; left as issued)"),
    ]
    for n, why in skipped:
        if n:
            out.append(f"not swept: {n} past expiry {why}")
    out.append(f"examined {res.examined} cards in {res.steps} steps of at most {args.batch}")
    sys.stdout.write("\n".join(out) + "\n")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from authsrv.cli import _load_cfg, _store
    from settlement.day import DayError, parse_day
    from settlement.net import ReconcileError
    from settlement.output import write_atomic
    from settlement.reports import (
        Report,
        activity_report,
        breakage_report,
        liability_report,
        summary_report,
    )

    cfg = _load_cfg(args)
    if args.kind == "liability" and (args.first or args.last):
        _fail(args, "error: the liability report is as of now; --from/--to do not apply to it")
        return EXIT_USAGE
    builders: dict[str, Callable[..., Report]] = {
        "breakage": breakage_report,
        "activity": activity_report,
        "summary": summary_report,
    }
    with _store(cfg, readonly=True) as store, store.read() as led:
        try:
            for day in (args.first, args.last):
                if day is not None:
                    parse_day(day)
            if args.kind == "liability":
                report = liability_report(led)
            else:
                report = builders[args.kind](led, args.first, args.last)
        except DayError as exc:
            _fail(args, f"error: {exc}")
            return EXIT_USAGE
        except ReconcileError as exc:
            _fail(args, f"FAILED: {exc}")
            return EXIT_FAILED
    if args.csv is not None and str(args.csv) == STDOUT:
        sys.stdout.write(report.csv().decode())
        return EXIT_OK
    path = Path(args.csv) if args.csv is not None else _dir(args, cfg) / report.file_name
    try:
        write_atomic(path, report.csv())
    except OSError as exc:
        _fail(args, f"error: cannot write {path}: {exc.strerror or exc}")
        return EXIT_USAGE
    sys.stdout.write(report.text)
    sys.stdout.write(f"wrote {path}\n")
    return EXIT_OK


REPORT_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "net": _net,
    "expire": _expire,
    "report": _report,
}
