"""Net settlement, expiry to breakage and the reports (settlement/net.py, expiry.py,
reports.py), on ledgers built by the processor from real request frames.

The processor runs in-process with a clock the test moves (as in test_business_day.py). The
worked example, in EUR, stores S0001 and S0002 of chain ACME:

day 20261122: gift card A sold at S1 for 500.00, redeemed at S2 for 120.00; campaign card C
issued at S1 for 300.00; a declined redeem.
day 20261123: the day-1 redeem reversed late at S2; 50.00 redeemed from A at S1 and partly
reversed (it came to 30.00); gift card B sold at S2 for 100.00; gift card D sold at S1 for
60.00 and the sale reversed; a declined redeem.
"""

from __future__ import annotations

import doctest
import importlib
import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest

from authsrv.admin import add_product, issue_cards
from authsrv.app import open_keys
from authsrv.logs import configure_logging, get_logger
from authsrv.metrics import Metrics
from authsrv.model import BusinessDay, CardState, card_account
from authsrv.processor import Processor
from authsrv.store import LedgerStore, check_ledger
from settlement.day import DayClock, DayError, current_open_day
from settlement.expiry import EXPIRY_OP, expire_all, expire_cards
from settlement.ledger import clearing_records
from settlement.net import NET_COLUMNS, ReconcileError, build_net_report, write_net_report
from settlement.output import write_atomic
from settlement.reports import (
    activity_report,
    breakage_report,
    liability_report,
    summary_report,
)
from tests.helpers import (
    InProcessTerminal,
    ManualClock,
    campaign_product,
    provision,
    read_pans,
)

OSLO = DayClock.of("04:00", "Europe/Oslo")
HOUR_MS = 3_600_000
MAP = 64 * 1024 * 1024
DAY1, DAY2, DAY3 = "20261122", "20261123", "20261124"
S1 = ("T0000001", "S0001")
S2 = ("T0000003", "S0002")
EUR = "978"
DUP_WINDOW_S = 100 * 86_400  # reversals in January of requests made in November
ISSUE = {"3": "920000"}  # a campaign issue (0200 proc 92): field 4 is the purchase


def _ms(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp() * 1000)


Clock = ManualClock


@dataclass
class Host(InProcessTerminal):
    store: LedgerStore
    proc: Processor
    clock: Clock
    root: Path
    data: Path
    gift: list[str]  # gift cards, valid for years
    camp: list[str]  # campaign cards (product CAMP, chain ACME)
    short: list[str]  # gift cards valid through December 2026
    short_camp: list[str]  # a campaign card valid through December 2026
    unsold: list[str]  # gift cards that expired in January 2024, never sold
    stan: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    site: ClassVar[tuple[str, str]] = S1

    def pans(self) -> list[str]:
        return self.gift + self.camp + self.short + self.short_camp + self.unsold

    def ok(
        self,
        op: str,
        pan: str,
        amount: int | None = None,
        at: tuple[str, str] = S1,
        **kw: object,
    ) -> dict[str, str]:
        """Send a request that must be approved; returns the request's fields."""
        answer = self.send(op, pan, amount, at, **kw)
        assert answer["39"] == "00", (op, answer["39"], answer.get("44"))
        return self.requests[-1]

    def open_day(self, day: str) -> None:
        """Move the clock an hour into ``day`` and let the writer cut over."""
        self.clock.now_ms = OSLO.start_ms(day) + HOUR_MS
        self.proc.sweep()

    def day(self, day: str) -> BusinessDay:
        with self.store.read() as led:
            record = led.day(day)
        assert record is not None
        return record


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    configure_logging("info", io.StringIO())
    provisioned = provision(tmp_path, card_count=4)
    store = LedgerStore(provisioned.data, map_size_bytes=MAP)
    keys = open_keys(store)
    issued_ms = _ms(2026, 10, 5)
    # Campaign cards active at once (no online activation), worth 100 % of the purchase.
    add_product(
        store,
        campaign_product(
            share_bp=10_000, min_purchase_minor=1, online_activation=False, expiry_days=365
        ),
    )
    camp = tmp_path / "camp.csv"
    short = tmp_path / "short.csv"
    short_camp = tmp_path / "short-camp.csv"
    issue_cards(store, keys, "CAMP", 2, camp, now_ms=issued_ms)
    issue_cards(store, keys, "GIFT", 6, short, expiry="2612", now_ms=issued_ms)
    issue_cards(store, keys, "CAMP", 1, short_camp, expiry="2612", now_ms=issued_ms)
    clock = Clock(OSLO.start_ms(DAY1) + HOUR_MS)
    # provision opened the first day by the wall clock; the tests run on their own clock.
    with store.write() as led:
        led.txn.drop(led.dbs.days, delete=False)
        current_open_day(led, OSLO, clock.now_ms)
    proc = Processor(
        store,
        keys,
        Metrics(),
        get_logger(),
        skew_max_s=600,
        log_requests=False,
        clock_ms=clock,
        demo_mode=True,
        day_clock=OSLO,
        dup_window_s=DUP_WINDOW_S,
    )
    try:
        yield Host(
            store,
            proc,
            clock,
            tmp_path,
            provisioned.data,
            gift=provisioned.cards,
            camp=read_pans(camp),
            short=read_pans(short),
            short_camp=read_pans(short_camp),
            unsold=provisioned.expired,
        )
    finally:
        store.close()


