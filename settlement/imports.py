"""Batch import of offline transactions: ``authsrv settle import FILE`` (issue: settlement).

An inbound file (:class:`settlement.clearing.InboundFile`: the clearing layout, full card
numbers in field 2) carries a sender's offline transactions, for example a web shop's day:
sales of cards (activate), loads, purchases paid with a card (redeem) and refunds. Importing it:

1. checks the file whole before anything moves: framing, header, trailer, record numbering,
   count and totals per currency, and its digest file. A file that fails is refused whole
   (:class:`~settlement.clearing.ClearingFileError`, saying where and what);
2. applies each record as a 0200 request through the host's own processor
   (:meth:`authsrv.processor.Processor.process_batch`): the same engine, the same single writer
   and group commit, the same LMDB write lock as a serving host's (an import runs beside it).
   The record's store (field 42) and terminal (field 41) are the request's: both must exist,
   and the terminal must stand in that store (03 otherwise);
3. keeps each record's verdict for good, so that every record is decided exactly once;
4. writes every record that was not applied to the rejects file, with its reason.

Exactly once. A record's duplicate key is ``import|<file id>|<record sequence number>`` (the
header's field 101 and the record's field 71; a terminal's key cannot take that shape) and its
content MAC covers the record's bytes; the processor stores both with the record's postings
in one transaction (DESIGN §5). The verdict (response code, reason, content MAC) then goes into
the ``import_records`` database, which is never pruned, so an import of the same file months
later still finds every record decided and moves nothing. A record that comes again under the
same key with other content (another file that reuses the file id) is rejected with 94 and the
first verdict stands. Two decisions are not final and are not kept: 91 (store full, or the
terminal must sign on first) and 94; the next import of the file tries such records again. A
crash between a batch's commit and its verdicts' commit is covered by the processor's duplicate
record (a replay) within the duplicate window (``store.dup_window_s``).

Time. A 0100/0200 whose field 7 is more than ``server.skew_max_s`` from the host's clock is
declined (39=12), so that a terminal cannot get an old answer replayed for a new purchase. An
offline record is hours or days old, so its request carries the import's own time in field 7
(the request really is transmitted now; the duplicate key does not depend on it) and the
record's local time in fields 12 and 13, from which the journal and the clearing record take
theirs. The terminal path is unchanged.

Card data (DESIGN §6): a card number goes from the mapped file into the keyed hash and the
request in memory, nowhere else. The store keeps the card's id, the duplicate and verdict
records a keyed MAC, the rejects file and the logs the masked number.
"""

from __future__ import annotations

import csv
import hmac
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lmdb
import msgspec

from authsrv.engine import Decision
from authsrv.processor import Pending, Processor
from authsrv.store import LedgerStore
from protocol.clearing import INBOUND_OPERATIONS, OPERATIONS
from protocol.currency import CURRENCIES
from protocol.errors import FormatError
from protocol.messages import Request, parse_request
from settlement.clearing import ClearingFileError, InboundFile, InboundRecord

__all__ = [
    "REJECTS_COLUMNS",
    "ImportResult",
    "ImportStopped",
    "ImportedFile",
    "RecordVerdict",
    "import_file",
    "imported_files",
    "rejects_path",
]

