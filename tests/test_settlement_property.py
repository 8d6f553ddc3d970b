"""Property: random transaction streams through the engine, cut into business days, give
clearing files that agree with the ledger, and verify catches damage to them.

Each example plays a stream (activations, loads, redeems that may be partly approved, refunds,
reversals of earlier requests, whole or partial by field 95, at two stores, with cut-overs in
between) through the in-process processor on a fresh copy of one provisioned store. It closes
every day, and then checks for each day:

- the clearing records are exactly the day's card-store transfers, in journal order;
- per currency, the file's debit total minus its credit total equals the movement of the
  stores' settlement accounts (closing balances minus the previous day's), and minus the
  movement of the card purses in the day's transfers;
- the net settlement report reconciles, its store and funding-account nets sum to zero per
  currency, and the stores' sum is the clearing file's debits minus credits;
- the trailer says the same, and the files verify;

and, on one day's file, that a changed byte, a dropped record (digest resealed) and a wrong
trailer total (digest resealed) are each refused.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsrv.app import open_keys
from authsrv.logs import configure_logging, get_logger
from authsrv.metrics import Metrics
from authsrv.model import BusinessDay
from authsrv.processor import Processor
from authsrv.store import LedgerStore, check_ledger
from protocol.clearing import CurrencyTotals
from settlement.clearing import ClearingFileError, verify_clearing_file
from settlement.day import DayClock, DayIndex, current_open_day, next_day
from settlement.ledger import clearing_records, write_day_files
from settlement.net import build_net_report
from simulators.terminal import build_request
from tests.helpers import exchange_in_process, provision

CLOCK = DayClock.of("00:00", "UTC")
START_MS = int(datetime(2026, 11, 22, 9, 0, tzinfo=UTC).timestamp() * 1000)
MAP = 64 * 1024 * 1024
CARDS = 4
SITES = (("T0000001", "S0001"), ("T0000003", "S0002"))
PROPERTY = settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("template")
    provisioned = provision(root, card_count=CARDS)
    store = LedgerStore(provisioned.data, map_size_bytes=MAP)
    with store.write() as led:
        led.txn.drop(led.dbs.days, delete=False)
        current_open_day(led, CLOCK, START_MS)
    store.close()
    return provisioned.data, provisioned.cards


# -- the stream -------------------------------------------------------------------------------

amounts = st.integers(1, 60_000)
steps = st.one_of(
    st.tuples(st.just("activate"), st.integers(0, CARDS - 1), st.integers(0, 60_000)),
    st.tuples(st.just("load"), st.integers(0, CARDS - 1), amounts),
    st.tuples(st.just("redeem"), st.integers(0, CARDS - 1), amounts),
    st.tuples(st.just("redeem+partial"), st.integers(0, CARDS - 1), amounts),
    st.tuples(st.just("refund"), st.integers(0, CARDS - 1), amounts),
    st.tuples(st.just("cashout"), st.integers(0, CARDS - 1), st.just(0)),
    # Reverse the n-th approved request so far (modulo), whole (0) or down to a share of it.
    st.tuples(st.just("reverse"), st.integers(0, 50), st.integers(0, 99)),
    st.tuples(st.just("cutover"), st.just(0), st.just(0)),
)


@dataclass
class Run:
    store: LedgerStore
    proc: Processor
    pans: list[str]
    now_ms: int = START_MS
    stan: int = 0
    approved: list[dict[str, str]] = field(default_factory=list)
    answers: int = 0

    def clock(self) -> int:
        return self.now_ms

    def exchange(self, fields: dict[str, str]) -> dict[str, str]:
        self.answers += 1
        return exchange_in_process(self.proc, fields)

    def play(self, op: str, a: int, b: int) -> None:
        self.now_ms += 1000
        terminal, store = SITES[(a + self.stan) % 2]
        if op == "cutover":
            self.now_ms = CLOCK.start_ms(next_day(CLOCK.day_of(self.now_ms))) + 1000
            self.proc.sweep()
            return
        self.stan += 1
        now = datetime.fromtimestamp(self.now_ms / 1000, tz=UTC)
        if op == "reverse":
            if not self.approved:
                return
            original = self.approved[a % len(self.approved)]
            approved = int(original["4"])
            final = approved * b // 100 if b else None
            fields = build_request(
                "reverse",
                terminal=original["41"],
                store=original["42"],
                pan=original["2"],
                amount_minor=approved,
                stan=f"{self.stan:06d}",
                now=now,
                original=original,
                final_minor=final or None,
            )
            self.exchange(fields)
            return
        partial = op == "redeem+partial"
        fields = build_request(
            op.removesuffix("+partial"),
            terminal=terminal,
            store=store,
            pan=self.pans[a],
            amount_minor=b if op != "cashout" else None,
            partial=partial,
            stan=f"{self.stan:06d}",
            now=now,
        )
        answer = self.exchange(fields)
        if answer.get("39") in ("00", "10") and op != "cashout":
            # A reversal names the approved amount (DESIGN §5: field 4 = requested or approved).
            self.approved.append({**fields, "4": answer["4"]})


def _copy(template: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(template, target)
    (target / "lock.mdb").unlink(missing_ok=True)
    return target


def _card_side(debit: str, credit: str) -> bool:
    return debit.startswith("store:") or credit.startswith("store:")


def _check_day(
    led_days: list[BusinessDay], store: LedgerStore, day: BusinessDay, out: Path
) -> Path:
    index = DayIndex(led_days)
    with store.read() as led:
        recs = list(clearing_records(led, index, day))
        transfers = [
            t
            for t in led.journal_range(day.first_seq, day.last_seq)
            if t.card_id and _card_side(t.debit, t.credit)
        ]
    assert [r.record_id for r in recs] == [t.seq for t in transfers]
    previous = index.previous_closed(day.day)
    opening = previous.balances if previous is not None else {}
    by_currency: dict[str, int] = {}
    for r in recs:
        by_currency[r.currency] = by_currency.get(r.currency, 0) + (
            r.amount_minor if r.dc == "D" else -r.amount_minor
        )
    stores: dict[str, int] = {}
    for name, balance in day.balances.items():
        if name.startswith("store:"):
            unit = name.rsplit(":", 1)[1]
            stores[unit] = stores.get(unit, 0) + balance - opening.get(name, 0)
    for name, balance in opening.items():
        if name.startswith("store:") and name not in day.balances:
            unit = name.rsplit(":", 1)[1]
            stores[unit] = stores.get(unit, 0) - balance
    cards: dict[str, int] = {}
    for t in transfers:
        delta = t.amount_minor if t.credit.startswith("card:") else -t.amount_minor
        cards[t.unit] = cards.get(t.unit, 0) + delta
    units = set(by_currency) | {u for u, v in stores.items() if v} | set(cards)
    for unit in units:
        assert by_currency.get(unit, 0) == stores.get(unit, 0) == -cards.get(unit, 0), unit
    # Net positions (DESIGN §4): built (and reconciled by the report itself) from the ledger;
    # per currency the stores' and funding accounts' nets sum to zero, and the stores' sum is
    # the clearing records' debits minus credits.
    with store.read() as led:
        net = build_net_report(led, day.day)
    for unit in units | {s.currency for s in net.stores}:
        store_sum = sum(s.net_minor for s in net.stores if s.currency == unit)
        funding_sum = sum(f.net_minor for f in net.funding if f.currency == unit)
        assert store_sum + funding_sum == 0, unit
        assert store_sum == by_currency.get(unit, 0), unit
    files = write_day_files(store, out, "PROP", day.day)
    report = verify_clearing_file(files.paths.ipm)
    assert report.trailer.record_count == len(recs)
    debits = {t.currency: t for t in report.trailer.totals}
    for unit in units:
        totals: CurrencyTotals | None = debits.get(unit)
        in_file = 0 if totals is None else totals.debit_minor - totals.credit_minor
        assert in_file == by_currency.get(unit, 0)
    return files.paths.ipm


def _frames(data: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        frames.append(data[pos : pos + 4 + size])
        pos += 4 + size
    return frames


def _reseal(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
    )


@PROPERTY
@given(
    opening=st.lists(st.integers(500, 50_000), min_size=CARDS, max_size=CARDS),
    stream=st.lists(steps, min_size=25, max_size=80),
    damage=st.data(),
)
def test_clearing_files_agree_with_the_ledger(
    template: tuple[Path, list[str]],
    tmp_path: Path,
    opening: list[int],
    stream: list[tuple[str, int, int]],
    damage: st.DataObject,
) -> None:
    configure_logging("info", io.StringIO())
    data = _copy(template[0], tmp_path / "data")
    store = LedgerStore(data, map_size_bytes=MAP)
    try:
        run = Run(store, None, template[1])  # type: ignore[arg-type]
        run.proc = Processor(
            store,
            open_keys(store),
            Metrics(),
            get_logger(),
            skew_max_s=600,
            log_requests=False,
            clock_ms=run.clock,
            demo_mode=True,
            day_clock=CLOCK,
        )
        # Most cards are sold first, so that the stream has value to move.
        for card, amount in enumerate(opening[:-1]):
            run.play("activate", card, amount)
        for op, a, b in stream:
            run.play(op, a, b)
        run.play("cutover", 0, 0)
        with store.read() as led:
            days = led.days()
            assert check_ledger(led) == []
            last_seq = led.last_transfer_seq()
        closed = [d for d in days if d.closed]
        assert closed and not days[-1].closed
        # Every transfer is in exactly one closed day.
        covered = [s for d in closed for s in range(d.first_seq, d.last_seq + 1)]
        assert covered == list(range(1, last_seq + 1))
        out = tmp_path / "out"
        if out.exists():
            shutil.rmtree(out)
        files = [_check_day(days, store, d, out) for d in closed]
    finally:
        store.close()
    # Damage one file with records.
    candidates = [p for p in files if len(_frames(p.read_bytes())) > 2]
    if not candidates:
        return
    path = damage.draw(st.sampled_from(candidates))
    original = path.read_bytes()
    frames = _frames(original)
    # A changed byte anywhere: the digest (at least) objects.
    pos = damage.draw(st.integers(0, len(original) - 1))
    changed = bytearray(original)
    changed[pos] = damage.draw(st.integers(0, 255).filter(lambda v: v != original[pos]))
    path.write_bytes(bytes(changed))
    with pytest.raises(ClearingFileError):
        verify_clearing_file(path)
    # A dropped record, the digest made to match: the structure objects.
    drop = damage.draw(st.integers(1, len(frames) - 2))
    _reseal(path, b"".join(frames[:drop] + frames[drop + 1 :]))
    with pytest.raises(ClearingFileError):
        verify_clearing_file(path)
    # A wrong trailer total, the digest made to match.
    trailer = bytearray(frames[-1])
    digit = max(i for i, c in enumerate(trailer) if 0x30 <= c <= 0x39)
    trailer[digit] = 0x30 + (trailer[digit] - 0x30 + 1) % 10
    _reseal(path, b"".join(frames[:-1]) + bytes(trailer))
    with pytest.raises(ClearingFileError):
        verify_clearing_file(path)
    _reseal(path, original)
    assert verify_clearing_file(path).trailer.record_count == len(frames) - 2