def worked_example(host: Host) -> None:
    """The two days of the module docstring; leaves day 20261124 open."""
    a, b, d = host.gift[0], host.gift[1], host.gift[3]
    c = host.camp[0]
    host.ok("activate", a, 50_000)
    redeem_at_s2 = host.ok("redeem", a, 12_000, at=S2)
    host.ok("activate", c, 30_000, overrides=ISSUE)
    assert host.send("redeem", c, 99_999, at=S2)["39"] == "51"
    host.open_day(DAY2)
    host.ok("reverse", a, 12_000, at=S2, original=redeem_at_s2)
    redeem = host.ok("redeem", a, 5_000)
    host.ok("reverse", a, 5_000, original=redeem, final_minor=3_000)
    host.ok("activate", b, 10_000, at=S2)
    sale = host.ok("activate", d, 6_000)
    host.ok("reverse", d, 6_000, original=sale)
    assert host.send("redeem", b, 99_999, at=S2)["39"] == "51"
    host.open_day(DAY3)


@pytest.mark.parametrize(
    "name",
    ["settlement.accounts", "settlement.output", "settlement.net", "settlement.reports"],
)
def test_doctests(name: str) -> None:
    runner = doctest.DocTestRunner()
    report: list[str] = []
    tests = doctest.DocTestFinder().find(importlib.import_module(name))
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert sum(len(t.examples) for t in tests) > 0


# -- the net settlement ------------------------------------------------------------------------


def test_net_positions_of_the_worked_example(host: Host) -> None:
    worked_example(host)
    with host.store.read() as led:
        day1 = build_net_report(led, DAY1)
        day2 = build_net_report(led, DAY2)
    # DESIGN §4: S1 sold a gift card for 500.00 and owes it to the float; S2 redeemed 120.00
    # and is owed it by the float; S1 issued a campaign card for 300.00 and owes it to ACME's
    # campaign account.
    assert {(s.store_id, s.chain, s.funding, s.currency): s.net_minor for s in day1.stores} == {
        ("S0001", "ACME", "campaign:ACME", EUR): -30_000,
        ("S0001", "ACME", "float", EUR): -50_000,
        ("S0002", "ACME", "float", EUR): 12_000,
    }
    assert {(f.funding, f.currency): f.net_minor for f in day1.funding} == {
        ("campaign:ACME", EUR): 30_000,
        ("float", EUR): 38_000,
    }
    [total] = day1.totals
    assert (total.currency, total.transfers) == (EUR, 3)
    assert total.owed_to_minor == total.owed_by_minor == 80_000
    assert day1.other == [] and day1.opened_from == ""
    # Day 2: a late reversal, a partial reversal, a sale and a reversed sale.
    assert {(s.store_id, s.funding): (s.transfers, s.net_minor) for s in day2.stores} == {
        ("S0001", "float"): (4, 5_000 - 2_000 - 6_000 + 6_000),
        ("S0002", "float"): (2, -12_000 - 10_000),
    }
    assert [(f.funding, f.net_minor) for f in day2.funding] == [("float", 19_000)]
    assert day2.opened_from == DAY1
    for report in (day1, day2):
        by_unit: dict[str, int] = {}
        for s in report.stores:
            by_unit[s.currency] = by_unit.get(s.currency, 0) + s.net_minor
        for f in report.funding:
            by_unit[f.currency] = by_unit.get(f.currency, 0) + f.net_minor
        assert by_unit == {EUR: 0}
    text = day1.text()
    assert "S0001" in text and "500.00 EUR" in text and "380.00 EUR" in text
    assert "reconciled to the minor unit" in text