# Records decided per write transaction (one group commit): about 35k/s on the development
# machine at 256 (DESIGN §8), and a serving host waits for at most one such commit.
IMPORT_BATCH_RECORDS = 256
DUP_KEY_PREFIX = "import|"
# Kept apart from a terminal request's content, which is MACed with the same key.
CONTENT_DOMAIN = b"authsrv-import\x1f"
IMPORTS_DB = b"imports"  # file id -> ImportedFile
IMPORT_RECORDS_DB = b"import_records"  # file id + "|" + record sequence (8 digits) -> verdict
REJECTS_SUFFIX = ".rejects.csv"
REJECTS_MODE = 0o644  # readable by every local user: masked card numbers only
MTI = "0200"
# The request of each operation an inbound record may carry (field 3: from/to account 00).
PROCESSING_CODES: dict[str, str] = {
    "activate": "720000",
    "load": "210000",
    "redeem": "000000",
    "refund": "200000",
}
APPROVED = frozenset({"00", "10"})
# Decisions the next import of the file tries again (not kept as the record's verdict).
NOT_FINAL = frozenset({"91", "94"})
# Reasons in words, by response code (DESIGN §3), for the rejects file.
RC_TEXT: dict[str, str] = {
    "03": "unknown store or terminal, or the terminal is not in that store",
    "05": "do not honour",
    "12": "invalid transaction (not in the currency of the card's product)",
    "13": "invalid amount",
    "14": "unknown card",
    "30": "format error",
    "41": "lost card",
    "43": "stolen card",
    "51": "insufficient funds",
    "54": "expired card",
    "55": "the product requires a PIN (an imported record carries none)",
    "57": "not permitted for this card or product",
    "58": "not permitted at this store (the product is not accepted there)",
    "61": "exceeds the product's amount limit",
    "62": "restricted card (blocked or closed)",
    "75": "PIN tries exceeded",
    "78": "card not activated",
    "91": "host unavailable (store full, or the terminal must sign on): import the file again",
    "96": "system malfunction",
}
REJECTS_COLUMNS: tuple[str, ...] = (
    "seq",  # field 71: the record's sequence number in the file
    "card",  # masked: first six and last four (empty when field 2 is not a card number)
    "store_id",
    "terminal_id",
    "op",
    "amount_minor",
    "amount",  # major units, e.g. 12.50 (empty for an unknown currency)
    "currency",
    "rc",
    "reason",
)
assert tuple(PROCESSING_CODES) == INBOUND_OPERATIONS
assert not APPROVED & NOT_FINAL


class ImportedFile(msgspec.Struct, frozen=True, kw_only=True):
    """What the store keeps of an inbound file (database ``imports``, by file id)."""

    file_id: str
    sender: str
    business_day: str
    sha256: str  # of the file last imported under this id
    records: int
    applied: int
    rejected: int  # for good (not counting records the next import tries again: 91, 94)
    first_ms: int  # the first import that decided a record
    last_ms: int  # the last import that decided a record
    runs: int  # imports that decided at least one record


class RecordVerdict(msgspec.Struct, frozen=True, array_like=True):
    """One record's final decision (database ``import_records``)."""

    rc: str
    reason: str  # in words, e.g. "51 insufficient funds"; never card data
    content: bytes  # keyed MAC of the record's bytes
    at_ms: int


class ImportStopped(Exception):
    """An import stopped part-way (the file changed under it). What was decided stays decided;
    importing the file again decides the rest. The message says so; it holds no card data."""


@dataclass
class ImportResult:
    """What one import decided, and what earlier imports of the same file had decided."""

    file_id: str
    sender: str
    business_day: str
    records: int
    rejects: Path
    summary: str  # the file's OK line (count, totals, digest)
    reused_id: bool = False  # the file id was imported before from other bytes
    applied_now: int = 0
    rejected_now: int = 0
    applied_earlier: int = 0
    rejected_earlier: int = 0
    pending: int = 0  # rejected now with 91 or 94 by the host: the next import tries again
    changed: bool = False  # the file's bytes changed while it was imported
    codes: dict[str, int] = field(default_factory=dict)  # rejections by response code

    @property
    def applied(self) -> int:
        return self.applied_now + self.applied_earlier

    @property
    def rejected(self) -> int:
        return self.rejected_now + self.rejected_earlier

    @property
    def nothing_moved(self) -> bool:
        return self.applied_now == 0

    def lines(self) -> list[str]:
        """What the command prints: the file, what happened, and the count that adds up."""
        out = [self.summary]
        if self.reused_id:
            out.append(
                f"note: file id {self.file_id} was imported before from a file with other "
                "bytes; records that differ from what was imported then are rejected (94)"
            )
        earlier = self.applied_earlier + self.rejected_earlier
        if self.records and earlier == self.records:
            out.append(
                f"already imported: {self.applied_earlier} applied earlier, "
                f"{self.rejected_earlier} rejected earlier, nothing moved"
            )
        else:
            before = (
                f"; decided by an earlier import: {self.applied_earlier} applied, "
                f"{self.rejected_earlier} rejected"
                if earlier
                else ""
            )
            out.append(
                f"imported now: {self.applied_now} applied, {self.rejected_now} rejected{before}"
            )
        if self.pending:
            out.append(
                f"{self.pending} rejected for now only (91 or 94 from the host): the next "
                "import of the file tries them again"
            )
        if self.changed:
            out.append(
                "WARNING: the file changed while it was imported; its records were decided as "
                "they were read: check it and import it again"
            )
        codes = ", ".join(f"{n} x {rc}" for rc, n in sorted(self.codes.items()))
        out.append(
            f"{self.records} records = {self.applied} applied + {self.rejected} rejected"
            + (f" ({codes})" if codes else "")
            + f"; rejects: {self.rejects}"
        )
        return out


