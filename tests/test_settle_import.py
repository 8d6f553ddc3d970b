"""Batch import of offline transactions (``authsrv settle import``, settlement/imports.py).

A provisioned store gets a web shop (store WEB01, terminal W0000001); inbound files are made
with ``build_inbound_file`` and imported through a real Processor with a clock the test holds
(and, at the end, through the command line, also while a host is serving). Every record is
decided exactly once; a file that is broken is refused whole; no full card number of the test
reaches the store, the logs, the rejects file or the command's output.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from authsrv.admin import add_store, add_terminal
from authsrv.app import open_keys
from authsrv.logs import configure_logging, get_logger
from authsrv.metrics import Metrics
from authsrv.model import Store, Terminal, card_account, store_account
from authsrv.processor import Outcome, Pending, Processor
from authsrv.store import LedgerStore, check_ledger
from protocol import clearing as layout
from protocol.cards import luhn_check_digit, mask_pan
from protocol.clearing import decode_totals, encode_totals
from protocol.messages import encode_message
from settlement.clearing import (
    ClearingFileError,
    ClearingOriginal,
    ClearingRecord,
    InboundFile,
    InboundItem,
    build_clearing_file,
    build_inbound_file,
    read_clearing_file,
    verify_clearing_file,
    write_digest_file,
)
from settlement.day import DayClock, close_open_day, current_open_day
from settlement.imports import ImportResult, import_file, imported_files, rejects_path
from settlement.ledger import clearing_records, closed_day
from simulators.terminal import build_request
from tests.helpers import CHAIN, RawClient, provision, running_host, scan_for

NOW = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
DAYS = DayClock.of("00:00", "UTC")
MAP_SIZE_BYTES = 64 * 1024 * 1024
WEB_STORE = "WEB01"
WEB_TERMINAL = "W0000001"
SENDER = "WEBSHOP1"
FILE_DAY = "20261121"
FILE_ID = f"{SENDER}-{FILE_DAY}-000001"
# Two days before the host's clock: far outside the terminal skew window (10 minutes).
LOCAL = "1120183000"


def _unknown_pan(taken: list[str]) -> str:
    """A Luhn-valid number in the product's range that was never issued."""
    for n in range(10**6):
        body = f"603628999{n:09d}"
        pan = body + luhn_check_digit(body)
        if pan not in taken:
            return pan
    raise AssertionError("no free card number")


def _bad_check_digit(pan: str) -> str:
    return pan[:-1] + str((int(pan[-1]) + 1) % 10)


@dataclass
class Shop:
    root: Path
    data: Path
    store: LedgerStore
    proc: Processor
    pans: list[str]  # issued cards (not active)
    unknown: str  # Luhn-valid, never issued
    bad_luhn: str  # a card number with a wrong check digit
    log: io.StringIO

    def all_pans(self) -> list[str]:
        return [*self.pans, self.unknown, self.bad_luhn]

    def write(self, items: list[InboundItem], name: str = "web.ipm", seq: int = 1) -> Path:
        path = self.root / name
        path.write_bytes(inbound(items, seq=seq))
        write_digest_file(path)
        return path

    def run(self, path: Path, **kw: object) -> ImportResult:
        return import_file(self.proc, path, **kw)  # type: ignore[arg-type]

    def balance(self, pan: str) -> int:
        with self.store.read() as led:
            card = led.card_by_hashes(self.proc.keys.pan_hashes(pan))
            assert card is not None
            return led.balance(card_account(card.id))

    def snapshot(self) -> dict[bytes, dict[bytes, bytes]]:
        """Every key and value of every database of the store (through the open store)."""
        env = self.store.env
        snap: dict[bytes, dict[bytes, bytes]] = {}
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor()]
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                snap[name] = dict(txn.cursor(db=db))
        return snap


def inbound(items: list[InboundItem], *, seq: int = 1) -> bytes:
    return build_inbound_file(
        sender=SENDER,
        business_day=FILE_DAY,
        file_seq=seq,
        created="20261121230000",
        items=items,
    )