def test_net_csv_is_deterministic_and_holds_no_card_number(host: Host) -> None:
    worked_example(host)
    out = host.root / "settlement"
    first = write_net_report(host.store, out, DAY1)
    data = first.path.read_bytes()
    host.ok("redeem", host.gift[0], 100)  # more traffic in the open day changes nothing
    again = write_net_report(host.store, out, DAY1)
    assert again.path == out / "net-20261122.csv" and again.path.read_bytes() == data
    lines = data.decode().split("\r\n")
    assert lines[0] == ",".join(NET_COLUMNS)
    assert lines[1:] == [
        "20261122,store,S0001,ACME,campaign:ACME,978,,,1,0,30000,-30000",
        "20261122,store,S0001,ACME,float,978,,,1,0,50000,-50000",
        "20261122,store,S0002,ACME,float,978,,,1,12000,0,12000",
        "20261122,funding,,,campaign:ACME,978,,,1,30000,0,30000",
        "20261122,funding,,,float,978,,,2,38000,0,38000",
        "20261122,total,,,,978,,,3,80000,80000,0",
        "",
    ]
    write_net_report(host.store, out, DAY2)
    _no_card_numbers(host, out)


def _no_card_numbers(host: Host, directory: Path) -> None:
    files = list(directory.iterdir())
    assert files
    for path in files:
        data = path.read_bytes()
        for pan in host.pans():
            assert pan.encode() not in data, path
            assert pan[-10:].encode() not in data, path


def _tampered_copy(host: Host, day: str, account: str, delta: int) -> LedgerStore:
    copy = host.root / "copy"
    host.store.backup(copy)
    tampered = LedgerStore(copy, map_size_bytes=MAP)
    with tampered.write() as led:
        record = led.day(day)
        assert record is not None
        balances = dict(record.balances)
        balances[account] = balances.get(account, 0) + delta
        led.put_day(msgspec.structs.replace(record, balances=balances))
    return tampered


def test_net_fails_loudly_when_closing_balances_were_altered(host: Host) -> None:
    worked_example(host)
    tampered = _tampered_copy(host, DAY1, "store:S0001:978", 1)
    try:
        with tampered.read() as led:
            with pytest.raises(ReconcileError) as day1:
                build_net_report(led, DAY1)
            with pytest.raises(ReconcileError) as day2:
                build_net_report(led, DAY2)
    finally:
        tampered.close()
    text = str(day1.value)
    assert text.startswith("business day 20261122 does not reconcile: (a) store:S0001:978")
    assert "moved it -800.00 EUR" in text and "closing balances by -799.99 EUR" in text
    assert "\n" not in text and len(day1.value.problems) == 1
    # The next day opened with the altered balance: it fails the other way.
    assert "moved it 30.00 EUR" in str(day2.value)
    assert "closing balances by 29.99 EUR" in str(day2.value)


