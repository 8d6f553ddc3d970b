"""Reports from the ledger: liability, breakage, activity per store and day, a summary per day.

Each report is a :class:`Report`: CSV rows under a header (integers of minor units; no total
rows, so a column's sum is its total; no card numbers at all) and a readable table with totals
per currency. The reports over business days take a range of *closed* days (``--from`` and
``--to``, default every closed day), so they agree with the clearing files and the net
settlement, and a report of the same range is the same bytes whenever it is made. They stream
each day's journal range once and read each card once
(:class:`settlement.accounts.CardProducts`); the liability report reads every card and every
account once.

Operations (the ``op`` of a transfer that moves a store's account):

- *loads* put value on a card: ``activate``, ``load``, ``refund``, ``issue`` (a campaign card's
  value, from the issuing store);
- *uses* take value off it: ``redeem``, ``cashout``, ``completion``, ``advice``;
- *reversals* are shown apart, never netted into the above: a reversal that takes value off
  the card gives back a load, one that puts value back gives back a use (its direction says
  which, so no lookup is needed). A reversal counts in the day it committed (a late one, in a
  later day than its original) and at the store of the reversing terminal. A ``clawback`` (the
  back office takes unspent campaign value back to the issuing store) counts as a load
  reversal of the issuing store.

A transfer that moves a store's account with any other operation stops the report with a
:class:`~settlement.net.ReconcileError` naming it: a new operation needs its place here first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from authsrv.model import PURSE_MONEY, BusinessDay, Transfer, card_account
from authsrv.store import Ledger
from settlement.accounts import (
    BREAKAGE_PREFIX,
    CARD_PREFIX,
    KIND_GIFT,
    STORE_PREFIX,
    CardProducts,
    account_unit,
    store_of_account,
)
from settlement.day import DayError, DayIndex
from settlement.expiry import EXPIRY_OP
from settlement.ledger import closed_day
from settlement.net import ReconcileError, opening_balances
from settlement.output import csv_bytes, currency_label, money, render_table

__all__ = [
    "ACTIVITY_COLUMNS",
    "BREAKAGE_COLUMNS",
    "LIABILITY_COLUMNS",
    "LOAD_OPS",
    "REPORTS",
    "SUMMARY_COLUMNS",
    "USE_OPS",
    "Report",
    "activity_report",
    "average_minor",
    "breakage_report",
    "day_range",
    "liability_report",
    "summary_report",
]

LOAD_OPS = frozenset({"activate", "load", "refund", "issue"})
USE_OPS = frozenset({"redeem", "cashout", "completion", "advice"})
REVERSAL_OP = "reversal"
CLAWBACK_OP = "clawback"  # unspent campaign value back to the issuing store: a load reversal
ACTIVATE_OP = "activate"
# Sales of a card: a gift card's activation with its value, a campaign card's issue.
SALE_OPS = frozenset({ACTIVATE_OP, "issue"})
REPORTS = ("liability", "breakage", "activity", "summary")
# A card sold before cards kept their store of sale: its activation is its first transfer; look
# at no more than this many.
FIRST_TRANSFERS_MAX = 8
UNKNOWN_STORE = "(unknown)"


@dataclass(frozen=True, slots=True)
class Report:
    name: str  # liability, breakage, activity, summary
    file_name: str  # the CSV's default name in the settlement directory
    columns: tuple[str, ...]
    rows: list[tuple[object, ...]]
    text: str  # the readable table, with totals

    def csv(self) -> bytes:
        return csv_bytes(self.columns, self.rows)


def _section(rows: Sequence[Sequence[str]], table: str, empty: str) -> str:
    return table if rows else f"  ({empty})\n"


# --- business days ---------------------------------------------------------------------------


def day_range(
    led: Ledger, first: str | None, last: str | None
) -> tuple[list[BusinessDay], DayIndex]:
    """The closed days from ``first`` to ``last`` (both included; default: the first and the
    last closed day), oldest first, and the index of all days.

    Error handling: :class:`~settlement.day.DayError` when a named day does not exist or is
    open, when ``first`` is after ``last``, or when no day has closed yet.
    """
    for name in (first, last):
        if name is not None:
            closed_day(led, name)
    index = DayIndex(led.days())
    closed = [d for d in index.days if d.closed]
    if not closed:
        raise DayError("no business day has closed yet (the reports cover closed days)")
    lo = first or closed[0].day
    hi = last or closed[-1].day
    if lo > hi:
        raise DayError(f"--from {lo} is after --to {hi}")
    return [d for d in closed if lo <= d.day <= hi], index


def _journal(led: Ledger, days: Sequence[BusinessDay]) -> Iterator[tuple[BusinessDay, Transfer]]:
    for d in days:
        for t in led.journal_range(d.first_seq, d.last_seq):
            yield d, t


def _openings(
    index: DayIndex, days: Sequence[BusinessDay]
) -> Iterator[tuple[BusinessDay, dict[str, int]]]:
    """Each day with the balances it opened with (the days are contiguous closed days)."""
    if not days:
        return
    opening, _ = opening_balances(index, days[0])
    for d in days:
        yield d, opening
        opening = d.balances


def _range_text(days: Sequence[BusinessDay]) -> str:
    return f"business days {days[0].day} to {days[-1].day} ({len(days)} closed)"


def _range_file(name: str, days: Sequence[BusinessDay]) -> str:
    return f"{name}-{days[0].day}-{days[-1].day}.csv"


def _store_side(t: Transfer, where: str) -> tuple[str, int] | None:
    """The store account a transfer moves and by how much (None: no store); the other side
    must be the card's purse."""
    if t.credit.startswith(STORE_PREFIX):
        acct, counter, delta = t.credit, t.debit, t.amount_minor
    elif t.debit.startswith(STORE_PREFIX):
        acct, counter, delta = t.debit, t.credit, -t.amount_minor
    else:
        return None
    if not t.card_id or counter != card_account(t.card_id):
        raise ReconcileError(
            where, [f"transfer {t.seq} ({t.op}) moves {acct} against {counter}, not a card purse"]
        )
    return acct, delta