@dataclass(frozen=True, slots=True)
class _Dbs:
    files: Any
    records: Any


def _dbs(store: LedgerStore, *, create: bool) -> _Dbs | None:
    """The import databases; None when they do not exist yet and ``create`` is False.

    They are opened here rather than in :mod:`authsrv.store`, which the host never needs them
    in; a store made before them gets them at its first import (one short write transaction).
    """
    try:
        return _Dbs(
            store.env.open_db(IMPORTS_DB, create=create),
            store.env.open_db(IMPORT_RECORDS_DB, create=create),
        )
    except lmdb.NotFoundError:
        return None


_enc = msgspec.msgpack.Encoder()
_dec_file = msgspec.msgpack.Decoder(ImportedFile)
_dec_verdict = msgspec.msgpack.Decoder(RecordVerdict)


def _record_key(file_id: str, seq: int) -> bytes:
    return f"{file_id}|{seq:08d}".encode("ascii")


def dup_key(file_id: str, seq: int) -> bytes:
    """The duplicate key of record ``seq`` of file ``file_id`` (DESIGN §5, for imports).

    >>> dup_key("WEB1-20261122-000001", 7)
    b'import|WEB1-20261122-000001|00000007'
    """
    return (DUP_KEY_PREFIX + f"{file_id}|{seq:08d}").encode("ascii")


def rejects_path(source: Path, directory: Path | None = None) -> Path:
    """``<file>.rejects.csv`` beside the file, or in ``directory``.

    >>> rejects_path(Path("/in/web-20261122.ipm"), Path("/out"))
    PosixPath('/out/web-20261122.ipm.rejects.csv')
    """
    return (source.parent if directory is None else directory) / (source.name + REJECTS_SUFFIX)


def imported_files(store: LedgerStore) -> list[ImportedFile]:
    """Every inbound file the store has imported, by file id."""
    dbs = _dbs(store, create=False)
    if dbs is None:
        return []
    with store.read() as led:
        return [_dec_file.decode(raw) for _key, raw in led.txn.cursor(db=dbs.files)]


