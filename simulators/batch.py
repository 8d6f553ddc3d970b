"""The terminal's side of reconciliation (0500/0510): its own batch totals and the comparison.

A terminal counts what it sent and got approved, from the card's side as the host does
(docs/dialect.md): value put on a card (activation, load, refund) is a **credit**, value taken
off it (redeem, cash-out, a purchase advice or completion) a **debit**, and a reversal counts by
what it reverses. ``close-batch`` sends these totals in a 0500; the host answers 00 (in balance)
or 95 (out of balance) with its own totals, and the batch is closed either way.

>>> batches = TerminalBatches()
>>> batches.record({"t": "0200", "3": "000000", "4": "000000001250", "41": "T0000001",
...                 "49": "978"}, {"39": "00", "4": "000000001250"})
>>> batches.current("T0000001", "978").debits_minor, batches.number("T0000001")
(1250, '000001')
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.currency import CURRENCIES, format_minor, parse_major
from protocol.reconciliation import (
    BATCH_NUMBER_LEN,
    FIGURES,
    KINDS,
    Totals,
    decode_net,
    totals_from_fields,
)
from protocol.tlv import decode_balances
from simulators.terminal import RESPONSE_CODES, SimError

__all__ = [
    "TerminalBatches",
    "batch_entry",
    "describe_close_batch",
    "parse_totals",
    "with_offset",
]

# Transaction types (field 3) that put value on the card, and those that take it off.
CREDIT_TYPES = frozenset({"20", "21", "72"})
DEBIT_TYPES = frozenset({"00", "01"})
ISSUE_TYPE = "92"  # a campaign issue; the void of one is not counted (the value is not sent)
LEDGER = "01"  # field 54 amount type of the ledger balance
BATCH_NUMBER_MAX = 10**BATCH_NUMBER_LEN - 1
# --totals / a scenario's totals table: KIND=COUNT/AMOUNT, KIND as the terminal says it.
KIND_NAMES: dict[str, str] = {kind.replace("_", "-"): kind for kind in KINDS}
LABELS: dict[str, str] = {
    "credits": "credits",
    "credit_reversals": "credit reversals",
    "debits": "debits",
    "debit_reversals": "debit reversals",
}
VERDICTS = {
    "00": "IN BALANCE: batch closed",
    "95": "OUT OF BALANCE: batch closed anyway; difference = terminal - host",
}
NET_LEN = 17  # field 97: C or D, then 16 digits


def batch_entry(req: Mapping[str, str], resp: Mapping[str, str]) -> tuple[str, int] | None:
    """What one exchange adds to the terminal's batch: (kind, amount in minor units), or None
    when no money moved. Money moved on an approved 0200 (its answer's field 4 is the approved
    amount), and on a 0220, 0400 or 0420 answered 00 with balances (field 54), except the
    reversal of a 0100 (a hold). A reversal gives back field 4 less the final amount in 95.
    """
    mti_class = req["t"][:3] + "0"
    rc = resp.get("39")
    tx_type = req.get("3", "")[:2]
    if tx_type == ISSUE_TYPE and mti_class == "0200" and rc == "00" and "54" in resp:
        # A campaign issue: field 4 is the purchase; the value loaded onto the new card (it
        # held nothing before) is its ledger balance in field 54.
        loaded = [b.amount_minor for b in decode_balances(resp["54"]) if b.amount_type == LEDGER]
        return ("credits", loaded[0]) if loaded and loaded[0] > 0 else None
    if tx_type not in CREDIT_TYPES | DEBIT_TYPES:
        return None
    credit = tx_type in CREDIT_TYPES
    if mti_class == "0200" and rc in ("00", "10"):
        kind, amount = ("credits" if credit else "debits"), int(resp.get("4", "0"))
    elif mti_class == "0220" and rc == "00" and "54" in resp:
        kind, amount = "debits", int(req.get("4", "0"))
    elif mti_class in ("0400", "0420") and rc == "00" and "54" in resp:
        if req.get("90", "")[:3] == "010":
            return None  # a hold released: no money moved
        final = int(req["95"][:12]) if "95" in req else 0
        kind = "credit_reversals" if credit else "debit_reversals"
        amount = int(req.get("4", "0")) - final
    else:
        return None
    return (kind, amount) if amount > 0 else None


@dataclass
class TerminalBatches:
    """Per terminal its current batch number, per terminal and currency the running totals of
    the open batch. Kept in memory by a scenario, in a JSON file by ``--batch-file``."""

    numbers: dict[str, int] = field(default_factory=dict)
    totals: dict[tuple[str, str], Totals] = field(default_factory=dict)

    def record(self, req: Mapping[str, str], resp: Mapping[str, str]) -> None:
        """Count an exchange whose answer the terminal got (not its retransmissions)."""
        entry = batch_entry(req, resp)
        if entry is None:
            return
        key = (req["41"], req.get("49", "978"))
        self.totals[key] = self.totals.get(key, Totals()).add(*entry)

    def current(self, terminal: str, currency: str) -> Totals:
        return self.totals.get((terminal, currency), Totals())

    def number(self, terminal: str) -> str:
        return f"{self.numbers.get(terminal, 1):0{BATCH_NUMBER_LEN}d}"

    def closed(self, terminal: str, currency: str) -> None:
        """The host closed the batch (00 or 95): start the next one from zero."""
        self.totals.pop((terminal, currency), None)
        following = self.numbers.get(terminal, 1) + 1
        self.numbers[terminal] = 1 if following > BATCH_NUMBER_MAX else following

    def to_json(self) -> str:
        totals = {f"{t}:{c}": dataclasses.asdict(v) for (t, c), v in sorted(self.totals.items())}
        return json.dumps({"batch_numbers": self.numbers, "totals": totals}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> TerminalBatches:
        """Error handling: :class:`SimError` naming ``where`` for anything but this layout."""
        try:
            raw = json.loads(text)
            numbers = {str(t): int(n) for t, n in raw["batch_numbers"].items()}
            totals = {}
            for key, figures in raw["totals"].items():
                terminal, _, currency = str(key).rpartition(":")
                values = {name: int(figures[name]) for name in FIGURES.values()}
                totals[(terminal, currency)] = Totals(**values)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SimError(f"{where} is not a batch file of this simulator") from None
        return cls(numbers, totals)


def parse_totals(text: str, currency: str, where: str = "--totals") -> Totals:
    """``credits=2/600.00,debits=3/125.50`` (KIND=COUNT/AMOUNT, amounts in major units; kinds
    credits, credit-reversals, debits, debit-reversals; the others are zero).

    >>> parse_totals("debits=3/125.50,debit-reversals=1/20", "978").debit_reversals_minor
    2000
    """
    figures: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        count, slash, amount = value.partition("/")
        kind = KIND_NAMES.get(name.strip())
        if kind is None or not slash or not (count.isascii() and count.isdigit()):
            raise SimError(
                f"{where} takes KIND=COUNT/AMOUNT items, KIND one of {', '.join(KIND_NAMES)}, "
                "e.g. debits=3/125.50"
            )
        try:
            figures[f"{kind}_minor"] = parse_major(amount, currency)
        except ValueError as exc:
            raise SimError(f"{where}: {exc}") from None
        figures[f"{kind}_count"] = int(count)
    return Totals(**figures)


def with_offset(totals: Totals, offset_minor: int) -> Totals:
    """Deliberately wrong totals: the debit amount (field 88, and so the net) moved."""
    debits = totals.debits_minor + offset_minor
    if debits < 0:
        raise SimError(f"--batch-offset-minor {offset_minor} takes the debit amount below zero")
    return dataclasses.replace(totals, debits_minor=debits)


def _totals_of(fields: Mapping[str, str]) -> tuple[Totals, int] | None:
    """The totals and net of a 0500 or 0510, None when a field is missing or malformed."""
    figures = [fields.get(key, "") for key in FIGURES]
    net = fields.get("97", "")
    if len(net) != NET_LEN or net[0] not in ("C", "D"):
        return None
    if not all(f.isascii() and f.isdigit() for f in [*figures, net[1:]]):
        return None
    return totals_from_fields(fields), decode_net(net)


def _major(amount_minor: int, currency: str) -> str:
    return format_minor(amount_minor, currency).rsplit(" ", 1)[0]


def _signed(value: int, text: str) -> str:
    """A difference: ``+`` when the terminal counted more than the host."""
    return f"+{text}" if value > 0 else text


def _net(amount_minor: int, currency: str) -> str:
    return f"{'C' if amount_minor >= 0 else 'D'} {_major(abs(amount_minor), currency)}"


def describe_close_batch(
    req: Mapping[str, str], resp: Mapping[str, str], elapsed_s: float, verbose: bool
) -> str:
    """The 0500 and its answer: the verdict, the terminal's totals beside the host's, and what
    the terminal's differ by (terminal minus host)."""
    currency = req.get("49", "978")
    alpha = CURRENCIES.get(currency, (currency, 2))[0]
    lines = [
        f"-> {req['t']} close-batch  terminal {req['41']}  store {req.get('42', '').rstrip()}  "
        f"batch {req.get('60', '-')}  currency {alpha}  stan {req['11']}  sent {req['7']}"
    ]
    if verbose:
        lines += [f"    {k:>3}  {v}" for k, v in req.items() if k != "t"]
    rc = resp.get("39", "??")
    verdict = VERDICTS.get(rc, RESPONSE_CODES.get(rc, ""))
    tail = f"<- {resp.get('t', '????')} rc {rc} {verdict}"
    if "44" in resp:
        tail += f"  field 44: {resp['44']}"
    lines.append(f"{tail}  ({elapsed_s * 1000:.1f} ms)")
    sent = _totals_of(req)
    answered = _totals_of(resp)
    if sent is None:
        return "\n".join(lines)  # a 0500 built broken on purpose: the fields tell it all
    terminal, terminal_net = sent
    lines.append(f"    {'':<18}{'terminal':>20}{'host':>20}{'difference':>20}")
    host, host_net = answered if answered is not None else (None, None)
    for kind in KINDS:
        cells = [LABELS[kind]]
        count, amount = getattr(terminal, f"{kind}_count"), getattr(terminal, f"{kind}_minor")
        cells.append(f"{count:>5} {_major(amount, currency):>14}")
        if host is None:
            cells.append(f"{'-':>20}")
        else:
            host_count, host_amount = (
                getattr(host, f"{kind}_count"),
                getattr(host, f"{kind}_minor"),
            )
            cells.append(f"{host_count:>5} {_major(host_amount, currency):>14}")
            count_diff = _signed(count - host_count, str(count - host_count))
            amount_diff = _signed(amount - host_amount, _major(amount - host_amount, currency))
            cells.append(f"{count_diff:>5} {amount_diff:>14}")
        lines.append(f"    {cells[0]:<18}" + "".join(f"{c:>20}" for c in cells[1:]).rstrip())
    net_cells = [f"{_net(terminal_net, currency):>20}"]
    if host_net is not None:
        net_cells.append(f"{_net(host_net, currency):>20}")
        net_diff = terminal_net - host_net
        net_cells.append(f"{_signed(net_diff, _major(net_diff, currency)):>20}")
    lines.append(f"    {'net':<18}" + "".join(net_cells))
    if verbose:
        lines += [f"    {k:>3}  {v}" for k, v in resp.items() if k not in ("t", "p")]
    return "\n".join(lines)