LOAD, LOAD_REVERSAL, USE, USE_REVERSAL = "load", "load_reversal", "use", "use_reversal"


def _kind(t: Transfer, store_delta: int, where: str) -> str:
    if t.op == REVERSAL_OP:
        return LOAD_REVERSAL if store_delta > 0 else USE_REVERSAL
    if t.op == CLAWBACK_OP and store_delta > 0:
        return LOAD_REVERSAL
    if t.op in LOAD_OPS and store_delta < 0:
        return LOAD
    if t.op in USE_OPS and store_delta > 0:
        return USE
    raise ReconcileError(
        where,
        [
            f"transfer {t.seq}: operation {t.op!r} moves value "
            f"{'off' if store_delta > 0 else 'onto'} a card at a store, which the reports do "
            f"not place (loads: {', '.join(sorted(LOAD_OPS))}; "
            f"uses: {', '.join(sorted(USE_OPS))})"
        ],
    )


@dataclass(slots=True)
class _Flows:
    """Counts and amounts of one store (or day) in one currency."""

    loads: int = 0
    loaded_minor: int = 0
    load_reversals: int = 0
    load_reversed_minor: int = 0
    uses: int = 0
    used_minor: int = 0
    use_reversals: int = 0
    use_reversed_minor: int = 0

    def add(self, kind: str, amount_minor: int) -> None:
        if kind == LOAD:
            self.loads += 1
            self.loaded_minor += amount_minor
        elif kind == LOAD_REVERSAL:
            self.load_reversals += 1
            self.load_reversed_minor += amount_minor
        elif kind == USE:
            self.uses += 1
            self.used_minor += amount_minor
        else:
            assert kind == USE_REVERSAL, kind
            self.use_reversals += 1
            self.use_reversed_minor += amount_minor

    def merge(self, other: _Flows) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def net_minor(self) -> int:
        """The movement of the store's account: positive, the store is owed."""
        return (
            self.used_minor - self.use_reversed_minor - self.loaded_minor + self.load_reversed_minor
        )

    def values(self) -> tuple[int, ...]:
        return (
            self.loads,
            self.loaded_minor,
            self.load_reversals,
            self.load_reversed_minor,
            self.uses,
            self.used_minor,
            self.use_reversals,
            self.use_reversed_minor,
        )


# --- (a) liability ---------------------------------------------------------------------------

