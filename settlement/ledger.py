"""From the ledger to the clearing file: a closed business day's records, and its files.

Each journal transfer between a card's purse and a store's settlement account is one clearing
record, in journal order. Its record id is the transfer's journal sequence number. A reversal
transfer becomes a reversal record of the operation it gives back, naming the original record
by its id, RRN, STAN and business day (an earlier day's, for a late reversal). A clawback (the
back office takes unspent campaign value back to the issuing store, :mod:`authsrv.campaign`)
is, for the counterparties, a reversal of (part of) the issue: it becomes a reversal record of
the ``issue`` record it claws back, with STAN ``000000`` (it has no terminal request). A transfer
that does not involve a store (a host job such as an expiry) is not a clearing record: no store
owes or is owed for it, and the settlement report lists it under its funding account.

Transfers made by host jobs rather than terminal requests carry no terminal time or RRN. Their
record shows the commit time (UTC) as the local time, and the journal sequence number
(12 digits) as the RRN.

The files of a day are written once its day is closed, from one read transaction, with the
day's close time as their creation time. So building them twice gives identical bytes, and
:func:`write_day_files` may run again after an interruption.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from authsrv.model import BusinessDay, Card, Transfer, card_account
from authsrv.store import Ledger, LedgerStore
from settlement.clearing import (
    ClearingOriginal,
    ClearingPaths,
    ClearingRecord,
    clearing_file_stem,
    write_clearing_files,
)
from settlement.day import DayError, DayIndex

__all__ = [
    "DayFiles",
    "clearing_records",
    "closed_day",
    "days_without_files",
    "write_day_files",
]

STORE_PREFIX = "store:"
CARD_PREFIX = "card:"
REVERSAL_OP = "reversal"
CLAWBACK_OP = "clawback"  # a reversal record of the issue it claws back


def _utc(at_ms: int, fmt: str) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime(fmt)


def _store_side(t: Transfer) -> bool:
    """Whether the transfer moves value between a card and a store (a clearing record)."""
    return bool(t.card_id) and (
        t.debit.startswith(STORE_PREFIX) or t.credit.startswith(STORE_PREFIX)
    )


class _Cards:
    """Card records read once each (a day's records touch a card many times)."""

    def __init__(self, led: Ledger) -> None:
        self.led = led
        self.masked: dict[int, str] = {}

    def __call__(self, card_id: int) -> str:
        masked = self.masked.get(card_id)
        if masked is None:
            card: Card | None = self.led.card(card_id)
            assert card is not None, f"journal names a missing card {card_id}"
            masked = self.masked[card_id] = card.masked
        return masked


def clearing_records(led: Ledger, index: DayIndex, day: BusinessDay) -> Iterator[ClearingRecord]:
    """The clearing records of a closed day, in journal (commit) order."""
    if not day.closed:
        raise DayError(f"business day {day.day} is still open; its file is written at close")
    masked = _Cards(led)
    for t in led.journal_range(day.first_seq, day.last_seq):
        if not _store_side(t):
            continue
        dc = "C" if t.credit == card_account(t.card_id) else "D"
        op = t.op
        original = None
        if op in (REVERSAL_OP, CLAWBACK_OP):
            orig = led.transfer(t.original_seq)
            assert orig is not None, f"{op} {t.seq} names a missing transfer"
            op = orig.op
            original = ClearingOriginal(
                rrn=orig.rrn or f"{orig.seq % 10**12:012d}",
                stan=orig.stan,
                business_day=index.day_of_seq(orig.seq),
                record_id=orig.seq,
            )
        yield ClearingRecord(
            record_id=t.seq,
            op=op,
            dc=dc,
            amount_minor=t.amount_minor,
            currency=t.unit,
            card_masked=masked(t.card_id),
            store_id=t.store_id,
            terminal_id=t.terminal_id,
            approval=t.approval,
            rrn=t.rrn or f"{t.seq % 10**12:012d}",
            stan=t.stan,
            local_time=t.local_time or _utc(t.at_ms, "%m%d%H%M%S"),
            committed_utc=_utc(t.at_ms, "%Y%m%d%H%M%S"),
            business_day=day.day,
            original=original,
        )


def closed_day(led: Ledger, day: str) -> tuple[BusinessDay, DayIndex]:
    """The closed day named ``day`` and the index of all days.

    Error handling: :class:`DayError` when there is no such day or it is still open.
    """
    index = DayIndex(led.days())
    record = index.get(day)
    if record is None:
        known = [d.day for d in index.days]
        span = f"days {known[0]} to {known[-1]}" if known else "no days yet"
        raise DayError(f"no business day {day} in the store ({span})")
    if not record.closed:
        raise DayError(
            f"business day {day} is still open; close it with `authsrv settle cutover` "
            "or wait for its cut-over time"
        )
    return record, index


@dataclass(frozen=True, slots=True)
class DayFiles:
    day: BusinessDay
    paths: ClearingPaths
    records: int


def write_day_files(store: LedgerStore, directory: Path, host_id: str, day: str) -> DayFiles:
    """Write (or write again, identically) the clearing files of the closed day ``day``.

    Error handling: :class:`DayError` for a day that is not closed;
    :class:`~settlement.clearing.ClearingFileError` when a different file of that name exists;
    ``OSError`` from the file system.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with store.read() as led:
        record, index = closed_day(led, day)
        counted = _Counted(clearing_records(led, index, record))
        paths = write_clearing_files(
            directory,
            business_day=record.day,
            file_seq=record.file_seq,
            host_id=host_id,
            created=_utc(record.closed_ms, "%Y%m%d%H%M%S"),
            records=counted,
        )
    return DayFiles(record, paths, counted.n)


class _Counted:
    def __init__(self, it: Iterator[ClearingRecord]) -> None:
        self.it = it
        self.n = 0

    def __iter__(self) -> Iterator[ClearingRecord]:
        for rec in self.it:
            self.n += 1
            yield rec


def days_without_files(store: LedgerStore, directory: Path) -> list[str]:
    """Closed days whose clearing file (with its digest) is not in ``directory``, oldest first."""
    with store.read() as led:
        days = led.days()
    missing = []
    for d in days:
        if not d.closed:
            continue
        stem = clearing_file_stem(d.day, d.file_seq)
        if (
            not (directory / f"{stem}.ipm.sha256").exists()
            or not (directory / f"{stem}.csv.sha256").exists()
        ):
            missing.append(d.day)
    return missing