class _Rejects:
    """The rejects file, written under a temporary name beside its target and renamed at the
    end: created before anything moves, so that a directory it cannot go to stops the import
    first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot write the rejects file {path}: {exc.strerror}"
            ) from None
        self.temp = Path(temp)
        self.file = os.fdopen(fd, "w", newline="", encoding="ascii")
        self.writer = csv.writer(self.file)  # RFC 4180: CRLF line ends, quotes where needed
        self.writer.writerow(REJECTS_COLUMNS)

    def add(self, rec: InboundRecord, rc: str, reason: str) -> None:
        known = rec.currency in CURRENCIES
        self.writer.writerow(
            (
                rec.seq,
                rec.card_masked,
                rec.store_id,
                rec.terminal_id,
                rec.op if rec.op in OPERATIONS else "",
                rec.amount_minor,
                _major(rec.amount_minor, rec.currency) if known else "",
                rec.currency,
                rc,
                reason,
            )
        )

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.temp, REJECTS_MODE)
        os.replace(self.temp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.temp.unlink(missing_ok=True)


def _major(amount_minor: int, currency: str) -> str:
    exp = CURRENCIES[currency][1]
    if exp == 0:
        return str(amount_minor)
    whole, frac = divmod(amount_minor, 10**exp)
    return f"{whole}.{frac:0{exp}d}"


def import_file(
    processor: Processor,
    path: Path,
    *,
    rejects_dir: Path | None = None,
    digest: bool = True,
    batch_max: int = IMPORT_BATCH_RECORDS,
) -> ImportResult:
    """Import the inbound file at ``path`` through ``processor`` (its store, keys and clock).

    Resource handling: the file is memory-mapped for the import and closed after it; the
    rejects file (:func:`rejects_path`) is written atomically at the end, also when every
    record was applied (then it has its header row only), so an old one never misleads.

    Error handling: :class:`ClearingFileError` when the file is refused whole (nothing moved);
    ``OSError`` when it or the rejects directory cannot be used (before anything moved);
    :class:`ImportStopped` when the file changed under the import; ``StoreError`` from the
    store. A record's decline is a row of the rejects file, never an exception.
    """
    assert batch_max >= 1
    store = processor.store
    with InboundFile(path, digest=digest) as inbound:
        header = inbound.header
        rejects = _Rejects(rejects_path(path, rejects_dir))
        try:
            dbs = _dbs(store, create=True)
            assert dbs is not None
            with store.read() as led:
                raw = led.txn.get(header.file_id.encode("ascii"), db=dbs.files)
            known = None if raw is None else _dec_file.decode(raw)
            result = ImportResult(
                file_id=header.file_id,
                sender=header.sender,
                business_day=header.business_day,
                records=inbound.trailer.record_count,
                rejects=rejects.path,
                summary=inbound.summary(),
                reused_id=known is not None and known.sha256 != inbound.sha256,
            )
            batch: list[InboundRecord] = []
            try:
                for rec in inbound.records():
                    batch.append(rec)
                    if len(batch) >= batch_max:
                        _decide(processor, dbs, header.file_id, batch, result, rejects)
                        batch = []
            except ClearingFileError as exc:
                raise ImportStopped(
                    f"the file changed while it was imported ({exc}); the records before it "
                    "are decided and stay so: check the file and import it again"
                ) from None
            if batch:
                _decide(processor, dbs, header.file_id, batch, result, rejects)
            result.changed = not inbound.unchanged()
            if not result.changed:
                assert result.applied + result.rejected == result.records, "a record was lost"
            _remember(store, dbs, inbound.sha256, result, known, processor.clock_ms())
            rejects.commit()
        finally:
            rejects.discard()
    processor.log.info(
        "import",
        file_id=result.file_id,
        sender=result.sender,
        records=result.records,
        applied=result.applied,
        rejected=result.rejected,
        applied_now=result.applied_now,
        rejected_now=result.rejected_now,
        rejects=str(result.rejects),
    )
    return result


def _decide(
    processor: Processor,
    dbs: _Dbs,
    file_id: str,
    batch: list[InboundRecord],
    result: ImportResult,
    rejects: _Rejects,
) -> None:
    """Decide one batch of records: earlier verdicts first, then one processor batch for the
    records never decided, then their verdicts in one write transaction."""
    store, keys = processor.store, processor.keys
    contents = [keys.content_mac(CONTENT_DOMAIN + rec.message) for rec in batch]
    with store.read() as led:
        earlier = [led.txn.get(_record_key(file_id, rec.seq), db=dbs.records) for rec in batch]
    now_ms = processor.clock_ms()
    transmission = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%m%d%H%M%S")
    rows: dict[int, tuple[str, str]] = {}  # batch index -> (rc, reason) of a rejected record
    verdicts: dict[int, RecordVerdict] = {}  # batch index -> a new final verdict
    replayed: set[int] = set()
    pending: list[tuple[int, Pending]] = []
    for i, rec in enumerate(batch):
        raw = earlier[i]
        if raw is not None:
            before = _dec_verdict.decode(raw)
            if not hmac.compare_digest(before.content, contents[i]):
                reason = (
                    f"94 record {rec.seq} of file {file_id} was imported before with other content"
                )
                rows[i] = ("94", reason)
                result.rejected_now += 1
            elif before.rc in APPROVED:
                result.applied_earlier += 1
            else:
                rows[i] = (before.rc, before.reason)
                result.rejected_earlier += 1
            continue
        refused = _refusal(rec)
        if refused is None:
            try:
                request = _request(rec, transmission)
            except FormatError as exc:
                field_no = 12 if exc.field == 13 else exc.field
                refused = "30", f"30 field {field_no:03d}: {exc.reason}"
            else:
                hashes = keys.pan_hashes(rec.pan) if rec.check_digit_ok else []
                pending.append(
                    (
                        i,
                        Pending(
                            time.perf_counter_ns(),
                            MTI,
                            request=request,
                            pan_hashes=hashes,
                            dup_key=dup_key(file_id, rec.seq),
                            content=contents[i],
                        ),
                    )
                )
                continue
        verdicts[i] = RecordVerdict(*refused, contents[i], now_ms)
    if pending:
        outcomes = processor.process_batch([p for _, p in pending])
        for (i, _), outcome in zip(pending, outcomes, strict=True):
            decision = outcome.decision
            reason = _reason(batch[i], decision)
            if decision.rc in NOT_FINAL:
                rows[i] = (decision.rc, reason)
                result.rejected_now += 1
                result.pending += 1
                continue
            verdicts[i] = RecordVerdict(decision.rc, reason, contents[i], now_ms)
            if outcome.replayed:
                replayed.add(i)  # committed by an import that stopped before its verdicts
    if verdicts:
        with store.write() as led:
            for i, verdict in verdicts.items():
                key = _record_key(file_id, batch[i].seq)
                if not led.txn.put(key, _enc.encode(verdict), db=dbs.records, overwrite=False):
                    # Another import of this file decided it meanwhile (the processor's
                    # duplicate record made that the same decision): theirs is the verdict.
                    raw = led.txn.get(key, db=dbs.records)
                    verdicts[i] = _dec_verdict.decode(raw)
                    replayed.add(i)
        for i, verdict in verdicts.items():
            approved = verdict.rc in APPROVED
            if i in replayed:
                result.applied_earlier += approved
                result.rejected_earlier += not approved
            else:
                result.applied_now += approved
                result.rejected_now += not approved
            if not approved:
                rows[i] = (verdict.rc, verdict.reason)
    for i in sorted(rows):
        rc, reason = rows[i]
        result.codes[rc] = result.codes.get(rc, 0) + 1
        rejects.add(batch[i], rc, reason)


def _refusal(rec: InboundRecord) -> tuple[str, str] | None:
    """The import's own rejection of a record, before the engine; None: the engine decides."""
    if rec.problem is not None:
        field_key, what = rec.problem
        return "30", f"30 field {int(field_key):03d}: {what}"
    if rec.reversal:
        return "12", (
            "12 reversal records are not imported: send a refund (or a load) for what is to "
            "go back to the card"
        )
    if rec.op not in INBOUND_OPERATIONS:
        return "12", f"12 operation {rec.op} is not imported ({', '.join(INBOUND_OPERATIONS)})"
    return None