LIABILITY_COLUMNS = (
    "store_of_sale",  # the store that activated the card; (unknown) when no record says
    "chain",  # the store's chain
    "issue_month",  # YYYY-MM (UTC) when the card was issued (produced)
    "product",
    "currency",
    "cards",  # cards with a balance other than zero
    "balance_minor",  # their purse balances: what is owed to card holders
)


def liability_report(led: Ledger) -> Report:
    """Outstanding gift-card liability now: gift cards' purse balances by store of sale and
    month of issue, as of the last committed transfer.

    Reconciled per currency (:class:`~settlement.net.ReconcileError` otherwise): the cards'
    purse balances (every card record, gift or not) equal the money purse accounts, and those
    equal minus every other account (the ledger sums to zero); so the gift rows hold every gift
    card's value and nothing else.
    """
    last_seq = led.last_transfer_seq()
    groups: dict[tuple[str, str, str, str], list[int]] = {}  # store, month, product, unit
    by_cards: dict[str, int] = {}  # every card's money purse, per currency, via the cards
    for card in led.cards():
        balance = led.balance(card_account(card.id))
        if balance == 0:
            continue
        product = led.product(card.product)
        assert product is not None, f"card {card.id} has a missing product {card.product}"
        by_cards[product.currency] = by_cards.get(product.currency, 0) + balance
        if product.kind != KIND_GIFT:
            continue
        sold = card.sold_store or _first_activation_store(led, card.id)
        month = datetime.fromtimestamp(card.issued_ms / 1000, tz=UTC).strftime("%Y-%m")
        row = groups.setdefault((sold, month, product.id, product.currency), [0, 0])
        row[0] += 1
        row[1] += balance
    purses: dict[str, int] = {}  # every money purse, via the accounts
    others: dict[str, int] = {}  # every other account
    purse_suffix = f":{PURSE_MONEY}"
    for key, acct in led.accounts():
        if not key.startswith(CARD_PREFIX):
            others[acct.unit] = others.get(acct.unit, 0) + acct.balance_minor
        elif key.endswith(purse_suffix):
            purses[acct.unit] = purses.get(acct.unit, 0) + acct.balance_minor
    problems = []
    for unit in sorted(set(by_cards) | set(purses)):
        cards_sum, purses_sum = by_cards.get(unit, 0), purses.get(unit, 0)
        if cards_sum != purses_sum:
            problems.append(
                f"{currency_label(unit)}: the cards' purse balances sum to "
                f"{money(cards_sum, unit)}, the purse accounts to {money(purses_sum, unit)}"
            )
        if purses_sum != -others.get(unit, 0):
            problems.append(
                f"{currency_label(unit)}: the purse accounts sum to {money(purses_sum, unit)}, "
                f"the other accounts to {money(others.get(unit, 0), unit)} (not the opposite)"
            )
    if problems:
        raise ReconcileError(f"the liability after transfer {last_seq}", problems)
    chains = {s.id: s.chain for s in led.stores()}
    rows: list[tuple[object, ...]] = []
    text_rows: list[list[str]] = []
    totals: dict[str, list[int]] = {}
    for (store, month, product_id, unit), (n, amount) in sorted(groups.items()):
        chain = chains.get(store, "")
        rows.append((store, chain, month, product_id, unit, n, amount))
        text_rows.append(
            [store, chain, month, product_id, currency_label(unit), str(n), money(amount, unit)]
        )
        total = totals.setdefault(unit, [0, 0])
        total[0] += n
        total[1] += amount
    total_rows = [[currency_label(u), str(n), money(a, u)] for u, (n, a) in sorted(totals.items())]
    text = [
        f"outstanding gift-card liability after transfer {last_seq} "
        "(purse balances by store of sale and month of issue)",
        _section(
            text_rows,
            render_table(
                ["store of sale", "chain", "issued", "product", "currency", "cards", "balance"],
                text_rows,
                right="lllllrr",
            ),
            "no gift card holds value",
        ),
        "totals per currency (reconciled with the purse accounts and the other accounts)",
        _section(
            total_rows, render_table(["currency", "cards", "liability"], total_rows, "lrr"), "none"
        ),
    ]
    return Report(
        "liability", f"liability-at-{last_seq}.csv", LIABILITY_COLUMNS, rows, "\n".join(text)
    )


