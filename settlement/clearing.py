"""Clearing files: one business day's money movements, as the processor receives them (issue 6).

A clearing file is a stream of ISO 8583 messages in the layout of :mod:`protocol.clearing`
(which documents every field): a file header, one record per movement in input order, and a
trailer with the record count and the debit and credit totals per currency. The same records
are written as CSV, and a SHA-256 digest file in ``sha256sum`` format sits beside each file.

Input: :class:`ClearingRecord` values, in the order the host committed them (the order is kept;
field 71 numbers the records 1, 2, ... in that order). Extracting them from the ledger is the
business-day cut-over's job; this module only needs the records and the day's facts.

Determinism: the bytes depend only on the arguments. The creation time is an argument (the
cut-over time of the day, say), never the wall clock, so building a closed day twice gives the
same bytes, and :func:`write_clearing_files` accepts an existing file with identical bytes but
refuses to replace a different one (a closed day never changes).

Card data: records hold masked card numbers only (first six, ``*``, last four). The writer
refuses a record whose card field is anything else and the reader refuses such a file, so that
no full card number can reach a clearing file or be read from one as if it belonged there.

Inbound files (``authsrv settle import``, :class:`InboundFile`, :func:`build_inbound_file`):
offline transactions sent to the host in the same layout, except that field 2 is the full card
number. Only this explicit inbound mode reads them; they are read in place (memory-mapped),
never copied, and the card numbers in them go nowhere but into the keyed hash.

Files (``<stem>`` is ``clearing-<business day>-<file sequence, 6 digits>``):

- ``<stem>.ipm``: the clearing file proper;
- ``<stem>.csv``: the same records, one row each under a header row (:data:`CSV_COLUMNS`); no
  header, trailer or total rows, so every row is a record and a spreadsheet's sum of
  ``amount_minor`` per ``currency`` and ``dc`` is the trailer's total;
- ``<stem>.ipm.sha256`` and ``<stem>.csv.sha256``: ``<hex digest>  <file name>\\n``, as
  ``sha256sum --check`` reads it.

Each is written to a temporary file in the same directory, flushed to disk and renamed, the
digest files last: a digest file exists only beside a complete file.

>>> rec = ClearingRecord(record_id=17, op="redeem", dc="D", amount_minor=1250,
...     currency="978", card_masked="603628******0003", store_id="S0001",
...     terminal_id="T0000001", approval="000042", rrn="632610000017", stan="000123",
...     local_time="1122113015", committed_utc="20261122103015", business_day="20261122")
>>> data = build_clearing_file(business_day="20261122", file_seq=1, host_id="H1",
...                            created="20261123020000", records=[rec])
>>> read_clearing_file(data).records == (rec,)
True
>>> describe_clearing_file(data).splitlines()[-1].split()[:6]
['1', 'redeem', 'D', '12.50', 'EUR', '603628******0003']
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import mmap
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import iso8583
import msgspec

from protocol import clearing as layout
from protocol.cards import luhn_valid, mask_pan
from protocol.clearing import (
    CARD_NUMBER,
    CLEARING_FIELDS,
    FRAME_PREFIX_LEN,
    FUNC_FINANCIAL,
    FUNC_HEADER,
    FUNC_REVERSAL,
    FUNC_TRAILER,
    MASKED_CARD,
    MESSAGE_FIELDS,
    MESSAGE_LEN_MAX,
    MTI_FILE,
    MTI_RECORD,
    OPERATIONS,
    TOTALS_BLOCKS_MAX,
    CurrencyTotals,
)
from protocol.currency import CURRENCIES, format_minor

__all__ = [
    "CSV_COLUMNS",
    "ClearingFile",
    "ClearingFileError",
    "ClearingOriginal",
    "ClearingPaths",
    "ClearingRecord",
    "CurrencyTotals",
    "FileHeader",
    "FileTrailer",
    "InboundFile",
    "InboundItem",
    "InboundRecord",
    "VerifyReport",
    "build_clearing_file",
    "build_inbound_file",
    "clearing_file_stem",
    "describe_clearing_file",
    "read_clearing_file",
    "verify_clearing_file",
    "write_clearing_files",
    "write_digest_file",
]

# --- limits (each is a field width of protocol.clearing) ----------------------------------------

RECORDS_MAX = 10**8 - 1  # field 71 and the trailer's count are n8
AMOUNT_MINOR_MAX = 10**12 - 1  # field 4 is n12
RECORD_ID_MAX = 10**20 - 1  # field 120 is n20: any unsigned 64-bit journal sequence fits
FILE_SEQ_MAX = 10**6 - 1  # field 124 is n6
# Records encoded between two writes (and two digest updates): about 1.4 MB of IPM and CSV.
WRITE_BATCH_RECORDS = 4096
WRITE_BUFFER_BYTES = 1 << 20
MESSAGE_LEN_MIN = 4 + 2 * 16  # MTI and two bitmaps: every message has a secondary bitmap
FILE_MODE = 0o644  # readable by every local user: the files hold no card data (masked only)
assert TOTALS_BLOCKS_MAX >= 1
assert AMOUNT_MINOR_MAX * RECORDS_MAX <= 10**20 - 1, "a total always fits the trailer's n20"

# --- records ---------------------------------------------------------------------------------


class ClearingOriginal(msgspec.Struct, frozen=True, kw_only=True):
    """What a reversal record says about the record it reverses (field 56)."""

    rrn: str  # the original's field 37
    stan: str  # the original's field 11
    business_day: str  # YYYYMMDD: the day (and so the file) of the original record
    record_id: int  # the original record's field 120


class ClearingRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One committed money movement of one card: a financial record, or a reversal record.

    ``dc`` is the direction on the card: ``D`` took value off it, ``C`` put value on it. A
    financial record has its operation's direction (:data:`protocol.clearing.OPERATIONS`); a
    reversal record (``original`` set) carries the operation it reverses and the opposite
    direction, and ``amount_minor`` is the amount given back (the whole original, or part of
    it). The record's sequence number in the file is its position, so it is not a field here.
    """

    record_id: int  # the host's id of the movement, unique (the journal sequence number)
    op: str  # an operation of protocol.clearing.OPERATIONS
    dc: str  # "D" or "C"
    amount_minor: int  # 0 to 10^12 - 1
    currency: str  # ISO 4217 numeric, a code of protocol.currency.CURRENCIES
    card_masked: str  # first six, "*" x 2-9, last four
    store_id: str  # field 42 of the request, 1-15 printable characters, no trailing space
    terminal_id: str  # field 41 of the request, 8 printable characters
    approval: str  # field 38 of the answer: 0-6 letters and digits
    rrn: str  # field 37: 12 letters, digits or spaces
    stan: str  # field 11: 6 digits
    local_time: str  # the terminal's fields 13 + 12: MMDDhhmmss
    committed_utc: str  # when the host committed it: YYYYMMDDhhmmss, UTC
    business_day: str  # YYYYMMDD, the file's
    original: ClearingOriginal | None = None  # set on a reversal record, and only there

    @property
    def is_reversal(self) -> bool:
        return self.original is not None

    @property
    def function_code(self) -> str:
        return FUNC_REVERSAL if self.original is not None else FUNC_FINANCIAL


class FileHeader(msgspec.Struct, frozen=True, kw_only=True):
    file_id: str  # "<sender>-<business day>-<file sequence, 6 digits>"
    business_day: str  # YYYYMMDD
    file_seq: int  # the sender's number for this file, 1-999999
    created_utc: str  # YYYYMMDDhhmmss: an input (the cut-over time), not the wall clock
    sender: str  # host id


