"""Net settlement of a closed business day: who owes whom, derived from the ledger alone.

The rule (DESIGN §4): a store's daily net is the movement of its settlement account
(``store:<id>:<currency>``) during the day, split by the funding account of the product of the
card that moved (:mod:`settlement.accounts`). Positive: the account rose, the store is owed
(it redeemed cards: goods went out against card value); negative: the store owes (it sold
cards: it took the customer's money). A funding account's net is minus the sum of the stores'
nets for its products, so positive means the funding account is owed. Every currency's nets
sum to zero.

Worked example (gift cards, EUR): a card sold at S1 for 500.00 (``store:S1 -> card``) and
redeemed at S2 for 120.00 (``card -> store:S2``): S1's net is -500.00 (S1 owes 500.00 to the
float), S2's is +120.00 (the float owes S2 120.00), the float's is +380.00 (it is owed 380.00
on balance: the value still on the card, which the float now stands behind).

Campaign cards (DESIGN §4, docs/products.md): an issue at S for a 1000.00 purchase at 30 %
(``store:S -> card`` 300.00) makes S owe 300.00 to ``campaign:<chain>``; a redeem at T makes
T owed by it; a void or a back-office clawback (``card -> store:S``) moves S back.

Transfers of the day that involve no store (a host job's, such as an expiry to breakage) are
not settled between stores; they are listed in their own section under the funding account of
the card's product, so that every transfer of the day is shown somewhere.

Reconciliation, to the minor unit; :class:`ReconcileError` names every figure that differs:

(a) every account that is not a card purse (stores, breakage, ...): its movement in the day's
    transfers equals its closing balance at this day's cut-over minus the one at the previous
    day's (``BusinessDay.balances``; the first day opens from zero when it starts at
    transfer 1);
(b) per currency: the day's clearing records (:func:`settlement.ledger.clearing_records`), debit
    total minus credit total, equals the sum of the stores' nets;
(c) per currency: the stores' and the funding accounts' nets sum to zero (the funding nets are
    summed from the card side of each transfer, the stores' from the store side).

Cost: two passes over the day's journal range (the nets, then the clearing records), a read of
each distinct card once, memory per distinct card and per (store, funding, currency).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from authsrv.model import BusinessDay, card_account
from authsrv.store import Ledger, LedgerStore
from settlement.accounts import (
    CARD_PREFIX,
    STORE_PREFIX,
    CardProducts,
    UnknownKindError,
    account_unit,
    funding_account,
    store_of_account,
)
from settlement.day import DayIndex
from settlement.ledger import clearing_records, closed_day
from settlement.output import csv_bytes, currency_label, money, render_table, write_atomic

__all__ = [
    "NET_COLUMNS",
    "FundingNet",
    "NetFile",
    "NetReport",
    "NetTotal",
    "OtherMovement",
    "ReconcileError",
    "StoreNet",
    "build_net_report",
    "net_file_name",
    "opening_balances",
    "write_net_report",
]

NET_COLUMNS = (
    "business_day",
    "section",  # store, funding, total, other
    "store_id",  # store rows
    "chain",  # store rows: the store's chain
    "funding_account",  # store, funding and other rows
    "currency",  # ISO 4217 numeric
    "op",  # other rows: the transfers' operation
    "account",  # other rows: the account that is not a card purse
    "transfers",
    "owed_to_minor",  # store, funding, total rows: owed to the party (0 or more)
    "owed_by_minor",  # store, funding, total rows: owed by the party (0 or more)
    "net_minor",  # owed_to - owed_by; other rows: the account's movement (positive: it rose)
)


class ReconcileError(Exception):
    """A report's figures disagree with the ledger's; each problem names the figures.

    The message is one line: the day (or range) and every problem, ``; ``-separated.
    """

    def __init__(self, where: str, problems: list[str]) -> None:
        assert problems
        self.where = where
        self.problems = problems
        super().__init__(f"{where} does not reconcile: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class StoreNet:
    store_id: str
    chain: str  # "" for a store the ledger does not know (any more)
    funding: str
    currency: str
    transfers: int
    net_minor: int  # positive: owed to the store; negative: owed by it


@dataclass(frozen=True, slots=True)
class FundingNet:
    funding: str
    currency: str
    transfers: int
    net_minor: int  # positive: owed to the funding account; negative: owed by it


@dataclass(frozen=True, slots=True)
class NetTotal:
    currency: str
    transfers: int  # store transfers (the clearing records)
    owed_to_minor: int  # over the store and funding rows
    owed_by_minor: int


@dataclass(frozen=True, slots=True)
class OtherMovement:
    funding: str  # "" when the transfers name no card
    currency: str
    op: str
    account: str  # the account that is not the card's purse ("debit -> credit" without one)
    transfers: int
    amount_minor: int  # the account's movement: positive, it rose


@dataclass(frozen=True, slots=True)
class NetReport:
    day: BusinessDay
    opened_from: str  # the day whose closing balances this one opened with ("": from zero)
    stores: list[StoreNet]
    funding: list[FundingNet]
    totals: list[NetTotal]
    other: list[OtherMovement]
    accounts_reconciled: int  # non-card accounts checked against the closing balances
    clearing_records: int

    def csv_rows(self) -> list[tuple[object, ...]]:
        d = self.day.day
        rows: list[tuple[object, ...]] = []
        for s in self.stores:
            rows.append(
                (
                    *(d, "store", s.store_id, s.chain, s.funding, s.currency, "", ""),
                    *(s.transfers, *_owed(s.net_minor)),
                )
            )
        for f in self.funding:
            rows.append(
                (
                    *(d, "funding", "", "", f.funding, f.currency, "", ""),
                    *(f.transfers, *_owed(f.net_minor)),
                )
            )
        for t in self.totals:
            rows.append(
                (
                    *(d, "total", "", "", "", t.currency, "", "", t.transfers),
                    *(t.owed_to_minor, t.owed_by_minor, t.owed_to_minor - t.owed_by_minor),
                )
            )
        for o in self.other:
            rows.append(
                (
                    *(d, "other", "", "", o.funding, o.currency, o.op, o.account),
                    *(o.transfers, "", "", o.amount_minor),
                )
            )
        return rows

    def csv(self) -> bytes:
        return csv_bytes(NET_COLUMNS, self.csv_rows())

    def text(self) -> str:
        d = self.day
        opened = f"close of {_day_text(self.opened_from)}" if self.opened_from else "zero"
        out = [
            f"net settlement of business day {_day_text(d.day)} "
            f"(transfers {d.first_seq} to {d.last_seq}; opening balances: {opened})",
            "positive: owed to the party; negative: owed by it",
            "",
            "stores",
        ]
        out.append(
            render_table(
                [
                    *("store", "chain", "funding account", "currency", "transfers"),
                    *("owed to store", "owed by store"),
                ],
                [
                    [
                        *(s.store_id, s.chain, s.funding, currency_label(s.currency)),
                        *(str(s.transfers), *_owed_text(s.net_minor, s.currency)),
                    ]
                    for s in self.stores
                ],
                right="llllrrr",
            )
            if self.stores
            else "  (no store moved value)\n"
        )
        out.append("funding accounts (minus the stores' nets for their products)")
        out.append(
            render_table(
                ["funding account", "currency", "transfers", "owed to it", "owed by it"],
                [
                    [
                        *(f.funding, currency_label(f.currency), str(f.transfers)),
                        *_owed_text(f.net_minor, f.currency),
                    ]
                    for f in self.funding
                ],
                right="llrrr",
            )
            if self.funding
            else "  (none)\n"
        )
        out.append("totals (over stores and funding accounts: owed to = owed by)")
        out.append(
            render_table(
                ["currency", "transfers", "owed to", "owed by", "net"],
                [
                    [
                        currency_label(t.currency),
                        str(t.transfers),
                        money(t.owed_to_minor, t.currency),
                        money(t.owed_by_minor, t.currency),
                        money(t.owed_to_minor - t.owed_by_minor, t.currency),
                    ]
                    for t in self.totals
                ],
                right="lrrrr",
            )
            if self.totals
            else "  (none)\n"
        )
        out.append("movements without a store (not settled; under their funding account)")
        out.append(
            render_table(
                ["funding account", "currency", "op", "account", "transfers", "amount"],
                [
                    [
                        o.funding or "(no card)",
                        currency_label(o.currency),
                        o.op,
                        o.account,
                        str(o.transfers),
                        money(o.amount_minor, o.currency),
                    ]
                    for o in self.other
                ],
                right="llllrr",
            )
            if self.other
            else "  (none)\n"
        )
        out.append(
            f"reconciled to the minor unit: (a) {self.accounts_reconciled} non-card accounts "
            "against the closing balances; (b) "
            f"{self.clearing_records} clearing records, debits minus credits per currency; "
            "(c) the nets sum to zero per currency"
        )
        return "\n".join(out) + "\n"


def _owed(net_minor: int) -> tuple[int, int, int]:
    return max(net_minor, 0), max(-net_minor, 0), net_minor


def _owed_text(net_minor: int, currency: str) -> list[str]:
    if net_minor == 0:
        return [money(0, currency), money(0, currency)]
    if net_minor > 0:
        return [money(net_minor, currency), "-"]
    return ["-", money(-net_minor, currency)]


def _day_text(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def net_file_name(day: str) -> str:
    """
    >>> net_file_name("20261122")
    'net-20261122.csv'
    """
    return f"net-{day}.csv"


def opening_balances(index: DayIndex, record: BusinessDay) -> tuple[dict[str, int], str]:
    """The balances ``record`` opened with (the previous closed day's closing balances; zero
    for the first day) and the name of that day ("" for zero).

    Error handling: :class:`ReconcileError` when no day before it says what they were.
    """
    prev = index.previous_closed(record.day)
    if prev is None:
        if record.first_seq != 1:
            raise ReconcileError(
                f"business day {record.day}",
                [
                    f"it starts at transfer {record.first_seq}, but no closed day before it "
                    "holds its opening balances"
                ],
            )
        return {}, ""
    if prev.last_seq != record.first_seq - 1:
        raise ReconcileError(
            f"business day {record.day}",
            [
                f"it starts at transfer {record.first_seq}, but the day before it "
                f"({prev.day}) ends at transfer {prev.last_seq}"
            ],
        )
    return prev.balances, prev.day


def _funding(products: CardProducts, card_id: int, where: str) -> tuple[str, str]:
    card, product = products(card_id)
    try:
        return funding_account(product), product.currency
    except UnknownKindError as exc:
        raise ReconcileError(where, [f"card {card.id}: {exc}"]) from None


def build_net_report(led: Ledger, day: str) -> NetReport:
    """The net settlement of the closed business day ``day``, reconciled.

    Error handling: :class:`~settlement.day.DayError` for a day that does not exist or is
    open; :class:`ReconcileError` when a check fails (nothing is reported then).
    """
    record, index = closed_day(led, day)
    where = f"business day {day}"
    opening, opened_from = opening_balances(index, record)
    products = CardProducts(led)
    stores: dict[tuple[str, str, str], list[int]] = {}  # (account, funding, unit) -> [n, net]
    funding: dict[tuple[str, str], list[int]] = {}  # (funding, unit) -> [n, net]
    other: dict[tuple[str, str, str, str], list[int]] = {}
    moved: dict[str, int] = {}  # non-card account -> movement in the day
    for t in led.journal_range(record.first_seq, record.last_seq):
        amount = t.amount_minor
        if not t.debit.startswith(CARD_PREFIX):
            moved[t.debit] = moved.get(t.debit, 0) - amount
        if not t.credit.startswith(CARD_PREFIX):
            moved[t.credit] = moved.get(t.credit, 0) + amount
        if t.credit.startswith(STORE_PREFIX):
            store_acct, counter, store_delta = t.credit, t.debit, amount
        elif t.debit.startswith(STORE_PREFIX):
            store_acct, counter, store_delta = t.debit, t.credit, -amount
        else:
            _other(products, other, t.seq, t.op, t.debit, t.credit, t.card_id, t.unit, amount)
            continue
        if not t.card_id or counter != card_account(t.card_id):
            raise ReconcileError(
                where,
                [
                    f"transfer {t.seq} ({t.op}) moves {store_acct} against {counter}, which is "
                    "not the purse of its card: the funding rule cannot place it"
                ],
            )
        fund, currency = _funding(products, t.card_id, where)
        assert currency == t.unit, f"transfer {t.seq} is not in its card's currency"
        row = stores.setdefault((store_acct, fund, t.unit), [0, 0])
        row[0] += 1
        row[1] += store_delta
        card_delta = amount if t.credit == counter else -amount
        frow = funding.setdefault((fund, t.unit), [0, 0])
        frow[0] += 1
        frow[1] += card_delta
    problems: list[str] = []
    # (a) every non-card account against the closing balances.
    accounts = sorted(set(opening) | set(record.balances) | set(moved))
    for acct in accounts:
        if acct.startswith(CARD_PREFIX):
            continue
        unit = account_unit(acct)
        before, after = opening.get(acct, 0), record.balances.get(acct, 0)
        if moved.get(acct, 0) != after - before:
            problems.append(
                f"(a) {acct}: the day's transfers moved it {money(moved.get(acct, 0), unit)}, "
                f"its closing balances by {money(after - before, unit)} "
                f"({money(after, unit)} at this close, {money(before, unit)} "
                f"{'at the close of ' + opened_from if opened_from else 'opening from zero'})"
            )
    # (b) the clearing records, per currency.
    store_sum: dict[str, int] = {}
    for (_acct, _fund, unit), (_n, net) in stores.items():
        store_sum[unit] = store_sum.get(unit, 0) + net
    clearing_sum: dict[str, int] = {}
    records = 0
    for rec in clearing_records(led, index, record):
        records += 1
        sign = 1 if rec.dc == "D" else -1
        clearing_sum[rec.currency] = clearing_sum.get(rec.currency, 0) + sign * rec.amount_minor
    for unit in sorted(set(store_sum) | set(clearing_sum)):
        if store_sum.get(unit, 0) != clearing_sum.get(unit, 0):
            problems.append(
                f"(b) {currency_label(unit)}: the clearing records' debits minus credits are "
                f"{money(clearing_sum.get(unit, 0), unit)}, the stores' nets sum to "
                f"{money(store_sum.get(unit, 0), unit)}"
            )
    # (c) stores and funding accounts sum to zero.
    funding_sum: dict[str, int] = {}
    for (_fund, unit), (_n, net) in funding.items():
        funding_sum[unit] = funding_sum.get(unit, 0) + net
    for unit in sorted(set(store_sum) | set(funding_sum)):
        total = store_sum.get(unit, 0) + funding_sum.get(unit, 0)
        if total != 0:
            problems.append(
                f"(c) {currency_label(unit)}: the stores' nets "
                f"({money(store_sum.get(unit, 0), unit)}) "
                f"and the funding accounts' ({money(funding_sum.get(unit, 0), unit)}) "
                f"sum to {money(total, unit)}, not zero"
            )
    if problems:
        raise ReconcileError(where, problems)
    return _report(led, record, opened_from, stores, funding, other, len(accounts), records)


def _other(
    products: CardProducts,
    other: dict[tuple[str, str, str, str], list[int]],
    seq: int,
    op: str,
    debit: str,
    credit: str,
    card_id: int,
    unit: str,
    amount: int,
) -> None:
    """Count a transfer that involves no store under its card's funding account."""
    fund = ""
    account, delta = f"{debit} -> {credit}", amount
    if card_id:
        fund, _currency = _funding(products, card_id, f"transfer {seq}")
        purse = card_account(card_id)
        if debit == purse:
            account, delta = credit, amount
        elif credit == purse:
            account, delta = debit, -amount
    row = other.setdefault((fund, unit, op, account), [0, 0])
    row[0] += 1
    row[1] += delta