def _first_activation_store(led: Ledger, card_id: int) -> str:
    """The store of a card sold before cards kept their store of sale: its activation's."""
    for t in led.card_first_transfers(card_id, FIRST_TRANSFERS_MAX):
        if t.op == ACTIVATE_OP and t.store_id:
            return t.store_id
    return UNKNOWN_STORE


# --- (b) breakage ----------------------------------------------------------------------------

BREAKAGE_COLUMNS = (
    "month",  # YYYY-MM of the business day the value expired in
    "product",
    "kind",
    "chain",
    "breakage_account",
    "currency",
    "cards",  # expire transfers (one per card and sweep)
    "amount_minor",
)


def breakage_report(led: Ledger, first: str | None = None, last: str | None = None) -> Report:
    """Value expired (moved to breakage) by month and product, from the ``expire`` transfers.

    Reconciled: every breakage account moved, from the opening of the first day to the close
    of the last, by exactly the expire transfers into it.
    """
    days, index = day_range(led, first, last)
    products = CardProducts(led)
    groups: dict[tuple[str, str, str], list[int]] = {}  # (month, product, account) -> [n, amt]
    into: dict[str, int] = {}
    for d, t in _journal(led, days):
        if t.op != EXPIRY_OP:
            continue
        _card, product = products(t.card_id)
        row = groups.setdefault((f"{d.day[:4]}-{d.day[4:6]}", product.id, t.credit), [0, 0])
        row[0] += 1
        row[1] += t.amount_minor
        into[t.credit] = into.get(t.credit, 0) + t.amount_minor
    opening, _ = opening_balances(index, days[0])
    closing = days[-1].balances
    problems = []
    for acct in sorted({*opening, *closing, *into}):
        if not acct.startswith(BREAKAGE_PREFIX):
            continue
        moved = closing.get(acct, 0) - opening.get(acct, 0)
        if moved != into.get(acct, 0):
            unit = account_unit(acct)
            problems.append(
                f"{acct}: the expire transfers put {money(into.get(acct, 0), unit)} into it, "
                f"its balances moved {money(moved, unit)}"
            )
    if problems:
        raise ReconcileError(f"the breakage of {_range_text(days)}", problems)
    rows: list[tuple[object, ...]] = []
    text_rows: list[list[str]] = []
    totals: dict[str, list[int]] = {}
    for (month, product_id, acct), (n, amount) in sorted(groups.items()):
        known = led.product(product_id)
        assert known is not None, product_id
        unit = known.currency
        rows.append((month, product_id, known.kind, known.chain, acct, unit, n, amount))
        text_rows.append(
            [
                *(month, product_id, known.kind, known.chain, acct, currency_label(unit)),
                *(str(n), money(amount, unit)),
            ]
        )
        total = totals.setdefault(unit, [0, 0])
        total[0] += n
        total[1] += amount
    total_rows = [[currency_label(u), str(n), money(a, u)] for u, (n, a) in sorted(totals.items())]
    text = [
        f"breakage (value moved to breakage by the expiry sweep), {_range_text(days)}",
        _section(
            text_rows,
            render_table(
                [
                    *("month", "product", "kind", "chain", "breakage account", "currency"),
                    *("cards", "amount"),
                ],
                text_rows,
                right="llllllrr",
            ),
            "nothing expired",
        ),
        "totals per currency (reconciled with the breakage accounts' closing balances)",
        _section(
            total_rows, render_table(["currency", "cards", "amount"], total_rows, "lrr"), "none"
        ),
    ]
    return Report(
        "breakage", _range_file("breakage", days), BREAKAGE_COLUMNS, rows, "\n".join(text)
    )


# --- (c) activity ----------------------------------------------------------------------------

ACTIVITY_COLUMNS = (
    "business_day",
    "store_id",
    "chain",
    "currency",
    "loads",  # activate, load, refund, issue: transfers
    "loaded_minor",
    "load_reversals",  # reversals that took a load's value back off the card
    "load_reversed_minor",
    "uses",  # redeem, cashout, completion, advice: transfers
    "used_minor",
    "use_reversals",  # reversals that put a use's value back on the card
    "use_reversed_minor",
    "net_minor",  # used - use_reversed - loaded + load_reversed: the store's net, owed to it
)
_FLOW_HEADERS = ["loads", "loaded", "load rev.", "load reversed", "uses", "used", "use rev."]
_FLOW_HEADERS += ["use reversed", "net"]


