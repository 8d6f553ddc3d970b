"""``authsrv settle``: business days (cut-over, list), clearing files (write, verify,
describe).

Each action is a sub-subcommand (``authsrv settle verify FILE``), so that the ones that need
the store (``cutover``, ``days``, ``clearing``) take ``--data``/``--config`` and the ones that
read a file need not.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from settlement.day import DayClock, next_day

if TYPE_CHECKING:
    from authsrv.config import Config
    from authsrv.store import LedgerStore

__all__ = ["add_settle_parser", "cmd_settle"]

EXIT_OK = 0
EXIT_FAILED = 1  # the file was read and is not a good clearing file
EXIT_USAGE = 2  # the file cannot be read at all


def add_settle_parser(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        sub,
        "settle",
        "settlement: business days, the cut-over, clearing files, net settlement, expiry, reports",
        [
            "authsrv settle days",
            "authsrv settle cutover",
            "authsrv settle clearing 20261122",
            "authsrv settle verify settlement/clearing-20261122-000001.ipm",
            "authsrv settle describe settlement/clearing-20261122-000001.ipm | less",
            "authsrv settle net 20261122",
            "authsrv settle expire --dry-run",
            "authsrv settle report liability",
            "authsrv settle import /srv/inbound/web-20261122.ipm",
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
    c = add(
        actions,
        "cutover",
        "close the open business day now (one write transaction, safe while the host runs), "
        "open the next, and write the closed day's clearing files; the host also does this "
        "by itself at settlement.cutover_time",
        [
            "authsrv settle cutover --data /var/lib/authsrv",
            "authsrv settle cutover --no-files   # the host writes them within seconds",
        ],
        cmd_settle,
    )
    c.add_argument("--no-files", dest="files", action="store_false", help="close the day only")
    _out_arg(c)
    d = add(
        actions,
        "days",
        "list the business days: open or closed, how, their transfers and clearing files",
        ["authsrv settle days", "authsrv settle days --last 7"],
        cmd_settle,
    )
    d.add_argument(
        "--last", type=_positive, default=31, metavar="N", help="the newest N days (default 31)"
    )
    _out_arg(d)
    w = add(
        actions,
        "clearing",
        "write the clearing files (IPM, CSV, SHA-256 digests) of closed business days: the "
        "bytes depend on the ledger only, so a file written again is identical",
        [
            "authsrv settle clearing 20261122",
            "authsrv settle clearing --missing --out /srv/outbound",
        ],
        cmd_settle,
    )
    which = w.add_mutually_exclusive_group(required=True)
    which.add_argument("day", nargs="?", help="the business day YYYYMMDD")
    which.add_argument(
        "--missing",
        action="store_true",
        help="every closed day whose files are not in the directory",
    )
    _out_arg(w)
    # -- net settlement, expiry, reports (handlers in settlement.report_commands) --------------
    n = add(
        actions,
        "net",
        "the net settlement of a closed business day: per store and funding account (the "
        "float for gift cards, campaign:<chain> for campaign cards) what is owed to or by whom, "
        "reconciled to the minor unit with the closing balances and the clearing records; "
        "writes net-DAY.csv beside the clearing files; exit 1 with the differing figures when "
        "it does not reconcile",
        [
            "authsrv settle net 20261122",
            "authsrv settle net 20261122 --csv > net-20261122.csv",
        ],
        cmd_settle,
    )
    n.add_argument("day", help="the closed business day YYYYMMDD")
    n.add_argument(
        "--csv",
        action="store_true",
        help="print the CSV instead of the table (the file is written either way)",
    )
    _out_arg(n)
    b = add(
        actions,
        "batches",
        "list terminal batches closed by a 0500 (newest last): in balance (00) or not (95), "
        "the host's net, the terminal's, and every figure that differed",
        [
            "authsrv settle batches",
            "authsrv settle batches --terminal T0000001 --last 5",
            "authsrv settle batches --out-of-balance",
        ],
        cmd_settle,
    )
    b.add_argument("--terminal", default=None, help="one terminal's batches (field 41)")
    b.add_argument(
        "--last", type=_positive, default=20, metavar="N", help="the newest N (default 20)"
    )
    b.add_argument("--out-of-balance", action="store_true", help="only batches answered 95")
    e = add(
        actions,
        "expire",
        "move what is left on cards past their expiry month to breakage (the issuer's for gift "
        "cards, the chain's for campaign cards) and mark them expired, in steps of --batch "
        "cards, each one write transaction (safe while the host runs); a second run moves "
        "nothing",
        ["authsrv settle expire --dry-run", "authsrv settle expire --batch 5000"],
        cmd_settle,
    )
    e.add_argument("--dry-run", action="store_true", help="say what would move; change nothing")
    e.add_argument(
        "--batch",
        type=_positive,
        default=1000,
        metavar="N",
        help="cards examined per write transaction (default 1000)",
    )
    r = add(
        actions,
        "report",
        "a report as a table and a CSV file: liability (gift-card value outstanding now, by "
        "store of sale and month of issue), breakage (value expired, by month and product), "
        "activity (loads, uses and reversals per store and day), summary (per day: cards "
        "sold, loads, uses, distinct cards used, average use); the day reports cover closed "
        "days",
        [
            "authsrv settle report liability",
            "authsrv settle report activity --from 20261101 --to 20261130",
            "authsrv settle report summary --csv - | column -s, -t",
            "authsrv settle report breakage --csv /srv/reports/breakage-2026.csv",
        ],
        cmd_settle,
    )
    r.add_argument("kind", choices=("liability", "breakage", "activity", "summary"))
    r.add_argument(
        "--from", dest="first", metavar="DAY", help="first closed day (default: the first)"
    )
    r.add_argument("--to", dest="last", metavar="DAY", help="last closed day (default: the last)")
    r.add_argument(
        "--csv",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the CSV to FILE ('-': print it instead of the table); default: "
        "<kind>-<from>-<to>.csv (liability-at-<transfer>.csv) in the settlement directory",
    )
    _out_arg(r)
    # -- batch import of offline transactions (handlers in settlement.import_commands) --------
    i = add(
        actions,
        "import",
        "apply the offline transactions of an inbound file (the clearing layout with full card "
        "numbers, e.g. a web shop's day: activate, load, redeem, refund) through the host's "
        "engine, each record exactly once (a second import moves nothing), safe while the host "
        "runs; a file whose framing, count, totals or digest are wrong is refused whole (exit "
        "1, nothing moves); every record not applied goes to FILE.rejects.csv (masked) with its "
        "reason; exit 0 all applied, 1 some rejected",
        [
            "authsrv settle import /srv/inbound/web-20261122.ipm",
            "authsrv settle import --out /srv/rejects /srv/inbound/web-20261122.ipm",
            "authsrv settle import --check /srv/inbound/web-20261122.ipm   # the file only",
        ],
        cmd_settle,
    )
    i.add_argument(
        "file", type=Path, help="the inbound file (full card numbers: read, never copied)"
    )
    i.add_argument(
        "--no-digest",
        dest="digest",
        action="store_false",
        help="do not require or check FILE.sha256 (a file received without one)",
    )
    i.add_argument(
        "--check",
        action="store_true",
        help="check the file only (structure, count, totals, digest); the store is not opened",
    )
    i.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory of the rejects file FILE.rejects.csv (default: beside FILE)",
    )
    ii = add(
        actions,
        "imports",
        "list the inbound files imported: records applied and rejected, first and last import",
        ["authsrv settle imports", "authsrv settle imports --last 7"],
        cmd_settle,
    )
    ii.add_argument(
        "--last", type=_positive, default=31, metavar="N", help="the newest N files (default 31)"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _out_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory of the clearing files (default: settlement.dir, else 'settlement' "
        "beside the store directory)",
    )


def cmd_settle(args: argparse.Namespace) -> int:
    actions: dict[str, Callable[[argparse.Namespace], int]] = {
        "verify": _verify,
        "describe": _describe,
        "cutover": _cutover,
        "days": _days,
        "clearing": _clearing,
        "batches": _batches,
        **_report_actions(),
        **_import_actions(),
    }
    return actions[args.settle_command](args)


def _report_actions() -> dict[str, Callable[[argparse.Namespace], int]]:
    from settlement.report_commands import REPORT_ACTIONS  # imports this module

    return REPORT_ACTIONS


def _import_actions() -> dict[str, Callable[[argparse.Namespace], int]]:
    from settlement.import_commands import IMPORT_ACTIONS  # imports this module

    return IMPORT_ACTIONS


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


# --- business days ---------------------------------------------------------------------------


def _dir(args: argparse.Namespace, cfg: Config) -> Path:
    return Path(args.out) if args.out is not None else cfg.settlement_dir


def _write(args: argparse.Namespace, cfg: Config, store: LedgerStore, day: str) -> bool:
    from settlement.clearing import ClearingFileError, verify_clearing_file
    from settlement.ledger import write_day_files

    try:
        files = write_day_files(store, _dir(args, cfg), cfg.settlement.host_id, day)
        report = verify_clearing_file(files.paths.ipm)
    except ClearingFileError as exc:
        _fail(args, f"FAILED: clearing file of {day}: {exc}")
        return False
    sys.stdout.write(f"wrote {files.paths.ipm} and {files.paths.csv.name} (+ .sha256)\n")
    sys.stdout.write(report.line() + "\n")
    return True


def _cutover(args: argparse.Namespace) -> int:
    from authsrv.app import day_clock
    from authsrv.cli import _load_cfg, _store
    from settlement.day import DayError, close_open_day

    cfg = _load_cfg(args)
    clock = day_clock(cfg)
    with _store(cfg) as store:
        try:
            with store.write() as led:
                closed, opened = close_open_day(led, clock, _now_ms(), how="manual")
        except DayError as exc:
            _fail(args, f"refused: {exc}")
            return EXIT_FAILED
        for d in closed:
            n = d.last_seq - d.first_seq + 1
            kind = " (empty: the host was not running)" if d.how == "empty" else ""
            sys.stdout.write(f"closed business day {d.day}: {n} transfers{kind}\n")
        early = ""
        if opened.day > clock.day_of(_now_ms()):
            early = f" (opened early: its date starts {_local(clock, clock.start_ms(opened.day))})"
        sys.stdout.write(
            f"business day {opened.day} is open (from transfer {opened.first_seq}); "
            f"its cut-over is at {_local(clock, clock.start_ms(next_day(opened.day)))}{early}\n"
        )
        if args.files:
            for d in closed:
                if not _write(args, cfg, store, d.day):
                    return EXIT_FAILED
    return EXIT_OK


def _days(args: argparse.Namespace) -> int:
    from authsrv.app import day_clock
    from authsrv.cli import _load_cfg, _store
    from settlement.clearing import clearing_file_stem

    cfg = _load_cfg(args)
    clock = day_clock(cfg)
    directory = _dir(args, cfg)
    with _store(cfg, readonly=True) as store, store.read() as led:
        days = led.days()
        last = led.last_transfer_seq()
    rows = [("day", "state", "transfers", "opened", "closed", "clearing file")]
    for d in days[-args.last :]:
        if d.closed:
            n = d.last_seq - d.first_seq + 1
            stem = clearing_file_stem(d.day, d.file_seq)
            present = (directory / f"{stem}.ipm.sha256").exists()
            rows.append(
                (
                    d.day,
                    f"closed ({d.how})",
                    str(n),
                    _local(clock, d.opened_ms),
                    _local(clock, d.closed_ms),
                    f"{stem}.ipm" if present else "MISSING (authsrv settle clearing --missing)",
                )
            )
        else:
            rows.append(
                (
                    d.day,
                    "open",
                    str(last - d.first_seq + 1),
                    _local(clock, d.opened_ms),
                    "at " + _local(clock, clock.start_ms(next_day(d.day))),
                    "",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        sys.stdout.write(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
        )
    sys.stdout.write(f"clearing files in {directory}\n")
    return EXIT_OK


def _clearing(args: argparse.Namespace) -> int:
    from authsrv.cli import _load_cfg, _store
    from settlement.day import DayError, parse_day
    from settlement.ledger import days_without_files

    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store:
        try:
            if args.missing:
                days = days_without_files(store, _dir(args, cfg))
                if not days:
                    sys.stdout.write(f"every closed day has its files in {_dir(args, cfg)}\n")
            else:
                parse_day(args.day)
                days = [args.day]
            for day in days:
                if not _write(args, cfg, store, day):
                    return EXIT_FAILED
        except DayError as exc:
            _fail(args, f"error: {exc}")
            return EXIT_USAGE
    return EXIT_OK


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _local(clock: DayClock, at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=clock.tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _batches(args: argparse.Namespace) -> int:
    from authsrv.app import day_clock
    from authsrv.cli import _load_cfg, _store
    from protocol.currency import format_minor
    from protocol.reconciliation import FIGURES

    cfg = _load_cfg(args)
    clock = day_clock(cfg)
    with _store(cfg, readonly=True) as store, store.read() as led:
        closed = list(led.closed_batches(args.terminal))
    if args.out_of_balance:
        closed = [b for b in closed if b.rc != "00"]
    closed.sort(key=lambda b: b.seq)
    closed = closed[-args.last :]
    if not closed:
        which = f" of terminal {args.terminal}" if args.terminal else ""
        sys.stdout.write(f"no closed batches{which}\n")
        return EXIT_OK
    names = {
        attr: attr.replace("_minor", " amount").replace("_count", " count").replace("_", " ")
        + f" ({field})"
        for field, attr in FIGURES.items()
    }
    rows = [("closed", "terminal", "store", "batch", "rc", "host net", "terminal net", "differs")]
    for b in closed:
        cur = b.currency
        differs = [
            f"{names.get(k, k)} {v:+d}"
            if k.endswith("_count")
            else f"{names.get(k, k)} {format_minor(v, cur)}"
            for k, v in b.difference.items()
            if v and k != "net_minor"
        ]
        rows.append(
            (
                _local(clock, b.closed_ms),
                b.terminal_id,
                b.store_id,
                b.batch_number,
                "00 in balance" if b.rc == "00" else f"{b.rc} OUT OF BALANCE",
                format_minor(b.host.net_minor, cur),
                format_minor(b.terminal_net_minor, cur),
                ", ".join(differs) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")
    sys.stdout.write("net: positive when the store's settlement account rose (it is owed)\n")
    return EXIT_OK
