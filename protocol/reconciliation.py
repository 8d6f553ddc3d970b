"""Batch totals of a terminal reconciliation (0500/0510): fields 74-77, 86-89 and 97.

The figures are seen from the card's side: a **debit** takes value off a card (redeem, cash-out,
completion, advice), a **credit** puts value on one (activation, load, refund). A reversal counts
by what it reverses: the reversal of a redeem is a debit reversal. Counts are of transactions
that moved money; amounts are in minor units. The net (field 97) is what the store's settlement
account gained: ``(debits - debit reversals) - (credits - credit reversals)``, sent as ``C``
when it is zero or more (the store is owed) and ``D`` when it is negative.

>>> t = Totals(credits_count=1, credits_minor=5000, debits_count=2, debits_minor=1250)
>>> t.net_minor
-3750
>>> t.to_fields()["97"], t.to_fields()["88"]
('D0000000000003750', '0000000000001250')
>>> totals_from_fields(t.to_fields()) == t
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

__all__ = [
    "BATCH_NUMBER_LEN",
    "FIGURES",
    "KINDS",
    "TOTALS_FIELDS",
    "Totals",
    "decode_net",
    "difference",
    "encode_net",
    "totals_from_fields",
]

BATCH_NUMBER_LEN = 6  # field 60 of a 0500: the terminal's batch number, 6 digits
COUNT_LEN = 10  # fields 74-77, n10
AMOUNT_LEN = 16  # fields 86-89, n16; field 97 is C/D + n16
# Field -> the attribute of Totals it carries, in field order (ISO 8583:1987 names).
FIGURES: dict[str, str] = {
    "74": "credits_count",
    "75": "credit_reversals_count",
    "76": "debits_count",
    "77": "debit_reversals_count",
    "86": "credits_minor",
    "87": "credit_reversals_minor",
    "88": "debits_minor",
    "89": "debit_reversals_minor",
}
TOTALS_FIELDS: tuple[str, ...] = (*FIGURES, "97")
# What a money-moving transaction adds to: the figure's name without _count/_minor.
KINDS = ("credits", "credit_reversals", "debits", "debit_reversals")
assert list(FIGURES.values()) == [f"{k}_count" for k in KINDS] + [f"{k}_minor" for k in KINDS]


@dataclass(frozen=True, slots=True)
class Totals:
    """The eight figures of a batch (fields 74-77 counts, 86-89 amounts in minor units)."""

    credits_count: int = 0
    credit_reversals_count: int = 0
    debits_count: int = 0
    debit_reversals_count: int = 0
    credits_minor: int = 0
    credit_reversals_minor: int = 0
    debits_minor: int = 0
    debit_reversals_minor: int = 0

    @property
    def net_minor(self) -> int:
        """Field 97: what the store's settlement account gained over the batch."""
        debits = self.debits_minor - self.debit_reversals_minor
        credits = self.credits_minor - self.credit_reversals_minor
        return debits - credits

    def add(self, kind: str, amount_minor: int) -> Totals:
        """One more transaction of ``kind`` (credits, credit_reversals, debits,
        debit_reversals) that moved ``amount_minor``.

        >>> Totals().add("debit_reversals", 250).debit_reversals_minor
        250
        """
        assert amount_minor > 0, amount_minor
        i = KINDS.index(kind)  # the counts are the first four fields, the amounts the last four
        counts = [
            self.credits_count,
            self.credit_reversals_count,
            self.debits_count,
            self.debit_reversals_count,
        ]
        amounts = [
            self.credits_minor,
            self.credit_reversals_minor,
            self.debits_minor,
            self.debit_reversals_minor,
        ]
        counts[i] += 1
        amounts[i] += amount_minor
        return Totals(*counts, *amounts)  # on every money-moving request: no replace()

    def figures(self) -> dict[str, int]:
        """The eight figures by name, in field order."""
        return {name: getattr(self, name) for name in FIGURES.values()}

    def to_fields(self) -> dict[str, str]:
        """Fields 74-77, 86-89 and 97 as sent."""
        fields: dict[str, str] = {}
        for key, name in FIGURES.items():
            value: int = getattr(self, name)
            width = COUNT_LEN if name.endswith("_count") else AMOUNT_LEN
            assert 0 <= value < 10**width, f"{name} does not fit field {key}: {value}"
            fields[key] = f"{value:0{width}d}"
        fields["97"] = encode_net(self.net_minor)
        return fields


assert [f.name for f in fields(Totals)] == list(FIGURES.values()), "Totals.add relies on it"


def difference(terminal: Totals, terminal_net_minor: int, host: Totals) -> dict[str, int]:
    """Terminal minus host, per figure and for the net (the terminal's field 97 as sent).

    >>> difference(Totals(debits_count=1, debits_minor=900), 900, Totals())["debits_minor"]
    900
    """
    diff = {name: getattr(terminal, name) - getattr(host, name) for name in FIGURES.values()}
    diff["net_minor"] = terminal_net_minor - host.net_minor
    return diff


def encode_net(amount_minor: int) -> str:
    """Field 97 (x+n16): ``C`` for zero or more, ``D`` for less, then 16 digits.

    >>> encode_net(0), encode_net(-125)
    ('C0000000000000000', 'D0000000000000125')
    """
    assert abs(amount_minor) < 10**AMOUNT_LEN, amount_minor
    return f"{'C' if amount_minor >= 0 else 'D'}{abs(amount_minor):0{AMOUNT_LEN}d}"


def decode_net(text: str) -> int:
    """Inverse of :func:`encode_net` (the text is checked by the validator first).

    >>> decode_net("D0000000000000125")
    -125
    """
    assert len(text) == 1 + AMOUNT_LEN and text[0] in "CD", text
    return int(text[1:]) * (1 if text[0] == "C" else -1)


def totals_from_fields(fields: Mapping[str, str]) -> Totals:
    """The eight figures of fields 74-77 and 86-89 (checked by the validator first)."""
    return Totals(**{name: int(fields[key]) for key, name in FIGURES.items()})