class FileTrailer(msgspec.Struct, frozen=True, kw_only=True):
    file_id: str
    business_day: str
    record_count: int
    totals: tuple[CurrencyTotals, ...]  # one per currency in the file, ascending by code


class ClearingFile(msgspec.Struct, frozen=True, kw_only=True):
    header: FileHeader
    records: tuple[ClearingRecord, ...]  # record sequence number n is records[n - 1]
    trailer: FileTrailer


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`verify_clearing_file` found in a file that passed every check."""

    path: str
    size_bytes: int
    header: FileHeader
    trailer: FileTrailer
    digest_checked: bool

    def line(self) -> str:
        """One line for an operator: ``OK: 3 records, totals EUR debit 2 132.50 ...``."""
        return (
            f"OK: {self.trailer.record_count} records, totals {_totals_text(self.trailer.totals)}"
            f"; file {self.header.file_id}, business day {self.header.business_day}, "
            f"digest {'checked' if self.digest_checked else 'NOT checked'}"
        )


class ClearingPaths(msgspec.Struct, frozen=True, kw_only=True):
    ipm: Path
    csv: Path
    ipm_digest: Path
    csv_digest: Path


class ClearingFileError(ValueError):
    """A clearing file, or the input for one, is not as it must be.

    The message says where (record number, message number and byte offset, field) and what;
    it never quotes field contents, which could be card data. ``record``, ``offset`` and
    ``field`` hold the same facts for a program (``None`` where they do not apply).
    """

    def __init__(
        self,
        what: str,
        *,
        where: str = "",
        field: str | None = None,
        record: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.what = what
        self.record = record
        self.offset = offset
        self.field = field
        if field is not None:
            where = f"{where}, field {field} ({_desc(field)})" if where else f"field {field}"
        super().__init__(f"{where}: {what}" if where else what)


def _desc(field: str) -> str:
    spec = CLEARING_FIELDS.get(field)
    return str(spec["desc"]) if spec is not None else "not in the layout"


# --- checks shared by the writer and the reader -----------------------------------------------

_STAN = re.compile(r"[0-9]{6}", re.ASCII)
_HHMMSS = r"(?:[01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]"
_LOCAL = re.compile(r"(?:0[1-9]|1[0-2])[0-3][0-9]" + _HHMMSS, re.ASCII)
_DAY = re.compile(r"[0-9]{8}", re.ASCII)
_STAMP = re.compile(r"[0-9]{8}" + _HHMMSS, re.ASCII)
_RRN = re.compile(r"(?! {12})[0-9A-Za-z ]{12}", re.ASCII)
_APPROVAL = re.compile(r"[0-9A-Za-z]{0,6}", re.ASCII)
_TERMINAL = re.compile(r"(?! {8})[\x20-\x7e]{8}", re.ASCII)
_STORE = re.compile(r"[\x20-\x7e]{0,14}[\x21-\x7e]", re.ASCII)
_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}", re.ASCII)
_N8 = re.compile(r"[0-9]{8}", re.ASCII)
_N12 = re.compile(r"[0-9]{12}", re.ASCII)
_N20 = re.compile(r"[0-9]{20}", re.ASCII)
_DAYS_CACHE_MAX = 4096  # distinct dates remembered as valid: a file has a handful


def _mmdd_valid(mmdd: str) -> bool:
    month, day = int(mmdd[:2]), int(mmdd[2:])
    return day >= 1 and day <= (29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31)


_MMDD_OK = frozenset(
    f"{m:02d}{d:02d}" for m in range(1, 13) for d in range(1, 32) if _mmdd_valid(f"{m:02d}{d:02d}")
)


@functools.lru_cache(maxsize=_DAYS_CACHE_MAX)
def _day_valid(text: str) -> bool:
    """YYYYMMDD that is a date of the Gregorian calendar (year 1 onwards)."""
    if not _DAY.fullmatch(text):
        return False
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def _record_problem(rec: ClearingRecord) -> tuple[str, str] | None:
    """The first field of ``rec`` that breaks the layout, and why; None when all is well.

    The business day is compared with the file's by the caller.
    """
    if not MASKED_CARD.fullmatch(rec.card_masked):
        return "2", "not a masked card number (first six digits, 2-9 '*', last four digits)"
    amount = rec.amount_minor
    if type(amount) is not int or not 0 <= amount <= AMOUNT_MINOR_MAX:
        return "4", f"the amount must be an integer of minor units, 0 to {AMOUNT_MINOR_MAX}"
    if not _STAN.fullmatch(rec.stan):
        return "11", "the STAN must be 6 digits"
    if not (_LOCAL.fullmatch(rec.local_time) and rec.local_time[:4] in _MMDD_OK):
        return "12", "the terminal's local time must be MMDDhhmmss"
    if not _RRN.fullmatch(rec.rrn):
        return "37", "the RRN must be 12 letters, digits or spaces (not all spaces)"
    if not _APPROVAL.fullmatch(rec.approval):
        return "38", "the approval code must be 0-6 letters or digits"
    if not _TERMINAL.fullmatch(rec.terminal_id):
        return "41", "the terminal id must be 8 printable ASCII characters"
    if not _STORE.fullmatch(rec.store_id):
        return "42", "the store id must be 1-15 printable ASCII characters, no trailing space"
    if rec.currency not in CURRENCIES:
        return "49", "not an ISO 4217 numeric currency code the host knows"
    orig = rec.original
    if orig is not None:
        if not _RRN.fullmatch(orig.rrn):
            return "56", "the original's RRN must be 12 letters, digits or spaces"
        if not _STAN.fullmatch(orig.stan):
            return "56", "the original's STAN must be 6 digits"
        if not _day_valid(orig.business_day):
            return "56", "the original's business day must be a date YYYYMMDD"
        if orig.business_day > rec.business_day:
            return "56", "the original's business day is after the reversal's"
        oid = orig.record_id
        if type(oid) is not int or not 0 <= oid <= RECORD_ID_MAX:
            return "56", f"the original's record id must be an integer 0 to {RECORD_ID_MAX}"
        if oid == rec.record_id:
            return "56", "a reversal cannot name itself as its original"
    rid = rec.record_id
    if type(rid) is not int or not 0 <= rid <= RECORD_ID_MAX:
        return "120", f"the record id must be an integer 0 to {RECORD_ID_MAX}"
    direction = OPERATIONS.get(rec.op)
    if direction is None:
        return "122", f"not an operation of the layout ({', '.join(OPERATIONS)})"
    if orig is not None:
        direction = "C" if direction == "D" else "D"
    if rec.dc != direction:
        kind = "a reversal of" if orig is not None else "a financial record of"
        return "121", f"must be {direction} for {kind} {rec.op} (card's point of view)"
    if not (_STAMP.fullmatch(rec.committed_utc) and _day_valid(rec.committed_utc[:8])):
        return "123", "the host's commit time must be YYYYMMDDhhmmss (UTC)"
    return None


def clearing_file_stem(business_day: str, file_seq: int) -> str:
    """The file name without extension.

    >>> clearing_file_stem("20261122", 1)
    'clearing-20261122-000001'
    """
    return f"clearing-{business_day}-{file_seq:06d}"


def _file_id(host_id: str, business_day: str, file_seq: int) -> str:
    return f"{host_id}-{business_day}-{file_seq:06d}"


def _header_problem(h: FileHeader) -> tuple[str, str] | None:
    if not _day_valid(h.business_day):
        return "28", "the business day must be a date YYYYMMDD"
    if not _HOST_ID.fullmatch(h.sender):
        return (
            "94",
            "the host id must be 1-11 letters, digits, '_', '.' or '-', from a letter or digit",
        )
    if type(h.file_seq) is not int or not 1 <= h.file_seq <= FILE_SEQ_MAX:
        return "124", f"the file sequence number must be 1 to {FILE_SEQ_MAX}"
    if not (_STAMP.fullmatch(h.created_utc) and _day_valid(h.created_utc[:8])):
        return "125", "the creation time must be YYYYMMDDhhmmss (UTC)"
    if h.file_id != _file_id(h.sender, h.business_day, h.file_seq):
        return "101", "the file id is not <sender>-<business day>-<file sequence>"
    return None


# --- encoding --------------------------------------------------------------------------------


def _header_fields(h: FileHeader) -> dict[str, str]:
    return {
        "t": MTI_FILE,
        "24": FUNC_HEADER,
        "28": h.business_day,
        "94": h.sender,
        "101": h.file_id,
        "124": f"{h.file_seq:06d}",
        "125": h.created_utc,
    }


def _trailer_fields(t: FileTrailer) -> dict[str, str]:
    return {
        "t": MTI_FILE,
        "24": FUNC_TRAILER,
        "28": t.business_day,
        "101": t.file_id,
        "126": f"{t.record_count:08d}",
        "127": layout.encode_totals(t.totals),
    }


def _record_fields(rec: ClearingRecord, seq: int) -> dict[str, str]:
    """The field texts of a checked record; the key order is fixed (one encode plan each)."""
    fields = {
        "t": MTI_RECORD,
        "2": rec.card_masked,
        "4": f"{rec.amount_minor:012d}",
        "11": rec.stan,
        "12": rec.local_time,
        "24": FUNC_FINANCIAL,
        "28": rec.business_day,
        "37": rec.rrn,
        "38": f"{rec.approval:<6}",
        "41": rec.terminal_id,
        "42": f"{rec.store_id:<15}",
        "49": rec.currency,
    }
    orig = rec.original
    if orig is not None:
        fields["24"] = FUNC_REVERSAL
        fields["56"] = f"{orig.rrn}{orig.stan}{orig.business_day}{orig.record_id:020d}"
    fields["71"] = f"{seq:08d}"
    fields["120"] = f"{rec.record_id:020d}"
    fields["121"] = rec.dc
    fields["122"] = rec.op
    fields["123"] = rec.committed_utc
    return fields


def _frame(fields: dict[str, str]) -> bytes:
    body = layout.encode(fields)
    return len(body).to_bytes(FRAME_PREFIX_LEN, "big") + body


CSV_COLUMNS: tuple[str, ...] = (
    "seq",
    "record_id",
    "kind",  # financial or reversal
    "op",
    "dc",
    "amount_minor",
    "amount",  # major units with the currency's exponent, e.g. 12.50 (no currency suffix)
    "currency",
    "card",
    "store_id",
    "terminal_id",
    "approval",
    "rrn",
    "stan",
    "local_time",
    "committed_utc",
    "business_day",
    "orig_rrn",  # the four orig_ columns are empty except on a reversal
    "orig_stan",
    "orig_business_day",
    "orig_record_id",
)
_SCALE: dict[str, int] = {code: exp for code, (_, exp) in CURRENCIES.items()}


def _major(amount_minor: int, currency: str) -> str:
    exp = _SCALE[currency]
    if exp == 0:
        return str(amount_minor)
    whole, frac = divmod(amount_minor, 10**exp)
    return f"{whole}.{frac:0{exp}d}"


def _csv_row(rec: ClearingRecord, seq: int) -> list[object]:
    orig = rec.original
    return [
        seq,
        rec.record_id,
        "reversal" if orig is not None else "financial",
        rec.op,
        rec.dc,
        rec.amount_minor,
        _major(rec.amount_minor, rec.currency),
        rec.currency,
        rec.card_masked,
        rec.store_id,
        rec.terminal_id,
        rec.approval,
        rec.rrn,
        rec.stan,
        rec.local_time,
        rec.committed_utc,
        rec.business_day,
        *(
            ("", "", "", "")
            if orig is None
            else (orig.rrn, orig.stan, orig.business_day, orig.record_id)
        ),
    ]


class _Lines:
    """A write() target for csv.writer that keeps the text until it is taken."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def take(self) -> bytes:
        # Every column is ASCII (checked), so this cannot fail.
        data = "".join(self.parts).encode("ascii")
        self.parts.clear()
        return data