def item(pan: str, op: str, amount: int, n: int, **kw: object) -> InboundItem:
    values: dict[str, object] = dict(
        pan=pan,
        op=op,
        amount_minor=amount,
        currency="978",
        store_id=WEB_STORE,
        terminal_id=WEB_TERMINAL,
        local_time=LOCAL,
        stan=f"{n:06d}",
        rrn=f"WEBORDER{n:04d}",
    )
    values.update(kw)
    return InboundItem(**values)  # type: ignore[arg-type]


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    log = io.StringIO()
    configure_logging("info", log)
    provisioned = provision(tmp_path, card_count=4)
    store = LedgerStore(provisioned.data, map_size_bytes=MAP_SIZE_BYTES)
    add_store(store, Store(id=WEB_STORE, name="Web shop", chain=CHAIN))
    add_terminal(store, Terminal(id=WEB_TERMINAL, store_id=WEB_STORE))
    # init opened the first day by the wall clock; the test runs on its own.
    with store.write() as led:
        led.txn.drop(led.dbs.days, delete=False)
        current_open_day(led, DAYS, NOW_MS)
    proc = Processor(
        store,
        open_keys(store),
        Metrics(),
        get_logger(),
        skew_max_s=600,
        log_requests=True,
        clock_ms=lambda: NOW_MS,
    )
    pans = provisioned.all_pans()
    try:
        yield Shop(
            tmp_path,
            provisioned.data,
            store,
            proc,
            provisioned.cards,
            _unknown_pan(pans),
            _bad_check_digit(provisioned.cards[2]),
            log,
        )
    finally:
        store.close()


def day_items(shop: Shop) -> list[InboundItem]:
    """A web shop's day: five good records and nine that the host rejects, one per reason."""
    c0, c1, c2, c3 = shop.pans
    return [
        item(c0, "activate", 10_000, 1),
        item(c1, "activate", 5_000, 2),
        item(c0, "load", 2_000, 3),
        item(c0, "redeem", 3_000, 4, local_time="1121093000"),
        item(c1, "refund", 500, 5),
        item(c1, "redeem", 99_900, 6),  # 51
        item(shop.unknown, "redeem", 100, 7),  # 14 unknown
        item(shop.bad_luhn, "redeem", 100, 8),  # 14 check digit
        item(c0, "load", 1_000, 9, store_id="NOSUCH"),  # 03
        item(c2, "activate", 60_000, 10),  # 61: over the product's load maximum
        item(
            c0,
            "redeem",
            3_000,
            11,
            original=ClearingOriginal(
                rrn="WEBORDER0004", stan="000004", business_day=FILE_DAY, record_id=4
            ),
        ),  # a reversal record: 12
        item(c0, "cashout", 0, 12),  # not an inbound operation: 12
        item(c0, "redeem", 100, 13, terminal_id="T0000001"),  # a terminal of S0001: 03
        item(c3, "load", 1_000, 14),  # not activated: 78
    ]


EXPECTED_REJECTS = [
    ("6", "51", "51 insufficient funds"),
    ("7", "14", "14 unknown card"),
    ("8", "14", "14 invalid card number (bad check digit)"),
    ("9", "03", "03 unknown store or terminal, or the terminal is not in that store"),
    ("10", "61", "61 exceeds the product's amount limit"),
    (
        "11",
        "12",
        "12 reversal records are not imported: send a refund (or a load) for what is to go "
        "back to the card",
    ),
    ("12", "12", "12 operation cashout is not imported (activate, load, redeem, refund)"),
    ("13", "03", "03 unknown store or terminal, or the terminal is not in that store"),
    ("14", "78", "78 card not activated"),
]