def _flow_cells(f: _Flows, unit: str) -> list[str]:
    return [
        str(f.loads),
        money(f.loaded_minor, unit),
        str(f.load_reversals),
        money(f.load_reversed_minor, unit),
        str(f.uses),
        money(f.used_minor, unit),
        str(f.use_reversals),
        money(f.use_reversed_minor, unit),
        money(f.net_minor, unit),
    ]


def activity_report(led: Ledger, first: str | None = None, last: str | None = None) -> Report:
    """Where and when value was loaded and used: per business day, store and currency.

    Reconciled: per day and currency, the stores' nets sum to the movement of the store
    settlement accounts in the closing balances (the day before's to the day's).
    """
    days, index = day_range(led, first, last)
    where = f"the activity of {_range_text(days)}"
    groups: dict[tuple[str, str, str], _Flows] = {}  # (day, store account, unit)
    for d, t in _journal(led, days):
        side = _store_side(t, where)
        if side is None:
            continue
        acct, delta = side
        groups.setdefault((d.day, acct, t.unit), _Flows()).add(
            _kind(t, delta, where), t.amount_minor
        )
    nets: dict[tuple[str, str], int] = {}  # (day, unit)
    for (day, _acct, unit), flows in groups.items():
        nets[(day, unit)] = nets.get((day, unit), 0) + flows.net_minor
    problems = []
    for d, opening in _openings(index, days):
        moved: dict[str, int] = {}
        for key in {*opening, *d.balances}:
            if key.startswith(STORE_PREFIX):
                unit = account_unit(key)
                moved[unit] = moved.get(unit, 0) + d.balances.get(key, 0) - opening.get(key, 0)
        for unit in sorted(set(moved) | {u for (day, u) in nets if day == d.day}):
            if moved.get(unit, 0) != nets.get((d.day, unit), 0):
                problems.append(
                    f"{d.day} {currency_label(unit)}: the stores' nets sum to "
                    f"{money(nets.get((d.day, unit), 0), unit)}, their settlement accounts' "
                    f"closing balances moved {money(moved.get(unit, 0), unit)}"
                )
    if problems:
        raise ReconcileError(where, problems)
    chains = {s.id: s.chain for s in led.stores()}
    rows: list[tuple[object, ...]] = []
    text_rows: list[list[str]] = []
    totals: dict[str, _Flows] = {}
    ordered = sorted(
        groups.items(), key=lambda kv: (kv[0][0], store_of_account(kv[0][1]), kv[0][2])
    )
    for (day, acct, unit), flows in ordered:
        store_id = store_of_account(acct)
        chain = chains.get(store_id, "")
        rows.append((day, store_id, chain, unit, *flows.values(), flows.net_minor))
        text_rows.append([day, store_id, currency_label(unit), *_flow_cells(flows, unit)])
        totals.setdefault(unit, _Flows()).merge(flows)
    total_rows = [[currency_label(u), *_flow_cells(f, u)] for u, f in sorted(totals.items())]
    text = [
        f"activity per store and business day, {_range_text(days)}",
        "loads: activate, load, refund, issue; uses: redeem, cashout, completion, advice; "
        "reversals (and clawbacks) apart, in the day they committed; net: the store's "
        "(positive: owed to it)",
        _section(
            text_rows,
            render_table(["day", "store", "currency", *_FLOW_HEADERS], text_rows, "lll" + "r" * 9),
            "no store moved value",
        ),
        "totals per currency",
        _section(
            total_rows,
            render_table(["currency", *_FLOW_HEADERS], total_rows, "l" + "r" * 9),
            "none",
        ),
    ]
    return Report(
        "activity", _range_file("activity", days), ACTIVITY_COLUMNS, rows, "\n".join(text)
    )


# --- (d) summary per day ---------------------------------------------------------------------

SUMMARY_COLUMNS = (
    "business_day",
    "currency",
    "cards_sold",  # activation and campaign issue transfers (a card given a value)
    "sales_reversed",  # reversals of an activation or an issue (whole or part)
    "loads",  # activate, load, refund, issue: transfers
    "loaded_minor",
    "uses",  # redeem, cashout, completion, advice: transfers
    "cards_used",  # distinct cards with a use
    "used_minor",
    "average_use_minor",  # used_minor / uses to the nearest minor unit, halves up; "" if none
    "load_reversals",
    "load_reversed_minor",
    "use_reversals",
    "use_reversed_minor",
)