class _Totalled(Protocol):
    """What the reader's file-level checks (totals, unique record ids) read of a record."""

    @property
    def record_id(self) -> int: ...

    @property
    def currency(self) -> str: ...

    @property
    def dc(self) -> str: ...

    @property
    def amount_minor(self) -> int: ...


class _Totals:
    """Debit and credit counts and sums per currency, as the trailer states them."""

    def __init__(self) -> None:
        # currency -> [debit count, debit minor, credit count, credit minor]
        self.by_currency: dict[str, list[int]] = {}

    def add(self, rec: _Totalled) -> None:
        self.add_amount(rec.currency, rec.dc, rec.amount_minor)

    def add_amount(self, currency: str, dc: str, amount_minor: int) -> None:
        row = self.by_currency.get(currency)
        if row is None:
            row = self.by_currency[currency] = [0, 0, 0, 0]
        i = 0 if dc == "D" else 2
        row[i] += 1
        row[i + 1] += amount_minor

    def result(self) -> tuple[CurrencyTotals, ...]:
        return tuple(
            CurrencyTotals(
                currency=code,
                debit_count=row[0],
                debit_minor=row[1],
                credit_count=row[2],
                credit_minor=row[3],
            )
            for code, row in sorted(self.by_currency.items())
        )


def _checked_header(sender: str, business_day: str, file_seq: int, created: str) -> FileHeader:
    """The header of a file to write; :class:`ClearingFileError` names the field it cannot hold."""
    header = FileHeader(
        file_id=_file_id(sender, business_day, file_seq) if type(file_seq) is int else "",
        business_day=business_day,
        file_seq=file_seq,
        created_utc=created,
        sender=sender,
    )
    problem = _header_problem(header)
    if problem is not None:
        field, what = problem
        raise ClearingFileError(what, where="file header", field=field)
    return header


def _file_batches(
    *,
    business_day: str,
    file_seq: int,
    host_id: str,
    created: str,
    records: Iterable[ClearingRecord],
    with_csv: bool,
) -> Iterator[tuple[bytes, bytes]]:
    """The IPM bytes and CSV bytes of a file, in consecutive pieces of about a batch each.

    Error handling: :class:`ClearingFileError` for an argument or record the layout cannot
    hold, naming the record by its position in ``records`` (1-based) and the field.
    """
    header = _checked_header(host_id, business_day, file_seq, created)
    lines = _Lines()
    writer = csv.writer(lines)  # RFC 4180: CRLF line ends, quotes only where needed
    if with_csv:
        writer.writerow(CSV_COLUMNS)
    frames = [_frame(_header_fields(header))]
    totals = _Totals()
    seen: set[int] = set()
    seq = 0
    for seq, rec in enumerate(records, start=1):
        if seq > RECORDS_MAX:
            raise ClearingFileError(f"more than {RECORDS_MAX} records: split the day")
        problem = _record_problem(rec)
        if problem is None and rec.business_day != business_day:
            problem = "28", "the record's business day is not the file's"
        if problem is None and rec.record_id in seen:
            problem = "120", "the record id is not unique in the file"
        if problem is not None:
            field, what = problem
            raise ClearingFileError(what, where=f"record {seq}", field=field, record=seq)
        seen.add(rec.record_id)
        totals.add(rec)
        frames.append(_frame(_record_fields(rec, seq)))
        if with_csv:
            writer.writerow(_csv_row(rec, seq))
        if len(frames) >= WRITE_BATCH_RECORDS:
            yield b"".join(frames), lines.take()
            frames.clear()
    summed = totals.result()
    if len(summed) > TOTALS_BLOCKS_MAX:
        raise ClearingFileError(f"{len(summed)} currencies, a file holds {TOTALS_BLOCKS_MAX}")
    trailer = FileTrailer(
        file_id=header.file_id, business_day=business_day, record_count=seq, totals=summed
    )
    frames.append(_frame(_trailer_fields(trailer)))
    yield b"".join(frames), lines.take()