def read_rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_import_applies_each_record_once_and_rejects_the_rest(shop: Shop) -> None:
    path = shop.write(day_items(shop))
    result = shop.run(path)
    assert (result.applied_now, result.rejected_now, result.records) == (5, 9, 14)
    assert result.applied + result.rejected == result.records
    assert result.lines()[1:] == [
        "imported now: 5 applied, 9 rejected",
        "14 records = 5 applied + 9 rejected (2 x 03, 2 x 12, 2 x 14, 1 x 51, 1 x 61, 1 x 78)"
        f"; rejects: {path}.rejects.csv",
    ]
    c0, c1, c2, c3 = shop.pans
    assert shop.balance(c0) == 10_000 + 2_000 - 3_000
    assert shop.balance(c1) == 5_000 + 500
    assert shop.balance(c2) == 0 and shop.balance(c3) == 0
    with shop.store.read() as led:
        assert check_ledger(led) == []
        assert (
            led.balance(store_account(WEB_STORE, "978")) == -(10_000 + 5_000 + 2_000 + 500) + 3_000
        )
    # The rejects file: every record not applied, with its reason; masked card numbers.
    rows = read_rejects(rejects_path(path))
    assert [(r["seq"], r["rc"], r["reason"]) for r in rows] == EXPECTED_REJECTS
    first = rows[0]
    assert first == {
        "seq": "6",
        "card": mask_pan(c1),
        "store_id": WEB_STORE,
        "terminal_id": WEB_TERMINAL,
        "op": "redeem",
        "amount_minor": "99900",
        "amount": "999.00",
        "currency": "978",
        "rc": "51",
        "reason": "51 insufficient funds",
    }
    assert rows[1]["card"] == mask_pan(shop.unknown) and rows[2]["card"] == mask_pan(shop.bad_luhn)
    assert rejects_path(path).stat().st_mode & 0o777 == 0o644
    # The file is remembered.
    (known,) = imported_files(shop.store)
    assert (known.file_id, known.records, known.applied, known.rejected) == (FILE_ID, 14, 5, 9)
    # No full card number in the store, the rejects file or the logs.
    assert scan_for([shop.data, rejects_path(path)], shop.all_pans()) == []
    logged = shop.log.getvalue()
    assert '"event":"import"' in logged
    assert not [pan for pan in shop.all_pans() if pan in logged]


def test_applied_records_are_the_web_shops_in_the_days_clearing_file(shop: Shop) -> None:
    items = day_items(shop)
    shop.run(shop.write(items))
    with shop.store.write() as led:
        closed, _ = close_open_day(led, DAYS, NOW_MS, how="manual")
    with shop.store.read() as led:
        day, index = closed_day(led, closed[-1].day)
        records = list(clearing_records(led, index, day))
    assert [(r.op, r.dc, r.amount_minor) for r in records] == [
        ("activate", "C", 10_000),
        ("activate", "C", 5_000),
        ("load", "C", 2_000),
        ("redeem", "D", 3_000),
        ("refund", "C", 500),
    ]
    for rec, src in zip(records, items, strict=False):
        assert (rec.store_id, rec.terminal_id) == (WEB_STORE, WEB_TERMINAL)
        # The record's own local time, STAN and RRN: not the import's time.
        assert (rec.local_time, rec.stan, rec.rrn) == (src.local_time, src.stan, src.rrn)
        assert rec.card_masked == mask_pan(src.pan)
        assert rec.approval and rec.committed_utc == "20261122110000"
    data = build_clearing_file(
        business_day=day.day, file_seq=1, host_id="H1", created="20261123000000", records=records
    )
    assert read_clearing_file(data).records == tuple(records)
    assert scan_for([shop.data], shop.all_pans()) == []


def test_second_import_of_the_same_file_moves_nothing(shop: Shop) -> None:
    path = shop.write(day_items(shop))
    shop.run(path)
    rejects_before = rejects_path(path).read_bytes()
    before = shop.snapshot()
    again = shop.run(path)
    assert shop.snapshot() == before  # not one byte of the store: no write transaction at all
    assert (again.applied_now, again.rejected_now) == (0, 0)
    assert (again.applied_earlier, again.rejected_earlier) == (5, 9)
    assert (
        again.lines()[1] == "already imported: 5 applied earlier, 9 rejected earlier, nothing moved"
    )
    assert rejects_path(path).read_bytes() == rejects_before
    # The same bytes under another name are the same file (the file id says so).
    copy = shop.root / "copy.ipm"
    copy.write_bytes(path.read_bytes())
    assert shop.run(copy, digest=False).applied_earlier == 5
    assert shop.snapshot() == before