def _report(
    led: Ledger,
    record: BusinessDay,
    opened_from: str,
    stores: dict[tuple[str, str, str], list[int]],
    funding: dict[tuple[str, str], list[int]],
    other: dict[tuple[str, str, str, str], list[int]],
    accounts: int,
    records: int,
) -> NetReport:
    store_rows = []
    for (acct, fund, unit), (n, net) in stores.items():
        store_id = store_of_account(acct)
        known = led.store(store_id)
        chain = known.chain if known is not None else ""
        store_rows.append(StoreNet(store_id, chain, fund, unit, n, net))
    store_rows.sort(key=lambda s: (s.currency, s.store_id, s.funding))
    funding_rows = sorted(
        (FundingNet(fund, unit, n, net) for (fund, unit), (n, net) in funding.items()),
        key=lambda f: (f.currency, f.funding),
    )
    totals: dict[str, list[int]] = {}
    for s in store_rows:
        row = totals.setdefault(s.currency, [0, 0, 0])
        row[0] += s.transfers
    for net, unit in [(s.net_minor, s.currency) for s in store_rows] + [
        (f.net_minor, f.currency) for f in funding_rows
    ]:
        row = totals.setdefault(unit, [0, 0, 0])
        row[1] += max(net, 0)
        row[2] += max(-net, 0)
    other_rows = sorted(
        (
            OtherMovement(fund, unit, op, account, n, amount)
            for (fund, unit, op, account), (n, amount) in other.items()
        ),
        key=lambda o: (o.currency, o.funding, o.op, o.account),
    )
    return NetReport(
        day=record,
        opened_from=opened_from,
        stores=store_rows,
        funding=funding_rows,
        totals=[NetTotal(unit, *row) for unit, row in sorted(totals.items())],
        other=other_rows,
        accounts_reconciled=accounts,
        clearing_records=records,
    )


@dataclass(frozen=True, slots=True)
class NetFile:
    report: NetReport
    path: Path


def write_net_report(store: LedgerStore, directory: Path, day: str) -> NetFile:
    """Build the net report of the closed day ``day`` from one read transaction and write it to
    ``directory/net-<day>.csv`` (atomically; the same ledger gives the same bytes).

    Error handling: as :func:`build_net_report` (no file is written then); ``OSError``.
    """
    with store.read() as led:
        report = build_net_report(led, day)
    path = write_atomic(directory / net_file_name(day), report.csv())
    return NetFile(report, path)