def build_clearing_file(
    *,
    business_day: str,
    file_seq: int,
    host_id: str,
    created: str,
    records: Iterable[ClearingRecord],
) -> bytes:
    """The clearing file of a business day: the same arguments always give the same bytes.

    ``business_day`` is YYYYMMDD; ``file_seq`` the sender's number of this file (1-999999);
    ``host_id`` the sender (1-11 letters, digits, ``_.-``); ``created`` the creation time as
    YYYYMMDDhhmmss UTC, an input (the day's cut-over time) so that a rebuild is identical.
    Records stay in the order given, numbered from 1 (input order = commit order).

    Error handling: :class:`ClearingFileError` names the first argument or record (1-based
    position and field) the layout cannot hold, e.g. a card number that is not masked.
    """
    return b"".join(
        ipm
        for ipm, _ in _file_batches(
            business_day=business_day,
            file_seq=file_seq,
            host_id=host_id,
            created=created,
            records=records,
            with_csv=False,
        )
    )


# --- writing files ---------------------------------------------------------------------------


def _digest_line(hexdigest: str, name: str) -> bytes:
    return f"{hexdigest}  {name}\n".encode("ascii")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class _TempFile:
    """A file written beside its target under a temporary name, hashed as it is written."""

    def __init__(self, directory: Path, name: str) -> None:
        self.target = directory / name
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        self.path = Path(temp)
        self.file = os.fdopen(fd, "wb", buffering=WRITE_BUFFER_BYTES)
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha256.update(data)

    def finish(self) -> str:
        """Flush to disk, set the mode; the hex digest of what was written."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.path, FILE_MODE)
        return self.sha256.hexdigest()

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)


def write_clearing_files(
    directory: Path | str,
    *,
    business_day: str,
    file_seq: int,
    host_id: str,
    created: str,
    records: Iterable[ClearingRecord],
) -> ClearingPaths:
    """Write the IPM file, the CSV file and their digest files into ``directory``.

    Arguments as :func:`build_clearing_file`; ``records`` is read once (a generator will do),
    and neither file is held in memory.

    Resource handling: every file goes to a temporary name in ``directory``, is fsynced and
    renamed over its target, IPM and CSV first, digest files last, then the directory is
    fsynced. An interrupted run leaves at most ``.*.tmp`` files (removed on an exception) or a
    file without its digest (which verify reports); running it again completes the set.

    Error handling: :class:`ClearingFileError` as :func:`build_clearing_file`, and when a file
    of that name exists with other content: a written day is not rewritten differently (an
    existing file with the same bytes is fine). ``OSError`` from the file system.
    """
    directory = Path(directory)
    stem = clearing_file_stem(business_day, file_seq)
    temps: list[_TempFile] = []
    try:
        ipm = _TempFile(directory, f"{stem}.ipm")
        temps.append(ipm)
        csv_file = _TempFile(directory, f"{stem}.csv")
        temps.append(csv_file)
        for ipm_bytes, csv_bytes in _file_batches(
            business_day=business_day,
            file_seq=file_seq,
            host_id=host_id,
            created=created,
            records=records,
            with_csv=True,
        ):
            ipm.write(ipm_bytes)
            csv_file.write(csv_bytes)
        for t in (ipm, csv_file):
            hexdigest = t.finish()
            digest_file = _TempFile(directory, f"{t.target.name}.sha256")
            temps.append(digest_file)
            digest_file.write(_digest_line(hexdigest, t.target.name))
            digest_file.finish()
        for t in temps:
            if t.target.exists() and _file_sha256(t.target) != t.sha256.hexdigest():
                raise ClearingFileError(
                    f"{t.target} exists with other content: the file of a business day is "
                    "never rewritten differently (move it away to replace it on purpose)"
                )
        for t in temps:
            os.replace(t.path, t.target)
        _fsync_dir(directory)
    finally:
        for t in temps:
            t.discard()
    return ClearingPaths(
        ipm=temps[0].target,
        csv=temps[1].target,
        ipm_digest=temps[2].target,
        csv_digest=temps[3].target,
    )


# --- reading ---------------------------------------------------------------------------------

# The exact bitmaps of each message kind: a message has its kind's fields, no more, no fewer.
_BITMAPS: dict[tuple[str, str], str] = {}
for _kind, _keys in MESSAGE_FIELDS.items():
    _sample = layout.encode(
        {"t": _kind[0], **{k: "0" * CLEARING_FIELDS[k]["max_len"] for k in _keys}}
    )
    _BITMAPS[_kind] = _sample[4:36].decode("ascii")


_RECORD_BITMAPS = {kind: bitmap for kind, bitmap in _BITMAPS.items() if kind[0] == MTI_RECORD}


def _shown(value: str | None) -> str:
    """An MTI or function code for an error message: shown only when it is digits."""
    if value is None:
        return "none"
    return value if value.isascii() and value.isdigit() and len(value) <= 4 else "not numeric"


def _kind_text(doc: dict[str, str]) -> str:
    return f"MTI {_shown(doc.get('t'))}, function code {_shown(doc.get('24'))}"


def _field_set_problem(doc: dict[str, str], kind: tuple[str, str]) -> tuple[str, str]:
    expected = MESSAGE_FIELDS[kind]
    present = [k for k in doc if k not in ("t", "p", "1")]
    for key in expected:
        if key not in doc:
            return key, "missing"
    extra = [k for k in present if k not in expected]
    assert extra, "called for a message whose bitmaps are not its kind's"
    return extra[0], "not a field of this message"


_Buffer = bytes | bytearray | memoryview | mmap.mmap


_R = TypeVar("_R", bound=_Totalled)


class _BaseScan(Generic[_R]):
    """One pass over a file's bytes: framing, messages, order, records, counts and totals.

    How a record is read is the subclass's: :class:`_Scan` (outbound, masked card numbers,
    every problem refuses the file) or :class:`_InboundScan` (inbound files).
    """

    def __init__(self, data: _Buffer, on_record: Callable[[int, _R], None] | None):
        self.data = data
        self.on_record = on_record

    def _messages(self) -> Iterator[tuple[int, int, dict[str, str]]]:
        """(message number, offset of its length prefix, decoded fields) of every message."""
        data = self.data
        size = len(data)
        offset = 0
        number = 0
        while offset < size:
            number += 1
            where = f"message {number} at byte {offset}"
            if size - offset < FRAME_PREFIX_LEN:
                raise ClearingFileError(
                    f"truncated length prefix ({size - offset} of {FRAME_PREFIX_LEN} bytes)",
                    where=where,
                    offset=offset,
                )
            length = int.from_bytes(data[offset : offset + FRAME_PREFIX_LEN], "big")
            start = offset + FRAME_PREFIX_LEN
            if not MESSAGE_LEN_MIN <= length <= MESSAGE_LEN_MAX:
                raise ClearingFileError(
                    f"length prefix {length} is not a clearing message's "
                    f"({MESSAGE_LEN_MIN}-{MESSAGE_LEN_MAX} bytes): not a clearing file, or "
                    "a corrupt prefix",
                    where=where,
                    offset=offset,
                )
            if size - start < length:
                raise ClearingFileError(
                    f"truncated: the length prefix says {length} bytes, {size - start} remain",
                    where=where,
                    offset=offset,
                )
            message = bytes(data[start : start + length])
            try:
                doc = layout.decode(message)
            except iso8583.DecodeError as exc:
                raise ClearingFileError(
                    f"{exc.msg} (at byte {start + exc.pos})",
                    where=where,
                    field=exc.field,
                    offset=start + exc.pos,
                ) from None
            yield number, offset, doc
            offset = start + length

    def run(self) -> tuple[FileHeader, FileTrailer, int]:
        """Header, trailer and the file's size after every check passed."""
        messages = self._messages()
        first = next(messages, None)
        if first is None:
            raise ClearingFileError("empty file: no file header", offset=0)
        header = self._header(*first)
        totals = _Totals()
        seen: set[int] = set()
        records = 0
        on_record = self.on_record
        for number, offset, doc in messages:
            kind = (doc["t"], doc.get("24", ""))
            if _RECORD_BITMAPS.get(kind) == doc["p"] + doc.get("1", ""):
                pass  # a financial or reversal record with exactly its fields
            elif kind == (MTI_FILE, FUNC_TRAILER):
                trailer = self._trailer(number, offset, doc, header, totals, records)
                end = (
                    offset
                    + FRAME_PREFIX_LEN
                    + int.from_bytes(self.data[offset : offset + FRAME_PREFIX_LEN], "big")
                )
                if end != len(self.data):
                    raise ClearingFileError(
                        f"{len(self.data) - end} bytes of trailing data after the trailer "
                        f"(message {number})",
                        where=f"byte {end}",
                        offset=end,
                    )
                return header, trailer, end
            elif kind in _BITMAPS:  # a record with the wrong fields, or a second header
                where = f"message {number} at byte {offset}"
                if kind == (MTI_FILE, FUNC_HEADER):
                    raise ClearingFileError("a second file header", where=where, offset=offset)
                field, what = _field_set_problem(doc, kind)
                raise ClearingFileError(what, where=where, field=field, offset=offset)
            else:
                raise ClearingFileError(
                    f"not a clearing message ({_kind_text(doc)})",
                    where=f"message {number} at byte {offset}",
                    offset=offset,
                )
            records += 1
            rec = self._record(number, offset, doc, records, header)
            if rec.record_id in seen:
                raise ClearingFileError(
                    "the record id is not unique in the file",
                    where=f"record {records} (message {number} at byte {offset})",
                    field="120",
                    record=records,
                    offset=offset,
                )
            seen.add(rec.record_id)
            totals.add(rec)
            if on_record is not None:
                on_record(records, rec)
        raise ClearingFileError(
            f"the file ends after {records} records without a trailer (truncated?)",
            where=f"byte {len(self.data)}",
            offset=len(self.data),
        )

    def _header(self, number: int, offset: int, doc: dict[str, str]) -> FileHeader:
        where = f"header (message {number} at byte {offset})"
        kind = (MTI_FILE, FUNC_HEADER)
        if (doc["t"], doc.get("24")) != kind:
            raise ClearingFileError(
                f"a clearing file starts with its header (MTI {MTI_FILE}, function code "
                f"{FUNC_HEADER}), not {_kind_text(doc)}",
                where=where,
                offset=offset,
            )
        if doc["p"] + doc.get("1", "") != _BITMAPS[kind]:
            field, what = _field_set_problem(doc, kind)
            raise ClearingFileError(what, where=where, field=field, offset=offset)
        seq_text = doc["124"]
        header = FileHeader(
            file_id=doc["101"],
            business_day=doc["28"],
            file_seq=int(seq_text) if seq_text.isascii() and seq_text.isdigit() else -1,
            created_utc=doc["125"],
            sender=doc["94"],
        )
        problem = _header_problem(header)
        if problem is not None:
            field, what = problem
            raise ClearingFileError(what, where=where, field=field, offset=offset)
        return header

    def _record(
        self, number: int, offset: int, doc: dict[str, str], seq: int, header: FileHeader
    ) -> _R:
        raise NotImplementedError  # pragma: no cover

    def _trailer(
        self,
        number: int,
        offset: int,
        doc: dict[str, str],
        header: FileHeader,
        totals: _Totals,
        records: int,
    ) -> FileTrailer:
        where = f"trailer (message {number} at byte {offset})"
        kind = (MTI_FILE, FUNC_TRAILER)

        def fail(field: str, what: str) -> ClearingFileError:
            return ClearingFileError(what, where=where, field=field, offset=offset)

        if doc["p"] + doc.get("1", "") != _BITMAPS[kind]:
            raise fail(*_field_set_problem(doc, kind))
        if doc["101"] != header.file_id:
            raise fail("101", "the trailer's file id is not the header's")
        if doc["28"] != header.business_day:
            raise fail("28", "the trailer's business day is not the header's")
        if not _N8.fullmatch(doc["126"]):
            raise fail("126", "the record count must be 8 digits")
        count = int(doc["126"])
        if count != records:
            raise fail("126", f"the trailer counts {count} records, the file has {records}")
        try:
            stated = layout.decode_totals(doc["127"])
        except ValueError as exc:
            raise fail("127", str(exc)) from None
        summed = totals.result()
        if stated != summed:
            raise fail("127", _totals_difference(stated, summed))
        return FileTrailer(
            file_id=doc["101"], business_day=doc["28"], record_count=count, totals=stated
        )


