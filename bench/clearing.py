"""``authsrv bench --clearing``: how long a business day's clearing file takes from the ledger.

The bench provisions a bench store (its cards' activations are journal transfers of the open
day), then appends a mixed day of transfers to the journal: redeems, loads, refunds, and
reversals of redeems made earlier that day. It closes the day with a cut-over and times what
the host does after a cut-over: extract the records from the ledger, and write the IPM and CSV
files with their digests. It then times ``settle verify``.

The day's transfers are posted to the ledger directly (double entry, journal and card index, as
the writer posts them), not sent through terminals. At the host's authorization rate, a
million would take several minutes. The file build reads only what the writer stores.

Every figure is printed with the machine's core count. Peak RSS is the bench process's own.
"""

from __future__ import annotations

import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authsrv.app import open_store
from authsrv.model import Posting, card_account, store_account
from authsrv.store import LedgerStore
from bench.provision import CURRENCY, Layout, map_size_mib_for
from settlement.clearing import verify_clearing_file
from settlement.day import DayClock, close_open_day
from settlement.ledger import write_day_files

__all__ = ["ClearingBench", "append_day", "run_clearing_bench"]

TRANSFERS_PER_TXN = 20_000
# The day's mix: redeem 70 %, load 15 %, refund 5 %, reversal of an earlier redeem 10 %.
MIX = (("redeem", 0.70), ("load", 0.15), ("refund", 0.05), ("reversal", 0.10))
AMOUNT_MIN_MINOR = 100
AMOUNT_MAX_MINOR = 500  # a card's 500.00 lasts for 1,000 redeems at most
HOST_ID = "BENCH"


@dataclass(frozen=True, slots=True)
class ClearingBench:
    records: int
    append_s: float
    build_write_s: float
    verify_s: float
    ipm_bytes: int
    csv_bytes: int
    rss_max_mib: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "append_s": round(self.append_s, 2),
            "build_write_s": round(self.build_write_s, 2),
            "verify_s": round(self.verify_s, 2),
            "records_per_s": round(self.records / self.build_write_s) if self.build_write_s else 0,
            "ipm_bytes": self.ipm_bytes,
            "csv_bytes": self.csv_bytes,
            "rss_max_mib": round(self.rss_max_mib, 1),
        }


def append_day(store: LedgerStore, layout: Layout, transfers: int, seed: int) -> float:
    """Post ``transfers`` mixed transfers to the open day; returns the seconds it took."""
    rng = random.Random(f"bench-clearing:{seed}")  # noqa: S311 (a reproducible mix, no secret)
    ops = [op for op, _ in MIX]
    weights = [w for _, w in MIX]
    started = time.perf_counter()
    now_ms = time.time_ns() // 1_000_000
    redeems: list[tuple[int, int, str, int]] = []  # (seq, card id, store, amount)
    stan = 0
    posted = 0
    while posted < transfers:
        with store.write() as led:
            for _ in range(min(TRANSFERS_PER_TXN, transfers - posted)):
                posted += 1
                stan = stan % 999_999 + 1
                op = rng.choices(ops, weights)[0]
                if op == "reversal" and not redeems:
                    op = "redeem"
                original_seq = 0
                if op == "reversal":
                    original_seq, card_id, store_id, amount = redeems.pop(
                        rng.randrange(len(redeems))
                    )
                else:
                    index = rng.randrange(layout.cards)
                    card_id = index + 1  # bench cards are numbered 1.. in provisioning order
                    store_id = layout.store_of_card(rng.randrange(layout.cards))
                    amount = rng.randint(AMOUNT_MIN_MINOR, AMOUNT_MAX_MINOR)
                card = card_account(card_id)
                shop = store_account(store_id, CURRENCY)
                debit_card = op == "redeem"
                credit_card = op in ("load", "refund", "reversal")
                assert debit_card != credit_card
                posting = (
                    Posting(card, shop, amount, CURRENCY)
                    if debit_card
                    else Posting(shop, card, amount, CURRENCY)
                )
                at_ms = now_ms + posted
                terminal = layout.terminal_id(int(store_id[1:]) - 1)
                transfer = led.post(
                    posting,
                    at_ms=at_ms,
                    op=op,
                    card_id=card_id,
                    terminal_id=terminal,
                    store_id=store_id,
                    stan=f"{stan:06d}",
                    rrn=f"B{posted:011d}",
                    approval=f"{posted % 1_000_000:06d}",
                    local_time=time.strftime("%m%d%H%M%S", time.gmtime(at_ms / 1000)),
                    original_seq=original_seq,
                )
                if op == "redeem":
                    redeems.append((transfer.seq, card_id, store_id, amount))
    return time.perf_counter() - started


def run_clearing_bench(
    data: Path, layout: Layout, transactions: int, seed: int, out: Path
) -> ClearingBench:
    """Fill the open day of the provisioned bench store at ``data`` up to ``transactions``
    clearing records, close it, write and verify its files into ``out``."""
    store = open_store(data, map_size_mib_for(layout.cards + transactions))
    try:
        with store.read() as led:
            existing = led.last_transfer_seq()
        append_s = append_day(store, layout, max(transactions - existing, 0), seed)
        clock = DayClock.of("00:00", "UTC")
        with store.write() as led:
            closed, _opened = close_open_day(led, clock, time.time_ns() // 1_000_000, how="manual")
        day = closed[0]
        t0 = time.perf_counter()
        files = write_day_files(store, out, HOST_ID, day.day)
        build_write_s = time.perf_counter() - t0
    finally:
        store.close()
    t0 = time.perf_counter()
    report = verify_clearing_file(files.paths.ipm)
    verify_s = time.perf_counter() - t0
    assert report.trailer.record_count == files.records
    return ClearingBench(
        records=files.records,
        append_s=append_s,
        build_write_s=build_write_s,
        verify_s=verify_s,
        ipm_bytes=files.paths.ipm.stat().st_size,
        csv_bytes=files.paths.csv.stat().st_size,
        rss_max_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