def average_minor(total_minor: int, count: int) -> int:
    """``total_minor / count`` to the nearest minor unit, halves rounded up (no floats).

    >>> average_minor(1000, 3), average_minor(5, 2), average_minor(4, 3)
    (333, 3, 1)
    """
    assert count > 0, count
    assert total_minor >= 0, total_minor
    return (2 * total_minor + count) // (2 * count)


@dataclass(slots=True)
class _Day:
    sold: int = 0
    sales_reversed: int = 0
    flows: _Flows = field(default_factory=_Flows)
    cards_used: set[int] = field(default_factory=set)


def summary_report(led: Ledger, first: str | None = None, last: str | None = None) -> Report:
    """Per business day and currency: cards sold, loads, uses and the distinct cards used,
    reversals apart, and the average use. Every closed day of the range has a row in the
    currency of every product (and any other that moved), so a quiet day shows as zeros.

    A sale is an activation (gift cards) or an issue (campaign cards). Cards activated online
    (campaign cards) are not reported yet: an online activation moves no money, so no transfer
    marks it (the card records when, ``activated_ms``; the audit database holds an entry).
    """
    days, _index = day_range(led, first, last)
    where = f"the summary of {_range_text(days)}"
    units = {p.currency for p in led.products()}
    per_day: dict[tuple[str, str], _Day] = {}
    originals: dict[int, str] = {}  # seq -> op, of the originals of reversals
    for d, t in _journal(led, days):
        side = _store_side(t, where)
        if side is None:
            continue
        units.add(t.unit)
        kind = _kind(t, side[1], where)
        s = per_day.setdefault((d.day, t.unit), _Day())
        s.flows.add(kind, t.amount_minor)
        if t.op in SALE_OPS:
            s.sold += 1
        elif (
            kind == LOAD_REVERSAL
            and t.op == REVERSAL_OP
            and _original_op(led, originals, t) in SALE_OPS
        ):
            s.sales_reversed += 1
        if kind == USE:
            s.cards_used.add(t.card_id)
    rows: list[tuple[object, ...]] = []
    text_rows: list[list[str]] = []
    for d in days:
        for unit in sorted(units):
            s = per_day.get((d.day, unit)) or _Day()
            f = s.flows
            average = average_minor(f.used_minor, f.uses) if f.uses else None
            rows.append(
                (
                    *(d.day, unit, s.sold, s.sales_reversed, f.loads, f.loaded_minor, f.uses),
                    *(len(s.cards_used), f.used_minor, "" if average is None else average),
                    *(f.load_reversals, f.load_reversed_minor),
                    *(f.use_reversals, f.use_reversed_minor),
                )
            )
            text_rows.append(
                [
                    *(d.day, currency_label(unit), str(s.sold), str(s.sales_reversed)),
                    *(str(f.loads), money(f.loaded_minor, unit), str(f.uses)),
                    *(str(len(s.cards_used)), money(f.used_minor, unit)),
                    "-" if average is None else money(average, unit),
                    *(str(f.load_reversals), money(f.load_reversed_minor, unit)),
                    *(str(f.use_reversals), money(f.use_reversed_minor, unit)),
                ]
            )
    text = [
        f"summary per business day, {_range_text(days)}",
        "sold: activations with a value; avg use: used / uses to the minor unit, halves up; "
        "reversals apart; cards activated online: not reported yet",
        _section(
            text_rows,
            render_table(
                [
                    *("day", "currency", "sold", "sales rev.", "loads", "loaded", "uses"),
                    *("cards used", "used", "avg use", "load rev.", "load reversed"),
                    *("use rev.", "use reversed"),
                ],
                text_rows,
                right="ll" + "r" * 12,
            ),
            "no product and no transfer",
        ),
    ]
    return Report("summary", _range_file("summary", days), SUMMARY_COLUMNS, rows, "\n".join(text))


def _original_op(led: Ledger, cache: dict[int, str], t: Transfer) -> str:
    op = cache.get(t.original_seq)
    if op is None:
        orig = led.transfer(t.original_seq)
        assert orig is not None, f"reversal {t.seq} names a missing transfer {t.original_seq}"
        op = cache[t.original_seq] = orig.op
    return op