class _Scan(_BaseScan[ClearingRecord]):
    """The outbound reading: masked card numbers only, and any problem refuses the file."""

    def _record(
        self, number: int, offset: int, doc: dict[str, str], seq: int, header: FileHeader
    ) -> ClearingRecord:
        where = f"record {seq} (message {number} at byte {offset})"

        def fail(field: str, what: str) -> ClearingFileError:
            return ClearingFileError(what, where=where, field=field, record=seq, offset=offset)

        for key, pattern in (("4", _N12), ("71", _N8), ("120", _N20)):
            if not pattern.fullmatch(doc[key]):
                raise fail(key, f"must be {CLEARING_FIELDS[key]['max_len']} digits")
        if int(doc["71"]) != seq:
            raise fail("71", f"the record sequence number is {int(doc['71'])}, expected {seq}")
        if doc["28"] != header.business_day:
            raise fail("28", "the record's business day is not the file's")
        original = None
        if "56" in doc:
            text = doc["56"]
            if not _N20.fullmatch(text, 26):
                raise fail("56", "the original's record id must be 20 digits")
            original = ClearingOriginal(
                rrn=text[:12], stan=text[12:18], business_day=text[18:26], record_id=int(text[26:])
            )
        rec = ClearingRecord(
            record_id=int(doc["120"]),
            op=doc["122"],
            dc=doc["121"],
            amount_minor=int(doc["4"]),
            currency=doc["49"],
            card_masked=doc["2"],
            store_id=doc["42"].rstrip(" "),
            terminal_id=doc["41"],
            approval=doc["38"].rstrip(" "),
            rrn=doc["37"],
            stan=doc["11"],
            local_time=doc["12"],
            committed_utc=doc["123"],
            business_day=doc["28"],
            original=original,
        )
        problem = _record_problem(rec)
        if problem is not None:
            raise fail(*problem)
        # Padding is spaces only: what was read is exactly what the writer writes.
        if f"{rec.store_id:<15}" != doc["42"]:
            raise fail("42", "the store id must be padded with spaces only")
        if f"{rec.approval:<6}" != doc["38"]:
            raise fail("38", "the approval code must be padded with spaces only")
        return rec