def _request(rec: InboundRecord, transmission: str) -> Request:
    """The record as the request a terminal would send, validated like one.

    Field 7 is the import's own time (see the module's "Time"); fields 12 and 13 the record's
    local time. No field 48: an imported purchase is approved in full or not at all.

    Error handling: :class:`FormatError` naming the dialect's field.
    """
    return parse_request(
        {
            "t": MTI,
            "2": rec.pan,
            "3": PROCESSING_CODES[rec.op],
            "4": f"{rec.amount_minor:012d}",
            "7": transmission,
            "11": rec.stan,
            "12": rec.local_time[4:],
            "13": rec.local_time[:4],
            "37": rec.rrn,
            "41": rec.terminal_id,
            "42": f"{rec.store_id:<15}",
            "49": rec.currency,
        }
    )


def _reason(rec: InboundRecord, decision: Decision) -> str:
    rc = decision.rc
    if rc == "14" and not rec.check_digit_ok:
        return "14 invalid card number (bad check digit)"
    if rc == "30" and decision.field44 is not None:
        return f"30 field {decision.field44[:3]}: {decision.field44[4:]}"
    return f"{rc} {RC_TEXT.get(rc, 'declined')}"


def _remember(
    store: LedgerStore,
    dbs: _Dbs,
    sha256: str,
    result: ImportResult,
    known: ImportedFile | None,
    now_ms: int,
) -> None:
    """Keep the file's record; an import that decided nothing new writes nothing."""
    decided_now = result.applied_now + result.rejected_now - result.pending
    if known is not None and decided_now == 0 and known.sha256 == sha256:
        return
    record = ImportedFile(
        file_id=result.file_id,
        sender=result.sender,
        business_day=result.business_day,
        sha256=sha256,
        records=result.records,
        applied=result.applied,
        rejected=result.rejected - result.pending,
        first_ms=known.first_ms if known is not None else now_ms,
        last_ms=now_ms,
        runs=(known.runs if known is not None else 0) + 1,
    )
    with store.write() as led:
        led.txn.put(result.file_id.encode("ascii"), _enc.encode(record), db=dbs.files)