def test_crash_between_commit_and_verdicts_is_a_replay(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch committed whose verdicts were lost (a crash in between): the next import finds
    the processor's duplicate records, replays them and moves nothing twice."""
    path = shop.write(day_items(shop)[:5])
    real_batch = shop.proc.process_batch

    def crash(*_args: object) -> object:
        raise RuntimeError("crash")

    def batch_then_crash(batch: list[Pending]) -> list[Outcome]:
        outcomes = real_batch(batch)
        monkeypatch.setattr(shop.store, "write", crash)  # the verdicts' transaction
        return outcomes

    monkeypatch.setattr(shop.proc, "process_batch", batch_then_crash)
    with pytest.raises(RuntimeError, match="crash"):
        shop.run(path)
    monkeypatch.undo()
    assert shop.balance(shop.pans[0]) == 9_000  # the batch committed
    assert imported_files(shop.store) == []
    result = shop.run(path)
    assert (result.applied_now, result.applied_earlier) == (0, 5)
    assert shop.balance(shop.pans[0]) == 9_000
    with shop.store.read() as led:
        assert check_ledger(led) == []
    assert shop.run(path).lines()[1].startswith("already imported: 5 applied earlier")


def test_other_content_under_a_used_file_id_is_rejected_94(shop: Shop) -> None:
    items = day_items(shop)[:5]
    shop.run(shop.write(items))
    c0 = shop.pans[0]
    changed = [*items[:3], replace(items[3], amount_minor=1), items[4], item(c0, "redeem", 700, 6)]
    path = shop.write(changed, name="again.ipm")
    result = shop.run(path)
    assert result.reused_id
    assert (result.applied_earlier, result.applied_now, result.rejected_now) == (4, 1, 1)
    assert "records that differ from what was imported then are rejected (94)" in result.lines()[1]
    rows = read_rejects(rejects_path(path))
    assert [(r["seq"], r["rc"], r["reason"]) for r in rows] == [
        ("4", "94", f"94 record 4 of file {FILE_ID} was imported before with other content")
    ]
    assert shop.balance(c0) == 10_000 + 2_000 - 3_000 - 700


def _frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


def _join(messages: list[bytes]) -> bytes:
    return b"".join(len(m).to_bytes(4, "big") + m for m in messages)


def _changed_byte(data: bytes) -> tuple[bytes, bool]:
    """One letter of an RRN: still well-formed, and outside the totals; only the digest sees
    it."""
    msgs = _frames(data)
    assert msgs[1].count(b"WEBORDER0001") == 1
    msgs[1] = msgs[1].replace(b"WEBORDER0001", b"WEBORDEX0001")
    return _join(msgs), False  # the digest file is the original's


def _changed_amount(data: bytes) -> tuple[bytes, bool]:
    msgs = _frames(data)
    decoded = layout.decode(msgs[1])
    decoded["4"] = f"{int(decoded['4']) + 1:012d}"
    msgs[1] = layout.encode(decoded)
    return _join(msgs), True


def _dropped_record(data: bytes) -> tuple[bytes, bool]:
    msgs = _frames(data)
    return _join(msgs[:2] + msgs[3:]), True


def _wrong_total(data: bytes) -> tuple[bytes, bool]:
    msgs = _frames(data)
    trailer = layout.decode(msgs[-1])
    (eur,) = decode_totals(trailer["127"])
    trailer["127"] = encode_totals([msgspec.structs.replace(eur, credit_minor=1)])
    msgs[-1] = layout.encode(trailer)
    return _join(msgs), True


def _truncated(data: bytes) -> tuple[bytes, bool]:
    return data[:-10], True


def _outbound_file(data: bytes) -> tuple[bytes, bool]:
    rec = ClearingRecord(
        record_id=1,
        op="redeem",
        dc="D",
        amount_minor=100,
        currency="978",
        card_masked="603628******0003",
        store_id=WEB_STORE,
        terminal_id=WEB_TERMINAL,
        approval="",
        rrn="WEBORDER0001",
        stan="000001",
        local_time=LOCAL,
        committed_utc="20261121230000",
        business_day=FILE_DAY,
    )
    return build_clearing_file(
        business_day=FILE_DAY, file_seq=1, host_id=SENDER, created="20261121230000", records=[rec]
    ), True


@pytest.mark.parametrize(
    ("break_it", "digest", "expected"),
    [
        (_changed_byte, True, "SHA-256 mismatch"),
        (
            _changed_amount,
            False,
            "978 credit total is 175.00 EUR in the trailer, the records sum to 175.01 EUR",
        ),
        (_dropped_record, True, "record 2 (message 3 at byte"),
        (_wrong_total, True, "978 credit total is 0.01 EUR in the trailer, the records sum to"),
        (_truncated, True, "truncated"),
        (_outbound_file, True, "a masked card number: an outbound clearing file is not imported"),
    ],
)
def test_a_broken_file_is_refused_whole(
    shop: Shop,
    break_it: object,
    digest: bool,
    expected: str,
) -> None:
    good = shop.write(day_items(shop)[:5])
    data, reseal = break_it(good.read_bytes())  # type: ignore[operator]
    good.write_bytes(data)
    if reseal:
        write_digest_file(good)
    before = shop.snapshot()
    with pytest.raises(ClearingFileError) as info:
        shop.run(good, digest=digest)
    assert expected in str(info.value)
    assert shop.snapshot() == before
    assert not rejects_path(good).exists()
    assert not [pan for pan in shop.all_pans() if pan in str(info.value)]


def test_a_malformed_record_is_rejected_and_the_rest_imported(shop: Shop) -> None:
    """A field whose content breaks the layout rejects its record (30 naming it), not the
    file: its STAN, here, is letters."""
    items = day_items(shop)[:5]
    path = shop.write(items)
    msgs = _frames(path.read_bytes())
    doc = layout.decode(msgs[3])  # record 3: the load
    doc["11"] = "ABCDEF"
    msgs[3] = layout.encode(doc)
    path.write_bytes(_join(msgs))
    write_digest_file(path)
    result = shop.run(path)
    assert (result.applied_now, result.rejected_now) == (4, 1)
    rows = read_rejects(rejects_path(path))
    assert [(r["seq"], r["reason"]) for r in rows] == [
        ("3", "30 field 011: the STAN must be 6 digits")
    ]
    assert shop.balance(shop.pans[0]) == 10_000 - 3_000


def test_offline_times_pass_the_skew_check_and_the_terminal_path_keeps_it(shop: Shop) -> None:
    """Records days old are applied (field 7 of their requests is the import's time); a
    terminal's request whose field 7 is as old is still declined 12."""
    result = shop.run(shop.write([item(shop.pans[0], "activate", 10_000, 1)]))
    assert result.applied_now == 1
    old = datetime(2026, 11, 20, 18, 30, tzinfo=UTC)
    fields = build_request(
        "load",
        terminal=WEB_TERMINAL,
        store=WEB_STORE,
        pan=shop.pans[0],
        amount_minor=500,
        stan="000777",
        now=old,
    )
    shop.proc.demo_mode = True  # the test terminal has no security profile
    pending = shop.proc.prepare(encode_message(fields))
    assert pending.needs_writer
    (outcome,) = shop.proc.process_batch([pending])
    assert outcome.decision.rc == "12"


def test_outbound_reader_and_writer_refuse_full_card_numbers(shop: Shop) -> None:
    path = shop.write(day_items(shop)[:2])
    with pytest.raises(ClearingFileError, match="not a masked card number"):
        verify_clearing_file(path)
    with pytest.raises(ClearingFileError, match="not a masked card number"):
        read_clearing_file(path.read_bytes())
    with InboundFile(path) as inbound:
        records = list(inbound.records())
    assert [r.card_masked for r in records] == [mask_pan(p) for p in shop.pans[:2]]
    assert shop.pans[0] not in repr(records[0])


@pytest.mark.parametrize(
    ("change", "field", "what"),
    [
        ({"pan": "603628******0003"}, "field 2", "not a card number"),
        ({"stan": "12345"}, "field 11", "STAN"),
        ({"local_time": "1340120000"}, "field 12", "local time"),
        ({"op": "bonus"}, "field 122", "not an operation"),
        ({"amount_minor": -1}, "field 4", "minor units"),
        ({"store_id": "S" * 16}, "field 42", "store id"),
    ],
)
def test_builder_refuses_what_the_layout_cannot_hold(
    shop: Shop, change: dict[str, object], field: str, what: str
) -> None:
    bad = replace(item(shop.pans[0], "redeem", 100, 1), **change)  # type: ignore[arg-type]
    with pytest.raises(ClearingFileError) as info:
        inbound([item(shop.pans[1], "load", 100, 1), bad])
    text = str(info.value)
    assert text.startswith(f"item 2, {field}") and what in text
    assert shop.pans[0] not in text


# -- the command line --------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authsrv", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def _cli_shop(tmp_path: Path) -> tuple[Path, list[str]]:
    provisioned = provision(tmp_path, card_count=3)
    store = LedgerStore(provisioned.data, map_size_bytes=MAP_SIZE_BYTES)
    try:
        add_store(store, Store(id=WEB_STORE, name="Web shop", chain=CHAIN))
        add_terminal(store, Terminal(id=WEB_TERMINAL, store_id=WEB_STORE))
    finally:
        store.close()
    return provisioned.data, provisioned.all_pans()


def test_cli_import_exit_codes_and_lines(tmp_path: Path) -> None:
    data, pans = _cli_shop(tmp_path)
    good = tmp_path / "good.ipm"
    good.write_bytes(
        inbound([item(pans[0], "activate", 10_000, 1), item(pans[0], "redeem", 500, 2)])
    )
    write_digest_file(good)
    mixed = tmp_path / "mixed.ipm"
    mixed.write_bytes(
        inbound([item(pans[1], "activate", 2_000, 1), item(pans[1], "redeem", 9_000, 2)], seq=2)
    )
    write_digest_file(mixed)
    outputs: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = _cli("settle", *args, cwd=tmp_path)
        outputs.append(done.stdout + done.stderr)
        return done

    check = run("import", "--check", str(good))
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("OK: 2 records, totals EUR debit 1 5.00 credit 1 100.00; file ")
    first = run("import", "--data", str(data), str(good))
    assert first.returncode == 0, first.stderr
    assert (
        first.stdout.splitlines()[-1]
        == f"2 records = 2 applied + 0 rejected; rejects: {good}.rejects.csv"
    )
    again = run("import", "--data", str(data), str(good))
    assert again.returncode == 0
    assert "already imported: 2 applied earlier, 0 rejected earlier, nothing moved" in again.stdout
    out = tmp_path / "rejects"
    out.mkdir()
    some = run("import", "--data", str(data), "--out", str(out), str(mixed))
    assert some.returncode == 1
    assert "imported now: 1 applied, 1 rejected" in some.stdout
    rows = read_rejects(out / "mixed.ipm.rejects.csv")
    assert [(r["seq"], r["reason"]) for r in rows] == [("2", "51 insufficient funds")]
    listed = run("imports", "--data", str(data))
    assert listed.returncode == 0
    assert (
        f"{SENDER}-{FILE_DAY}-000001" in listed.stdout
        and f"{SENDER}-{FILE_DAY}-000002" in listed.stdout
    )
    # Refused whole: one line on stderr, exit 1, nothing moved.
    broken = tmp_path / "broken.ipm"
    broken.write_bytes(good.read_bytes()[:-3])
    refused = run("import", "--data", str(data), "--no-digest", str(broken))
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"authsrv settle import: REFUSED: {broken}: ")
    assert refused.stderr.endswith("; nothing moved\n")
    unsealed = tmp_path / "unsealed.ipm"
    unsealed.write_bytes(good.read_bytes())
    no_digest = run("import", "--data", str(data), str(unsealed))
    assert no_digest.returncode == 1
    assert "digest file unsealed.ipm.sha256: missing" in no_digest.stderr
    missing = run("import", "--data", str(data), str(tmp_path / "nope.ipm"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    usage = run("import", "--data", str(data))
    assert usage.returncode == 2
    check_cli = _cli("check", "--data", str(data), cwd=tmp_path)
    assert check_cli.returncode == 0, check_cli.stdout
    for text in outputs:
        assert not [pan for pan in pans if pan in text]
    assert scan_for([data, tmp_path / "rejects"], pans) == []


def test_cli_help_ends_with_examples(tmp_path: Path) -> None:
    for action in ("import", "imports"):
        done = _cli("settle", action, "--help", cwd=tmp_path)
        assert done.returncode == 0
        tail = done.stdout.rstrip("\n").split("\n")
        examples = tail[tail.index("examples:") + 1 :]
        assert examples and all(line.startswith("  authsrv settle ") for line in examples)


def test_import_while_the_host_serves(tmp_path: Path) -> None:
    """The import takes the LMDB write lock batch by batch beside a serving host: both are
    applied, the ledger balances, and the host answers throughout."""
    data, pans = _cli_shop(tmp_path)
    path = tmp_path / "web.ipm"
    path.write_bytes(
        inbound([item(pans[0], "activate", 10_000, n=1), item(pans[0], "redeem", 1_000, 2)])
    )
    write_digest_file(path)
    log = tmp_path / "host.log"
    with running_host(data, log) as host, RawClient(host.port) as client:
        sold = client.exchange(
            build_request(
                "activate",
                terminal="T0000001",
                store="S0001",
                pan=pans[1],
                amount_minor=5_000,
                stan="000001",
            )
        )
        assert sold["39"] == "00"
        done = _cli("settle", "import", "--data", str(data), str(path), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        used = client.exchange(
            build_request(
                "redeem",
                terminal="T0000001",
                store="S0001",
                pan=pans[0],
                amount_minor=2_000,
                stan="000002",
            )
        )
        assert used["39"] == "00"
        again = _cli("settle", "import", "--data", str(data), str(path), cwd=tmp_path)
        assert "nothing moved" in again.stdout
    check = _cli("check", "--data", str(data), cwd=tmp_path)
    assert check.returncode == 0, check.stdout
    store = LedgerStore(data, map_size_bytes=MAP_SIZE_BYTES, readonly=True)
    try:
        keys = open_keys(store)
        with store.read() as led:
            card = led.card_by_hashes(keys.pan_hashes(pans[0]))
            assert card is not None
            assert led.balance(card_account(card.id)) == 10_000 - 1_000 - 2_000
    finally:
        store.close()
    assert scan_for([data, log], pans) == []


def test_doctests() -> None:
    import doctest
    import importlib

    runner = doctest.DocTestRunner()
    report: list[str] = []
    for name in ("settlement.imports", "settlement.clearing"):
        for test in doctest.DocTestFinder().find(importlib.import_module(name)):
            runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert runner.tries >= 5


def test_rejects_directory_is_checked_before_anything_moves(shop: Shop) -> None:
    path = shop.write([item(shop.pans[0], "activate", 10_000, 1)])
    before = shop.snapshot()
    with pytest.raises(OSError, match="cannot write the rejects file"):
        shop.run(path, rejects_dir=shop.root / "missing")
    assert shop.snapshot() == before


def test_a_record_in_another_currency_than_the_cards_is_rejected_12(shop: Shop) -> None:
    path = shop.write(
        [
            item(shop.pans[0], "activate", 10_000, 1),
            item(shop.pans[0], "redeem", 100, 2, currency="752"),
        ]
    )
    result = shop.run(path)
    assert (result.applied_now, result.rejected_now) == (1, 1)
    (row,) = read_rejects(rejects_path(path))
    assert (row["seq"], row["currency"], row["amount"], row["reason"]) == (
        "2",
        "752",
        "1.00",
        "12 invalid transaction (not in the currency of the card's product)",
    )
    assert "SEK debit 1 1.00" in result.summary