def _totals_difference(
    stated: tuple[CurrencyTotals, ...], summed: tuple[CurrencyTotals, ...]
) -> str:
    """The first difference between the trailer's totals and the records' sums, in words."""
    by_stated = {t.currency: t for t in stated}
    by_summed = {t.currency: t for t in summed}
    for code in sorted(by_stated.keys() | by_summed.keys()):
        s, r = by_stated.get(code), by_summed.get(code)
        if s is None:
            return f"no totals for currency {code}, which records carry"
        if r is None:
            return f"totals for currency {code}, which no record carries"
        for label, a, b in (
            ("debit count", s.debit_count, r.debit_count),
            ("credit count", s.credit_count, r.credit_count),
        ):
            if a != b:
                return f"{code} {label} is {a} in the trailer, the records have {b}"
        for label, a, b in (
            ("debit total", s.debit_minor, r.debit_minor),
            ("credit total", s.credit_minor, r.credit_minor),
        ):
            if a != b:
                return (
                    f"{code} {label} is {format_minor(a, code)} in the trailer, the records "
                    f"sum to {format_minor(b, code)}"
                )
    raise AssertionError("totals differ but no currency does")  # pragma: no cover


def _totals_text(totals: Iterable[CurrencyTotals]) -> str:
    parts = [
        f"{CURRENCIES[t.currency][0] if t.currency in CURRENCIES else t.currency} "
        f"debit {t.debit_count} {_major(t.debit_minor, t.currency)} "
        f"credit {t.credit_count} {_major(t.credit_minor, t.currency)}"
        for t in totals
    ]
    return "; ".join(parts) if parts else "none"


class _Source:
    """The bytes of a file (memory-mapped) or bytes given; a context manager either way."""

    def __init__(self, source: Path | str | bytes | bytearray) -> None:
        self.path: Path | None = None
        self._map: mmap.mmap | None = None
        self._file: Any = None
        if isinstance(source, (bytes, bytearray)):
            self.data: _Buffer = source
        else:
            self.path = Path(source)
            self._file = self.path.open("rb")
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                self.data = b""  # an empty file cannot be mapped
            else:
                self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                self.data = self._map

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._map is not None:
            self._map.close()
        if self._file is not None:
            self._file.close()


def read_clearing_file(source: Path | str | bytes | bytearray) -> ClearingFile:
    """Read and check a clearing file (a path, or its bytes); the digest file is not read.

    Everything :func:`verify_clearing_file` checks, except the digest, is checked here: a
    file that reads is a file that verifies.

    Error handling: :class:`ClearingFileError` for the first problem, saying where; ``OSError``
    when the file cannot be read.
    """
    records: list[ClearingRecord] = []
    with _Source(source) as src:
        header, trailer, _ = _Scan(src.data, lambda _n, rec: records.append(rec)).run()
    return ClearingFile(header=header, records=tuple(records), trailer=trailer)


_DIGEST_LINE = re.compile(r"([0-9a-f]{64})  ([^\n/]+)\n", re.ASCII)
DIGEST_FILE_MAX_BYTES = 4096  # one line: 64 hex, two spaces, a file name


def verify_clearing_file(path: Path | str, *, digest: bool = True) -> VerifyReport:
    """Re-read a clearing file and prove it whole; the report of a file that passed.

    Checked: framing (every length prefix, nothing truncated, nothing after the trailer); every
    message decodes in the layout's canonical form with exactly its fields; the header comes
    first and once, the trailer last and once, records in between numbered 1, 2, ...; the
    business day and file id agree everywhere; every record is well-formed (masked card,
    operation and D/C, dates, codes) and its record id unique; the trailer's count and its
    per-currency debit and credit counts and totals equal what the records sum to; and, unless
    ``digest=False``, that ``<file>.sha256`` exists, names the file and matches its SHA-256.

    Error handling: :class:`ClearingFileError` for the first problem found (structure before
    digest, so that a broken file says where it is broken); ``OSError`` when the file itself
    cannot be read. A missing digest file is a ``ClearingFileError``.
    """
    path = Path(path)
    with _Source(path) as src:
        header, trailer, size = _Scan(src.data, None).run()
        if digest:
            _check_digest(path, hashlib.sha256(src.data).hexdigest())
    return VerifyReport(
        path=str(path), size_bytes=size, header=header, trailer=trailer, digest_checked=digest
    )