def test_net_fails_loudly_when_the_clearing_records_disagree(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    worked_example(host)
    real = clearing_records

    def without_the_first(*args: object, **kw: object) -> Iterator[object]:
        records = real(*args, **kw)  # type: ignore[arg-type]
        next(records)
        yield from records

    monkeypatch.setattr("settlement.net.clearing_records", without_the_first)
    with host.store.read() as led, pytest.raises(ReconcileError) as failed:
        build_net_report(led, DAY1)
    assert (
        "(b) EUR: the clearing records' debits minus credits are -180.00 EUR, the stores' nets "
        "sum to -680.00 EUR" in str(failed.value)
    )


def test_net_of_an_open_or_unknown_day_is_refused(host: Host) -> None:
    with host.store.read() as led:
        with pytest.raises(DayError, match="still open"):
            build_net_report(led, DAY1)
        with pytest.raises(DayError, match="no business day 19990101"):
            build_net_report(led, "19990101")


# -- expiry to breakage ------------------------------------------------------------------------


def _card(host: Host, pan: str) -> tuple[int, CardState, int]:
    """(card id, state, purse balance) of the card with this number, found by its keyed hash
    (its first six and last four digits are not unique: the test's cards share a prefix)."""
    with host.store.read() as led:
        card = led.card_by_hashes(host.proc.keys.pan_hashes(pan))
        assert card is not None, "no such card"
        return card.id, card.state, led.balance(card_account(card.id))


def _set_state(host: Host, pan: str, state: CardState) -> None:
    card_id, _, _ = _card(host, pan)
    with host.store.write() as led:
        card = led.card(card_id)
        assert card is not None
        led.put_card(msgspec.structs.replace(card, state=state))


def test_expiry_moves_value_to_breakage_exactly_once(host: Host) -> None:
    e0, e1, e2, e3, e4, e5 = host.short
    [ec] = host.short_camp
    host.ok("activate", e0, 10_000)
    redeem = host.ok("redeem", e0, 3_000)  # 70.00 left
    host.ok("activate", e1, 2_000)
    host.ok("redeem", e1, 2_000)  # nothing left
    host.ok("activate", e2, 1_000)
    host.ok("advice", e2, 1_500)  # an advice takes it to -5.00
    host.ok("activate", e3, 4_000)
    host.ok("preauth", e3, 1_000)  # a hold
    host.ok("activate", e4, 2_500)
    _set_state(host, e4, CardState.BLOCKED)
    host.ok("activate", e5, 500)
    _set_state(host, e5, CardState.LOST)
    host.ok("activate", ec, 5_000, overrides=ISSUE)
    host.ok("activate", host.gift[0], 9_000)  # valid for years: never swept
    # The last millisecond of December 2026 (UTC): every card is still valid.
    host.clock.now_ms = _ms(2027, 1, 1) - 1
    before = expire_all(host.store, host.clock.now_ms, batch_max=3)
    assert (before.expired, before.transfers, before.unsold) == (0, 0, 2)
    # The first millisecond of 2027: a pass in steps of three cards.
    host.clock.now_ms = _ms(2027, 1, 1)
    preview = expire_all(host.store, host.clock.now_ms, batch_max=3, dry_run=True)
    res = expire_all(host.store, host.clock.now_ms, batch_max=3)
    assert preview == res
    assert res.moved == {"breakage:issuer:978": 7_000 + 2_500, "breakage:ACME:978": 5_000}
    assert (res.expired, res.transfers) == (4, 3)  # e0, e1 (state only), e4 (blocked), ec
    assert (res.negative, res.held, res.lost_or_stolen, res.unsold) == (1, 1, 1, 2)
    # 4 gift, 2 unsold, 2 campaign, 6 short and 1 short campaign card: 5 full steps and an
    # empty one that finds the end.
    assert res.examined == 15 and res.steps == 6
    assert [_card(host, p)[1:] for p in (e0, e1, e2, e3, e4, e5, ec)] == [
        (CardState.EXPIRED, 0),
        (CardState.EXPIRED, 0),
        (CardState.ACTIVE, -500),
        (CardState.ACTIVE, 4_000),
        (CardState.EXPIRED, 0),
        (CardState.LOST, 500),
        (CardState.EXPIRED, 0),
    ]
    with host.store.read() as led:
        assert check_ledger(led) == []
        expires = [t for t in led.journal() if t.op == EXPIRY_OP]
        assert led.balance("breakage:issuer:978") == 9_500
        assert led.balance("breakage:ACME:978") == 5_000
    assert all(
        (t.store_id, t.terminal_id, t.stan, t.rrn) == ("", "", "", "") and t.card_id
        for t in expires
    )
    assert [t.debit for t in expires] == [card_account(_card(host, e0)[0])] + [
        card_account(_card(host, p)[0]) for p in (e4, ec)
    ]
    # A second run moves nothing.
    again = expire_all(host.store, host.clock.now_ms, batch_max=3)
    assert (again.expired, again.transfers, again.moved) == (0, 0, {})
    # The hold sweep (and the cut-over) runs; then the held card goes.
    host.proc.sweep()
    after_hold = expire_all(host.store, host.clock.now_ms)
    assert after_hold.moved == {"breakage:issuer:978": 4_000} and after_hold.expired == 1
    # A late reversal puts value back on an expired card: the next run takes it, state kept.
    host.ok("reverse", e0, 3_000, original=redeem)
    assert _card(host, e0)[1:] == (CardState.EXPIRED, 3_000)
    late = expire_all(host.store, host.clock.now_ms)
    assert (late.expired, late.transfers, late.moved) == (0, 1, {"breakage:issuer:978": 3_000})
    assert expire_all(host.store, host.clock.now_ms).transfers == 0
    # An expired card is declined.
    assert host.send("redeem", e0, 100)["39"] == "54"
    with host.store.read() as led:
        assert check_ledger(led) == []


def test_host_expiry_steps_resume_where_they_stopped(host: Host) -> None:
    for pan in host.short:
        host.ok("activate", pan, 1_000)
    host.clock.now_ms = _ms(2027, 1, 1)
    steps = [expire_cards(host.store, host.clock.now_ms, batch_max=4) for _ in range(5)]
    # 4 + 2 gift + 2 campaign + 6 short + 1 short campaign + 2 unsold cards, 4 at a time.
    assert [(s.examined, s.wrapped) for s in steps] == [
        (4, False),
        (4, False),
        (4, False),
        (3, True),
        (4, False),
    ]
    assert [s.transfers for s in steps] == [0, 0, 4, 2, 0]


def test_expiry_shows_in_the_net_report_and_the_breakage_report(host: Host) -> None:
    e0 = host.short[0]
    [ec] = host.short_camp
    host.ok("activate", e0, 10_000)
    host.ok("activate", ec, 5_000, overrides=ISSUE)
    host.ok("redeem", e0, 2_000, at=S2)
    host.open_day("20270101")  # closes 20261122 and the empty days up to 20261231
    expire_all(host.store, host.clock.now_ms)
    host.open_day("20270102")
    with host.store.read() as led:
        report = build_net_report(led, "20270101")
        breakage = breakage_report(led)
        january = breakage_report(led, "20270101", "20270101")
    assert report.stores == [] and report.funding == []
    assert [(o.funding, o.op, o.account, o.transfers, o.amount_minor) for o in report.other] == [
        ("campaign:ACME", "expire", "breakage:ACME:978", 1, 5_000),
        ("float", "expire", "breakage:issuer:978", 1, 8_000),
    ]
    assert "movements without a store" in report.text()
    assert (
        breakage.rows
        == january.rows
        == [
            ("2027-01", "CAMP", "campaign", "ACME", "breakage:ACME:978", EUR, 1, 5_000),
            ("2027-01", "GIFT", "gift", "ACME", "breakage:issuer:978", EUR, 1, 8_000),
        ]
    )
    assert breakage.file_name == "breakage-20261122-20270101.csv"
    assert "130.00 EUR" in breakage.text  # the total


# -- the reports -------------------------------------------------------------------------------


def _gift_purses(host: Host) -> int:
    with host.store.read() as led:
        products = {p.id: p for p in led.products()}
        return sum(
            led.balance(card_account(c.id))
            for c in led.cards()
            if products[c.product].kind == "gift"
        )


def test_liability_totals_equal_the_gift_card_balances(host: Host) -> None:
    worked_example(host)
    with host.store.read() as led:
        report = liability_report(led)
        month = datetime.fromtimestamp(next(led.cards()).issued_ms / 1000, tz=UTC).strftime("%Y-%m")
    a_left = 50_000 - 12_000 + 12_000 - 3_000
    assert report.rows == [
        ("S0001", "ACME", month, "GIFT", EUR, 1, a_left),
        ("S0002", "ACME", month, "GIFT", EUR, 1, 10_000),
    ]
    assert sum(int(str(r[6])) for r in report.rows) == _gift_purses(host) == a_left + 10_000
    assert "570.00 EUR" in report.text  # the total
    # A card sold before cards kept their store of sale: its activation says where.
    a_id = _card(host, host.gift[0])[0]
    with host.store.write() as led:
        card = led.card(a_id)
        assert card is not None
        led.put_card(msgspec.structs.replace(card, sold_store=""))
    with host.store.read() as led:
        assert liability_report(led).rows == report.rows


def test_liability_fails_loudly_when_a_purse_has_no_card(host: Host) -> None:
    worked_example(host)
    with host.store.write() as led:
        card_id = _card(host, host.gift[1])[0]  # B, 100.00
        led.txn.delete(card_id.to_bytes(8, "big"), db=led.dbs.cards)
    with host.store.read() as led, pytest.raises(ReconcileError) as failed:
        liability_report(led)
    assert (
        "EUR: the cards' purse balances sum to 770.00 EUR, the purse accounts to 870.00 EUR"
        in str(failed.value)
    )


def test_activity_per_store_and_day(host: Host) -> None:
    worked_example(host)
    with host.store.read() as led:
        report = activity_report(led)
        one_day = activity_report(led, DAY2, DAY2)
    #  day, store, chain, currency, loads, loaded, load revs, load reversed, uses, used,
    #  use revs, use reversed, net
    assert report.rows == [
        (DAY1, "S0001", "ACME", EUR, 2, 80_000, 0, 0, 0, 0, 0, 0, -80_000),
        (DAY1, "S0002", "ACME", EUR, 0, 0, 0, 0, 1, 12_000, 0, 0, 12_000),
        (DAY2, "S0001", "ACME", EUR, 1, 6_000, 1, 6_000, 1, 5_000, 1, 2_000, 3_000),
        (DAY2, "S0002", "ACME", EUR, 1, 10_000, 0, 0, 0, 0, 1, 12_000, -22_000),
    ]
    assert one_day.rows == report.rows[2:]
    assert one_day.file_name == "activity-20261123-20261123.csv"
    # The activity's nets are the net report's store nets.
    with host.store.read() as led:
        for day in (DAY1, DAY2):
            nets: dict[str, int] = {}
            for s in build_net_report(led, day).stores:
                nets[s.store_id] = nets.get(s.store_id, 0) + s.net_minor
            assert nets == {str(r[1]): r[12] for r in report.rows if r[0] == day}


def test_summary_per_day(host: Host) -> None:
    worked_example(host)
    host.ok("redeem", host.gift[0], 1_000)
    host.ok("redeem", host.gift[0], 1_001)
    host.ok("redeem", host.gift[1], 1_000, at=S2)
    host.open_day("20261125")
    with host.store.read() as led:
        report = summary_report(led)
    # day, currency, sold, sales reversed, loads, loaded, uses, cards used, used, average,
    # load reversals, load reversed, use reversals, use reversed
    assert report.rows == [
        (DAY1, EUR, 2, 0, 2, 80_000, 1, 1, 12_000, 12_000, 0, 0, 0, 0),
        (DAY2, EUR, 2, 1, 2, 16_000, 1, 1, 5_000, 5_000, 1, 6_000, 2, 14_000),
        (DAY3, EUR, 0, 0, 0, 0, 3, 2, 3_001, 1_000, 0, 0, 0, 0),  # 3001 / 3 = 1000.33
    ]
    assert "cards activated online: not reported yet" in report.text


def test_report_day_ranges(host: Host) -> None:
    with host.store.read() as led, pytest.raises(DayError, match="no business day has closed"):
        summary_report(led)
    worked_example(host)
    with host.store.read() as led:
        with pytest.raises(DayError, match="still open"):
            activity_report(led, DAY1, DAY3)
        with pytest.raises(DayError, match="after --to"):
            activity_report(led, DAY2, DAY1)
        assert [r[0] for r in summary_report(led, DAY2).rows] == [DAY2]


def test_report_files_are_deterministic_and_hold_no_card_number(host: Host) -> None:
    worked_example(host)
    out = host.root / "reports"
    for build in (liability_report, breakage_report, activity_report, summary_report):
        with host.store.read() as led:
            first = build(led)
        path = write_atomic(out / first.file_name, first.csv())
        data = path.read_bytes()
        with host.store.read() as led:
            again = build(led)
        write_atomic(out / again.file_name, again.csv())
        assert path.read_bytes() == data and data.startswith(",".join(first.columns).encode())
    assert sorted(p.name for p in out.iterdir()) == [
        "activity-20261122-20261123.csv",
        "breakage-20261122-20261123.csv",
        f"liability-at-{host.day(DAY2).last_seq}.csv",
        "summary-20261122-20261123.csv",
    ]
    _no_card_numbers(host, out)


# -- the command line --------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authsrv", "settle", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    return result.stderr


def test_settle_cli_net_expire_report(host: Host) -> None:
    worked_example(host)
    data, out, cwd = str(host.data), host.root / "out", host.root
    net = _cli("net", DAY1, "--data", data, "--out", str(out), cwd=cwd)
    assert net.returncode == 0, net.stderr
    assert "S0001" in net.stdout and "500.00 EUR" in net.stdout
    assert f"wrote {out / 'net-20261122.csv'}" in net.stdout
    as_csv = _cli("net", DAY1, "--csv", "--data", data, "--out", str(out), cwd=cwd)
    assert as_csv.stdout.encode() == (out / "net-20261122.csv").read_bytes().replace(b"\r", b"")
    for day, code, expected in [
        ("2026-11-22", 2, "is not a business day YYYYMMDD"),
        ("19990101", 2, "no business day 19990101 in the store (days 20261122 to 20261124)"),
        (DAY3, 2, "business day 20261124 is still open"),
    ]:
        bad = _cli("net", day, "--data", data, "--out", str(out), cwd=cwd)
        assert bad.returncode == code and expected in _one_line(bad), bad.stderr
        assert bad.stderr.startswith("authsrv settle net: error: ")
    summary = _cli("report", "summary", "--data", data, "--csv", "-", cwd=cwd)
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.startswith("business_day,currency,cards_sold,")
    activity = _cli(
        "report", "activity", "--from", DAY2, "--data", data, "--out", str(out), cwd=cwd
    )
    assert activity.returncode == 0 and (out / "activity-20261123-20261123.csv").exists()
    liability = _cli("report", "liability", "--from", DAY1, "--data", data, cwd=cwd)
    assert liability.returncode == 2 and "--from/--to do not apply" in _one_line(liability)
    open_day = _cli("report", "activity", "--to", DAY3, "--data", data, cwd=cwd)
    assert open_day.returncode == 2 and "still open" in _one_line(open_day)
    expire = _cli("expire", "--dry-run", "--data", data, cwd=cwd)
    assert expire.returncode == 0, expire.stderr
    assert "would expire 0 cards" in expire.stdout and "past expiry never sold" in expire.stdout
    _no_card_numbers(host, out)
    # A tampered copy: exit 1, one line with the differing figures, no file.
    tampered = _tampered_copy(host, DAY1, "store:S0002:978", -5)
    tampered.close()
    failed = _cli("net", DAY1, "--data", str(host.root / "copy"), "--out", str(out / "t"), cwd=cwd)
    assert failed.returncode == 1
    line = _one_line(failed)
    assert line.startswith("authsrv settle net: FAILED: business day 20261122 does not reconcile")
    assert "store:S0002:978: the day's transfers moved it 120.00 EUR" in line
    assert "closing balances by 119.95 EUR" in line
    assert not (out / "t").exists()