def _check_digest(
    path: Path,
    actual: str,
    missing: str = "missing (every clearing file has one; verify without it only on purpose)",
) -> None:
    digest_path = path.with_name(path.name + ".sha256")
    where = f"digest file {digest_path.name}"
    try:
        with digest_path.open("rb") as f:
            raw = f.read(DIGEST_FILE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ClearingFileError(missing, where=where) from None
    text = raw.decode("ascii", errors="replace")
    match = _DIGEST_LINE.fullmatch(text)
    if match is None or len(raw) > DIGEST_FILE_MAX_BYTES:
        raise ClearingFileError("not one line '<64 lower-case hex>  <file name>'", where=where)
    if match[2] != path.name:
        raise ClearingFileError(f"names another file, not {path.name}", where=where)
    if match[1] != actual:
        raise ClearingFileError(
            f"SHA-256 mismatch: {path.name} is not the file that was written", where=where
        )


# --- describing ------------------------------------------------------------------------------

_AMOUNT_WIDTH = 17  # "9999999999.99 EUR": the widest n12 amount with its currency


def _amount(amount_minor: int, currency: str) -> str:
    return format_minor(amount_minor, currency).rjust(_AMOUNT_WIDTH)


def _day_text(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def _record_line(seq: int, rec: ClearingRecord) -> str:
    line = (
        f"{seq:>10}  {rec.op:<10}  {rec.dc}  {_amount(rec.amount_minor, rec.currency)}  "
        f"{rec.card_masked:<19}  {rec.store_id:<15}  {rec.terminal_id:<8}  {rec.approval:<8}  "
        f"{rec.rrn:<12}  {rec.stan}"
    )
    orig = rec.original
    if orig is not None:
        line += (
            f"  reverses record {orig.record_id} of {_day_text(orig.business_day)} "
            f"(RRN {orig.rrn}, STAN {orig.stan})"
        )
    return line


def describe_clearing_file(source: Path | str | bytes | bytearray) -> str:
    """A readable summary: the header, totals per currency, then one line per record.

    Error handling: as :func:`read_clearing_file` (the file is checked as it is described;
    the digest is not).
    """
    lines: list[str] = []
    with _Source(source) as src:
        header, trailer, size = _Scan(
            src.data, lambda n, rec: lines.append(_record_line(n, rec))
        ).run()
    created = header.created_utc
    out = [
        f"clearing file {header.file_id}",
        f"  business day   {_day_text(header.business_day)}",
        f"  file sequence  {header.file_seq}",
        f"  sender         {header.sender}",
        f"  created        {_day_text(created[:8])} "
        f"{created[8:10]}:{created[10:12]}:{created[12:]} UTC",
        f"  records        {trailer.record_count}",
        f"  size           {size} bytes",
        "totals (card's view: D took value off cards, C put value on them)",
        f"  {'currency':<8}  {'debits':>8}  {'debit amount':>{_AMOUNT_WIDTH}}  "
        f"{'credits':>8}  {'credit amount':>{_AMOUNT_WIDTH}}  {'net to cards':>{_AMOUNT_WIDTH}}",
    ]
    for t in trailer.totals:
        net = t.credit_minor - t.debit_minor
        out.append(
            f"  {CURRENCIES[t.currency][0]} {t.currency}  "
            f"{t.debit_count:>8}  {_amount(t.debit_minor, t.currency)}  "
            f"{t.credit_count:>8}  {_amount(t.credit_minor, t.currency)}  "
            f"{_amount(net, t.currency)}"
        )
    if not trailer.totals:
        out.append("  (no records)")
    out.append("records")
    out.append(
        f"{'seq':>10}  {'op':<10}  {'DC'}  {'amount':>{_AMOUNT_WIDTH}}  {'card':<19}  "
        f"{'store':<15}  {'terminal':<8}  {'approval':<8}  {'rrn':<12}  stan"
    )
    out.extend(lines)
    return "\n".join(out) + "\n"


# --- inbound files (authsrv settle import) -----------------------------------------------------

_N3 = re.compile(r"[0-9]{3}", re.ASCII)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InboundItem:
    """One transaction for :func:`build_inbound_file`: a web shop's sale of a card (activate), a
    load, a purchase paid with a card (redeem) or a refund.

    ``pan`` is the full card number (kept out of ``repr``). ``local_time`` is MMDDhhmmss at the
    sender; ``stan`` 6 digits and ``rrn`` 12 letters or digits are the sender's references.
    ``record_id`` defaults to the record's sequence number, ``sent_utc`` (field 123, when the
    sender took the transaction, UTC YYYYMMDDhhmmss) to the file's creation time. ``original``
    makes a reversal record, which the host rejects on import (record by record).
    """

    pan: str = dataclasses.field(repr=False)
    op: str
    amount_minor: int
    currency: str
    store_id: str
    terminal_id: str
    local_time: str
    stan: str
    rrn: str
    approval: str = ""
    record_id: int | None = None
    sent_utc: str | None = None
    original: ClearingOriginal | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InboundRecord:
    """One record of an inbound file as the reader found it.

    ``pan`` and ``message`` (the record's bytes, which the import's content MAC covers) hold
    the full card number: neither is in ``repr``, and neither may be stored or logged.
    ``problem`` is the first field whose content breaks the layout and why (the import rejects
    the record with 30 naming it and goes on with the others); None for a well-formed record.
    """

    seq: int  # field 71: 1, 2, ... in file order
    reversal: bool  # a reversal record (1240/400)
    op: str
    dc: str
    amount_minor: int
    currency: str
    stan: str
    local_time: str  # MMDDhhmmss at the sender
    rrn: str
    approval: str
    terminal_id: str
    store_id: str
    record_id: int  # the sender's id of the record, unique in the file
    sent_utc: str  # field 123
    problem: tuple[str, str] | None
    pan: str = dataclasses.field(repr=False)
    message: bytes = dataclasses.field(repr=False)

    @property
    def check_digit_ok(self) -> bool:
        return luhn_valid(self.pan)

    @property
    def card_masked(self) -> str:
        """First six and last four; empty when field 2 is not a card number at all."""
        return mask_pan(self.pan) if CARD_NUMBER.fullmatch(self.pan) else ""


def _inbound_problem(doc: dict[str, str]) -> tuple[str, str] | None:
    """The first field of an inbound record whose content breaks the layout, and why.

    The card's check digit is not one of them: a wrong one is answered 14 by the host, as for a
    terminal. Shared by the reader and :func:`build_inbound_file`, so that what the builder
    writes reads without a problem.
    """
    if not CARD_NUMBER.fullmatch(doc["2"]):
        return "2", "not a card number (12-19 digits)"
    if not _STAN.fullmatch(doc["11"]):
        return "11", "the STAN must be 6 digits"
    local = doc["12"]
    if not (_LOCAL.fullmatch(local) and local[:4] in _MMDD_OK):
        return "12", "the local time must be MMDDhhmmss"
    if not _RRN.fullmatch(doc["37"]):
        return "37", "the RRN must be 12 letters, digits or spaces (not all spaces)"
    if not _APPROVAL.fullmatch(doc["38"].rstrip(" ")):
        return "38", "the approval code must be 0-6 letters or digits, space padded"
    if not _TERMINAL.fullmatch(doc["41"]):
        return "41", "the terminal id must be 8 printable ASCII characters"
    if not _STORE.fullmatch(doc["42"].rstrip(" ")):
        return "42", "the store id must be 1-15 printable ASCII characters, space padded"
    if doc["49"] not in CURRENCIES:
        return "49", "not an ISO 4217 numeric currency code the host knows"
    op = doc["122"]
    direction = OPERATIONS.get(op)
    if direction is None:
        return "122", f"not an operation of the layout ({', '.join(OPERATIONS)})"
    if "56" in doc:
        direction = "C" if direction == "D" else "D"
    if doc["121"] != direction:
        kind = "a reversal of" if "56" in doc else "a financial record of"
        return "121", f"must be {direction} for {kind} {op} (card's point of view)"
    sent = doc["123"]
    if not (_STAMP.fullmatch(sent) and _day_valid(sent[:8])):
        return "123", "the sender's time must be YYYYMMDDhhmmss (UTC)"
    return None


class _InboundScan(_BaseScan[InboundRecord]):
    """The inbound reading: field 2 is a full card number.

    What the file's integrity rests on refuses the file: framing, message kinds and their
    fields, header, trailer, record numbering, business day, and the fields the count and the
    totals are computed from (4, 49, 121; 120 unique). A masked card number refuses it too (an
    outbound clearing file is not imported). A problem with one record's other content is
    that record's (:attr:`InboundRecord.problem`).
    """

    def _record(
        self, number: int, offset: int, doc: dict[str, str], seq: int, header: FileHeader
    ) -> InboundRecord:
        where = f"record {seq} (message {number} at byte {offset})"

        def fail(field: str, what: str) -> ClearingFileError:
            return ClearingFileError(what, where=where, field=field, record=seq, offset=offset)

        for key, pattern in (("4", _N12), ("49", _N3), ("71", _N8), ("120", _N20)):
            if not pattern.fullmatch(doc[key]):
                raise fail(key, f"must be {CLEARING_FIELDS[key]['max_len']} digits")
        if int(doc["71"]) != seq:
            raise fail("71", f"the record sequence number is {int(doc['71'])}, expected {seq}")
        if doc["28"] != header.business_day:
            raise fail("28", "the record's business day is not the file's")
        if doc["121"] not in ("C", "D"):
            raise fail("121", "must be D or C (the trailer's totals count by it)")
        if MASKED_CARD.fullmatch(doc["2"]):
            raise fail("2", "a masked card number: an outbound clearing file is not imported")
        start = offset + FRAME_PREFIX_LEN
        size = int.from_bytes(self.data[offset:start], "big")
        return InboundRecord(
            seq=seq,
            reversal="56" in doc,
            op=doc["122"],
            dc=doc["121"],
            amount_minor=int(doc["4"]),
            currency=doc["49"],
            stan=doc["11"],
            local_time=doc["12"],
            rrn=doc["37"],
            approval=doc["38"].rstrip(" "),
            terminal_id=doc["41"],
            store_id=doc["42"].rstrip(" "),
            record_id=int(doc["120"]),
            sent_utc=doc["123"],
            problem=_inbound_problem(doc),
            pan=doc["2"],
            message=bytes(self.data[start : start + size]),
        )


class InboundFile:
    """An inbound file, read in place (memory-mapped, never copied) and checked whole on open.

    Opening checks everything the file's integrity rests on (:class:`_InboundScan`: framing,
    header, trailer, record numbering, count and totals per currency), then, unless
    ``digest=False``, the digest file ``<file>.sha256`` beside it (``sha256sum`` format), which
    catches a changed byte anywhere. :meth:`records` then reads the records a second time.

    Resource handling: a context manager; the map and the file are closed on exit.

    Error handling: :class:`ClearingFileError` for the first problem (where and what, never a
    field's content); ``OSError`` when the file cannot be read.
    """

    def __init__(self, source: Path | str | bytes | bytearray, *, digest: bool = True) -> None:
        self._src = _Source(source)
        try:
            scan = _InboundScan(self._src.data, None)
            self.header, self.trailer, self.size_bytes = scan.run()
            self.sha256 = hashlib.sha256(self._src.data).hexdigest()
            self.digest_checked = digest and self._src.path is not None
            if self.digest_checked:
                assert self._src.path is not None
                _check_digest(
                    self._src.path,
                    self.sha256,
                    missing="missing (write one with `sha256sum FILE > FILE.sha256`, or import "
                    "without it on purpose: --no-digest)",
                )
        except BaseException:
            self.close()
            raise

    def records(self) -> Iterator[InboundRecord]:
        """The records in file order (the file was checked whole when it was opened)."""
        scan = _InboundScan(self._src.data, None)
        seq = 0
        for number, offset, doc in scan._messages():
            if doc["t"] == MTI_RECORD:
                seq += 1
                yield scan._record(number, offset, doc, seq, self.header)

    def unchanged(self) -> bool:
        """Whether the bytes are still the ones checked on open (nobody wrote into the file)."""
        return hashlib.sha256(self._src.data).hexdigest() == self.sha256

    def summary(self) -> str:
        """One line: ``OK: 3 records, totals EUR debit 1 30.00 credit 2 150.00; file ...``."""
        return (
            f"OK: {self.trailer.record_count} records, totals "
            f"{_totals_text(self.trailer.totals)}; file {self.header.file_id} from "
            f"{self.header.sender}, business day {self.header.business_day}, digest "
            f"{'checked' if self.digest_checked else 'NOT checked'}"
        )

    def close(self) -> None:
        self._src.__exit__()

    def __enter__(self) -> InboundFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _inbound_fields(
    item: InboundItem, seq: int, business_day: str, created: str
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """The record's field texts, and the first problem the layout has with them."""
    amount = item.amount_minor
    if type(amount) is not int or not 0 <= amount <= AMOUNT_MINOR_MAX:
        what = f"the amount must be an integer of minor units, 0 to {AMOUNT_MINOR_MAX}"
        return {}, ("4", what)
    record_id = seq if item.record_id is None else item.record_id
    if type(record_id) is not int or not 0 <= record_id <= RECORD_ID_MAX:
        return {}, ("120", f"the record id must be an integer 0 to {RECORD_ID_MAX}")
    direction = OPERATIONS.get(item.op)
    if direction is None:
        return {}, ("122", f"not an operation of the layout ({', '.join(OPERATIONS)})")
    fields = {
        "t": MTI_RECORD,
        "2": item.pan,
        "4": f"{amount:012d}",
        "11": item.stan,
        "12": item.local_time,
        "24": FUNC_FINANCIAL,
        "28": business_day,
        "37": item.rrn,
        "38": f"{item.approval:<6}",
        "41": item.terminal_id,
        "42": f"{item.store_id:<15}",
        "49": item.currency,
    }
    orig = item.original
    if orig is not None:
        direction = "C" if direction == "D" else "D"
        if not (
            _RRN.fullmatch(orig.rrn)
            and _STAN.fullmatch(orig.stan)
            and _day_valid(orig.business_day)
            and type(orig.record_id) is int
            and 0 <= orig.record_id <= RECORD_ID_MAX
        ):
            return {}, ("56", "the original must have an RRN, a STAN, a day and a record id")
        fields["24"] = FUNC_REVERSAL
        fields["56"] = f"{orig.rrn}{orig.stan}{orig.business_day}{orig.record_id:020d}"
    fields["71"] = f"{seq:08d}"
    fields["120"] = f"{record_id:020d}"
    fields["121"] = direction
    fields["122"] = item.op
    fields["123"] = created if item.sent_utc is None else item.sent_utc
    return fields, _inbound_problem(fields)


def build_inbound_file(
    *,
    sender: str,
    business_day: str,
    file_seq: int,
    created: str,
    items: Iterable[InboundItem],
) -> bytes:
    """An inbound file that :class:`InboundFile` reads: for tests, and for integrators who
    produce their files in Python (write it with mode 0600: it holds card numbers, and give it
    its digest with :func:`write_digest_file`).

    The header is the clearing file's: file id ``<sender>-<business day>-<file seq>``, which is
    what makes each record exactly once on import (with its sequence number). The card's check
    digit is not checked here: the host rejects a record whose card number fails it (14), as it
    rejects reversal records and operations it does not import, record by record.

    >>> data = build_inbound_file(sender="WEB1", business_day="20261122", file_seq=1,
    ...     created="20261122230000", items=[InboundItem(pan="6036280000000000003",
    ...     op="redeem", amount_minor=1250, currency="978", store_id="WEB01",
    ...     terminal_id="W0000001", local_time="1122183015", stan="000001", rrn="ORDER0000001")])
    >>> with InboundFile(data) as inbound:
    ...     [(r.seq, r.op, r.card_masked, r.problem) for r in inbound.records()]
    [(1, 'redeem', '603628*********0003', None)]

    Error handling: :class:`ClearingFileError` naming the first argument or item (1-based) and
    field the layout cannot hold; never quoting a card number.
    """
    header = _checked_header(sender, business_day, file_seq, created)
    frames = [_frame(_header_fields(header))]
    totals = _Totals()
    seen: set[str] = set()
    seq = 0
    for seq, item in enumerate(items, start=1):
        if seq > RECORDS_MAX:
            raise ClearingFileError(f"more than {RECORDS_MAX} records: split the file")
        fields, problem = _inbound_fields(item, seq, business_day, created)
        if problem is None and fields["120"] in seen:
            problem = "120", "the record id is not unique in the file"
        if problem is not None:
            field, what = problem
            raise ClearingFileError(what, where=f"item {seq}", field=field, record=seq)
        seen.add(fields["120"])
        totals.add_amount(fields["49"], fields["121"], item.amount_minor)
        frames.append(_frame(fields))
    summed = totals.result()
    if len(summed) > TOTALS_BLOCKS_MAX:
        raise ClearingFileError(f"{len(summed)} currencies, a file holds {TOTALS_BLOCKS_MAX}")
    trailer = FileTrailer(
        file_id=header.file_id, business_day=business_day, record_count=seq, totals=summed
    )
    frames.append(_frame(_trailer_fields(trailer)))
    return b"".join(frames)


def write_digest_file(path: Path | str) -> Path:
    """Write ``<path>.sha256`` (``sha256sum`` format) for an existing file; atomically.

    The file is read to hash it, nothing else; the digest file holds no card data.
    """
    path = Path(path)
    digest = _TempFile(path.parent, f"{path.name}.sha256")
    try:
        digest.write(_digest_line(_file_sha256(path), path.name))
        digest.finish()
        os.replace(digest.path, digest.target)
        _fsync_dir(path.parent)
    finally:
        digest.discard()
    return digest.target
