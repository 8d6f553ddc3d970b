"""The clearing file layout: a second ISO 8583 spec, as a pyiso8583 data table (issue 6).

A clearing file tells the processor what the host committed in one business day. It is modelled
on the IPM files card schemes exchange: a stream of ISO 8583 messages, each preceded by its
length, opened by a file header and closed by a file trailer. The layout is our own and ASCII
throughout; where ISO 8583:1993 has a data element for a piece of information we use its
number (24 function code, 56 original data elements, 71 message number, 94 originator, 101
file name), and the host's own items are in the private-use fields 120-127.

Messages (every message has both bitmaps, because every one of them uses fields above 64):

====  =============  ==========================================================================
MTI   field 24       message
====  =============  ==========================================================================
1644  697            file header: the first message, exactly once
1240  200            financial record: one money movement of a card (a first presentment)
1240  400            reversal record: a movement that gave back (part of) an earlier one;
                     field 56 names the original record, which may be in an earlier file
1644  695            file trailer: the last message, exactly once; record count and totals
====  =============  ==========================================================================

Which fields each message has is :data:`MESSAGE_FIELDS`: exactly those, no more, no fewer.

Inbound files (``authsrv settle import``): offline transactions sent *to* the host, e.g. a web
shop's day, in the same framing and messages, except that field 2 of a record carries the full
card number (:data:`CARD_NUMBER`, Luhn-checked by the reader) instead of the masked one. Only
the reader's explicit inbound mode accepts that; an outbound file with a full card number is
refused as before. An inbound financial record carries one of :data:`INBOUND_OPERATIONS`.

Framing: each message is preceded by a 4-byte big-endian binary length that does not count
itself (:data:`FRAME_PREFIX_LEN`). Nothing precedes the header or follows the trailer.

Field contents beyond what the spec states (digits, masks, code tables) are checked by
:mod:`settlement.clearing`; this module is the table and an exact, fast codec for it:

- :func:`encode` gives exactly ``bytes(iso8583.encode(dict(fields), CLEARING_ASCII)[0])``;
- :func:`decode` gives exactly ``iso8583.decode(message, CLEARING_ASCII)[0]`` for every message
  in the canonical form that :func:`encode` writes (digit length prefixes, upper-case hex
  bitmaps, no empty secondary bitmap), and raises :class:`iso8583.DecodeError` naming the field
  and position for anything else, so that a message has exactly one valid encoding.

>>> msg = encode({"t": "1644", "24": "697", "101": "H1-20261122-000001"})
>>> msg
b'16448000010000000000000000000800000069718H1-20261122-000001'
>>> decode(msg) == {"t": "1644", "p": "8000010000000000", "1": "0000000008000000",
...                 "24": "697", "101": "H1-20261122-000001"}
True
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping, Sequence
from typing import Any

import iso8583
import msgspec

# The terminal dialect's field builders: ASCII data, ASCII length prefixes.
from protocol.dialect import _fixed, _lllvar, _llvar

__all__ = [
    "CARD_NUMBER",
    "CLEARING_ASCII",
    "CLEARING_FIELDS",
    "FRAME_PREFIX_LEN",
    "FUNC_FINANCIAL",
    "FUNC_HEADER",
    "FUNC_REVERSAL",
    "FUNC_TRAILER",
    "INBOUND_OPERATIONS",
    "MASKED_CARD",
    "MESSAGE_FIELDS",
    "MESSAGE_LEN_MAX",
    "MTI_FILE",
    "MTI_RECORD",
    "OPERATIONS",
    "ORIGINAL_DATA_LEN",
    "TOTALS_BLOCKS_MAX",
    "TOTALS_BLOCK_LEN",
    "CurrencyTotals",
    "decode",
    "decode_totals",
    "encode",
    "encode_totals",
]


# Header H, financial record F (1240/200), reversal record R (1240/400), trailer T.
# fmt: off
# field: definition                                                  # format    in
CLEARING_FIELDS: dict[str, dict[str, Any]] = {
    "h":   _fixed(0,   "Message header (none)"),
    "t":   _fixed(4,   "Message type indicator"),                     # n4        HFRT
    "p":   _fixed(16,  "Primary bitmap (hex)"),                       # an16      HFRT
    "1":   _fixed(16,  "Secondary bitmap (hex)"),                     # an16      HFRT
    "2":   _llvar(19,  "Card number, masked: first six, *, last four"),  # ans..19  FR
    "4":   _fixed(12,  "Amount (minor units)"),                       # n12       FR
    "11":  _fixed(6,   "System trace audit number (STAN)"),           # n6        FR
    "12":  _fixed(10,  "Terminal local date and time MMDDhhmmss"),    # n10       FR
    "24":  _fixed(3,   "Function code"),                              # n3        HFRT
    "28":  _fixed(8,   "Business day YYYYMMDD"),                      # n8        HFRT
    "37":  _fixed(12,  "Retrieval reference number (RRN)"),           # an12      FR
    "38":  _fixed(6,   "Approval code, space-padded"),                # an6       FR
    "41":  _fixed(8,   "Terminal id"),                                # ans8      FR
    "42":  _fixed(15,  "Store id, space-padded"),                     # ans15     FR
    "49":  _fixed(3,   "Currency (ISO 4217 numeric)"),                # n3        FR
    "56":  _fixed(46,  "Original record: RRN, STAN, business day, record id"),  # ans46  R
    "71":  _fixed(8,   "Record sequence number in the file"),         # n8        FR
    "94":  _llvar(11,  "Sender (host id)"),                           # ans..11   H
    "101": _llvar(40,  "File id"),                                    # ans..40   HT
    "120": _fixed(20,  "Record id (the host's, unique)"),             # n20       FR
    "121": _fixed(1,   "Debit/credit indicator, card's view: D or C"),  # a1       FR
    "122": _llvar(12,  "Operation"),                                  # ans..12   FR
    "123": _fixed(14,  "Host commit time UTC YYYYMMDDhhmmss"),        # n14       FR
    "124": _fixed(6,   "File sequence number"),                       # n6        H
    "125": _fixed(14,  "File creation time UTC YYYYMMDDhhmmss"),      # n14       H
    "126": _fixed(8,   "Record count"),                               # n8        T
    "127": _lllvar(999, "Totals per currency (repeated 59-char block)"),  # ans..999  T
}
# fmt: on

CLEARING_ASCII: Mapping[str, Mapping[str, Any]] = CLEARING_FIELDS
"""The spec handed to pyiso8583: exactly the table above (no other field exists in a file)."""

MTI_FILE = "1644"  # file header and trailer (IPM: file-level messages)
MTI_RECORD = "1240"  # financial and reversal records (IPM: first presentment)
FUNC_HEADER = "697"
FUNC_TRAILER = "695"
FUNC_FINANCIAL = "200"  # ISO 8583:1993 function code: original financial presentment
FUNC_REVERSAL = "400"  # ISO 8583:1993 function code: reversal (full or of a part)

# (MTI, function code) -> the fields of that message, in field order, each exactly once.
# fmt: off
_RECORD_BASE = ("2", "4", "11", "12", "24", "28", "37", "38", "41", "42", "49")
_RECORD_TAIL = ("71", "120", "121", "122", "123")
MESSAGE_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    (MTI_FILE, FUNC_HEADER):      ("24", "28", "94", "101", "124", "125"),
    (MTI_RECORD, FUNC_FINANCIAL): (*_RECORD_BASE, *_RECORD_TAIL),
    (MTI_RECORD, FUNC_REVERSAL):  (*_RECORD_BASE, "56", *_RECORD_TAIL),
    (MTI_FILE, FUNC_TRAILER):     ("24", "28", "101", "126", "127"),
}
# fmt: on

# Operations a record may carry, with the direction of their money on the card (field 121) for
# a financial record; a reversal record carries the operation it reverses and the opposite
# direction. A new operation is one line here.
OPERATIONS: dict[str, str] = {
    "activate": "C",  # sale of a card with its initial value (proc 72)
    "load": "C",  # load or reload (proc 21)
    "refund": "C",  # refund to the card (proc 20)
    "issue": "C",  # campaign-card issue (proc 92)
    "redeem": "D",  # purchase paid with the card (proc 00)
    "cashout": "D",  # whole balance paid out, card closed (proc 01)
    "completion": "D",  # completion of a pre-authorization hold (0220 with field 90)
    "advice": "D",  # offline transaction advised (0220 without an original)
}

# Field 2: a card number as DESIGN §6 allows it outside the store: first six and last four
# digits with the middle (2-9 digits of a 12-19 digit number) replaced by "*".
MASKED_CARD = re.compile(r"[0-9]{6}\*{2,9}[0-9]{4}", re.ASCII)

# Field 2 of an inbound record (DESIGN §6: read, never copied, never stored): the full card
# number, 12-19 digits. Only the inbound reader accepts it; the outbound writer never writes it.
CARD_NUMBER = re.compile(r"[0-9]{12,19}", re.ASCII)

# Operations an inbound financial record may carry (a web shop's day): the sale of a card with
# its initial value, a load, a purchase paid with a card, a refund to a card. The others are
# the host's own (a campaign issue, a cash-out at a till, completions and advices of terminals)
# and are rejected record by record on import, as are reversal records (1240/400).
INBOUND_OPERATIONS: tuple[str, ...] = ("activate", "load", "redeem", "refund")

# Field 56 of a reversal: the original record's RRN (an12), STAN (n6), business day (n8) and
# record id (n20), concatenated.
ORIGINAL_DATA_LEN = 12 + 6 + 8 + 20

FRAME_PREFIX_LEN = 4  # big-endian binary length of the message that follows, not counting itself

# Field 127 of the trailer: one block per currency that occurs in the file, ascending by
# currency code: currency n3, debit count n8, debit amount n20, credit count n8, credit amount
# n20 (amounts in minor units). n8 counts fit any file (field 71 is n8); n20 amounts fit 10^8
# records of at most 10^12 - 1 each.
TOTALS_BLOCK_LEN = 3 + 8 + 20 + 8 + 20
TOTALS_BLOCKS_MAX = 999 // TOTALS_BLOCK_LEN  # 16 currencies in one file

_BITMAP_LEN = 16  # characters: 64 bits as hex
_MTI_LEN = 4


def _message_len_max() -> int:
    """The longest message the table allows: every field of the widest message at its maximum."""
    longest = 0
    for keys in MESSAGE_FIELDS.values():
        size = _MTI_LEN + 2 * _BITMAP_LEN
        for key in keys:
            spec = CLEARING_FIELDS[key]
            size += spec["len_type"] + spec["max_len"]
        longest = max(longest, size)
    return longest


# A length prefix above this is not a clearing message (a wrong file, or a corrupt prefix); it
# bounds what a reader allocates for one message. About 1.2 KiB is the trailer with 16
# currencies; records are under 300 bytes.
MESSAGE_LEN_MAX = 2048
assert _message_len_max() <= MESSAGE_LEN_MAX, _message_len_max()
assert CLEARING_FIELDS["56"]["max_len"] == ORIGINAL_DATA_LEN
assert CLEARING_FIELDS["127"]["max_len"] >= TOTALS_BLOCKS_MAX * TOTALS_BLOCK_LEN
assert set(OPERATIONS.values()) == {"C", "D"}
assert set(INBOUND_OPERATIONS) <= set(OPERATIONS)
assert CLEARING_FIELDS["2"]["max_len"] == 19, "field 2 holds an inbound card number"
assert all(len(op) <= CLEARING_FIELDS["122"]["max_len"] for op in OPERATIONS)
for _keys in MESSAGE_FIELDS.values():
    assert list(_keys) == sorted(_keys, key=int), _keys
    assert int(_keys[-1]) > 64, "every message has a secondary bitmap"


# --- field 127: totals per currency ----------------------------------------------------------


class CurrencyTotals(msgspec.Struct, frozen=True, kw_only=True):
    """Debits and credits of one currency in a file, from the card's point of view."""

    currency: str  # ISO 4217 numeric
    debit_count: int
    debit_minor: int
    credit_count: int
    credit_minor: int


_TOTALS_BLOCK = re.compile(r"([0-9]{3})([0-9]{8})([0-9]{20})([0-9]{8})([0-9]{20})", re.ASCII)


def encode_totals(totals: Sequence[CurrencyTotals]) -> str:
    """Field 127 from totals given in ascending currency order.

    >>> encode_totals([CurrencyTotals(currency="978", debit_count=2, debit_minor=13250,
    ...                               credit_count=1, credit_minor=50000)])
    '97800000002000000000000000132500000000100000000000000050000'

    Error handling: ``ValueError`` for totals out of order, repeated, too many or too large.
    """
    if len(totals) > TOTALS_BLOCKS_MAX:
        raise ValueError(f"{len(totals)} currencies, at most {TOTALS_BLOCKS_MAX} in one file")
    parts = []
    previous = ""
    for t in totals:
        if not (len(t.currency) == 3 and t.currency.isascii() and t.currency.isdigit()):
            raise ValueError("a totals currency must be 3 digits")
        if t.currency <= previous:
            raise ValueError(f"totals of {t.currency} out of order or repeated")
        previous = t.currency
        for count in (t.debit_count, t.credit_count):
            if not 0 <= count < 10**8:
                raise ValueError(f"{t.currency}: a count must be 0 to 99999999")
        for amount in (t.debit_minor, t.credit_minor):
            if not 0 <= amount < 10**20:
                raise ValueError(f"{t.currency}: a total must be 0 to 10^20 - 1 minor units")
        parts.append(
            f"{t.currency}{t.debit_count:08d}{t.debit_minor:020d}"
            f"{t.credit_count:08d}{t.credit_minor:020d}"
        )
    return "".join(parts)


def decode_totals(text: str) -> tuple[CurrencyTotals, ...]:
    """Inverse of :func:`encode_totals`.

    Error handling: ``ValueError`` naming the block (1-based) and what is wrong with it.
    """
    if len(text) % TOTALS_BLOCK_LEN:
        raise ValueError(f"{len(text)} characters, not a multiple of {TOTALS_BLOCK_LEN}")
    totals = []
    previous = ""
    for n, pos in enumerate(range(0, len(text), TOTALS_BLOCK_LEN), start=1):
        match = _TOTALS_BLOCK.fullmatch(text, pos, pos + TOTALS_BLOCK_LEN)
        if match is None:
            raise ValueError(f"totals block {n} is not all digits")
        currency = match[1]
        if currency <= previous:
            raise ValueError(f"totals block {n} ({currency}) out of order or repeated")
        previous = currency
        totals.append(
            CurrencyTotals(
                currency=currency,
                debit_count=int(match[2]),
                debit_minor=int(match[3]),
                credit_count=int(match[4]),
                credit_minor=int(match[5]),
            )
        )
    return tuple(totals)


# --- codec -----------------------------------------------------------------------------------

# Distinct bitmaps (decode) and key sets (encode) remembered: a valid file has 4 of each; a
# corrupt file costs one plan computation per odd bitmap and a reset every this many.
PLAN_CACHE_MAX = 64

# One row per data field: key, len_type, max_len, and the canonical length prefixes (the
# digits of 0..max_len, zero-padded) for variable fields: one dict lookup checks and parses one.
_Row = tuple[str, int, int, dict[str, int], tuple[str, ...]]
_DATA_KEYS = [key for key in CLEARING_FIELDS if key.isdigit() and key != "1"]


def _row(key: str) -> tuple[int, _Row]:
    spec = CLEARING_FIELDS[key]
    len_type: int = spec["len_type"]
    max_len: int = spec["max_len"]
    assert spec["data_enc"] == "ascii", key
    assert spec["len_enc"] == "ascii", key
    assert len_type in (0, 2, 3), key
    assert len_type == 0 or max_len < 10**len_type, key
    prefixes = tuple(f"{n:0{len_type}d}" for n in range(max_len + 1)) if len_type else ()
    lengths = {text: n for n, text in enumerate(prefixes)}
    return int(key), (key, len_type, max_len, lengths, prefixes)


_ROWS: dict[str, tuple[int, _Row]] = {key: _row(key) for key in _DATA_KEYS}
_BY_NUMBER: dict[int, _Row] = {n: row for n, row in _ROWS.values()}
_HEX_UPPER = frozenset("0123456789ABCDEF")


def _encode_error(msg: str, fields: Mapping[str, str], key: str) -> iso8583.EncodeError:
    return iso8583.EncodeError(msg, dict(fields), {}, key)


class _EncodePlan:
    """A key set's bitmap text and rows, and what the fast path of :func:`encode` needs.

    The fast path takes every value at once (``itemgetter``), checks all lengths as one list
    comparison and the characters as one ``isascii`` of the result; anything it does not like
    goes to the field-by-field loop, which raises pyiso8583's error for the first bad field.
    """

    def __init__(self, bitmap: str, rows: tuple[_Row, ...]) -> None:
        self.bitmap = bitmap
        self.rows = rows
        keys = [row[0] for row in rows]
        # itemgetter of one key returns the bare value, not a tuple: such plans take the loop.
        self.getter = operator.itemgetter(*keys) if len(keys) >= 2 else None
        # Variable fields, last first (inserting their prefixes keeps earlier indices valid),
        # and the lengths expected with -1 at the variable fields.
        self.variable = tuple(
            (i, max_len, prefixes)
            for i, (_, len_type, max_len, _, prefixes) in reversed(list(enumerate(rows)))
            if len_type
        )
        self.lengths = [-1 if len_type else max_len for _, len_type, max_len, _, _ in rows]


def _encode_plan(keys: tuple[object, ...]) -> _EncodePlan | None:
    numbered: list[tuple[int, _Row]] = []
    for key in keys:
        if key in ("t", "p", "1", "h"):
            continue
        found = _ROWS.get(key) if isinstance(key, str) else None
        if found is None:
            return None  # not a clearing field: pyiso8583 decides what that is
        numbered.append(found)
    numbered.sort()
    primary = secondary = 0
    for n, _ in numbered:
        if n <= 64:
            primary |= 1 << (64 - n)
        else:
            secondary |= 1 << (128 - n)
    bitmap = f"{primary | 1 << 63:016X}{secondary:016X}" if secondary else f"{primary:016X}"
    return _EncodePlan(bitmap, tuple(row for _, row in numbered))


_encode_plans: dict[tuple[object, ...], _EncodePlan | None] = {}


def _encode_fast(plan: _EncodePlan, mti: str, fields: Mapping[str, str]) -> bytes | None:
    """The message, or None when some value needs the careful loop (to name the error)."""
    if plan.getter is None:
        return None
    try:
        values = plan.getter(fields)
        lengths = list(map(len, values))
    except TypeError:  # a value without a length
        return None
    parts = list(values)
    for i, max_len, prefixes in plan.variable:
        size = lengths[i]
        if size > max_len:
            return None
        lengths[i] = -1
        parts.insert(i, prefixes[size])
    if lengths != plan.lengths:
        return None
    try:
        text = mti + plan.bitmap + "".join(parts)
    except TypeError:  # a value that is not a str
        return None
    return text.encode("ascii") if text.isascii() else None


def encode(fields: Mapping[str, str]) -> bytes:
    """Exactly ``bytes(iso8583.encode(dict(fields), CLEARING_ASCII)[0])``; ``fields`` unchanged.

    Error handling: :class:`iso8583.EncodeError` with pyiso8583's ``msg`` and ``field`` for a
    value of the wrong length or not ASCII. A key that is not a clearing field is handed to
    pyiso8583 itself (it raises ``KeyError``).
    """
    if "t" not in fields:
        raise _encode_error("Field data is required", fields, "t")
    mti = fields["t"]
    if not (isinstance(mti, str) and mti.isascii()):
        raise _encode_error("Failed to encode field, invalid data", fields, "t")
    if len(mti) != _MTI_LEN:
        raise _encode_error(f"Field data is {len(mti)} bytes, expecting {_MTI_LEN}", fields, "t")
    keys = tuple(fields)
    if keys in _encode_plans:
        plan = _encode_plans[keys]
    else:
        plan = _encode_plan(keys)
        if len(_encode_plans) >= PLAN_CACHE_MAX:
            _encode_plans.clear()
        _encode_plans[keys] = plan
    if plan is None:
        return bytes(iso8583.encode(dict(fields), CLEARING_ASCII)[0])
    fast = _encode_fast(plan, mti, fields)
    if fast is not None:
        return fast
    parts = [mti, plan.bitmap]
    for key, len_type, max_len, _, prefixes in plan.rows:
        value = fields[key]
        if not (isinstance(value, str) and value.isascii()):
            raise _encode_error("Failed to encode field, invalid data", fields, key)
        size = len(value)
        if not len_type:
            if size != max_len:
                raise _encode_error(f"Field data is {size} bytes, expecting {max_len}", fields, key)
        elif size > max_len:
            msg = f"Field data is {size} bytes, larger than maximum {max_len}"
            raise _encode_error(msg, fields, key)
        else:
            parts.append(prefixes[size])
        parts.append(value)
    return "".join(parts).encode("ascii")


_Plan = tuple[bool, tuple[_Row, ...]]
# Keyed by the 32 characters after the MTI: both bitmaps, or the primary one and the start of
# the data; either way the plan is a function of those characters.
_decode_plans: dict[str, _Plan] = {}


def _decode_error(
    msg: str, message: bytes, doc: dict[str, str], pos: int, key: str
) -> iso8583.DecodeError:
    return iso8583.DecodeError(msg, message, doc, {}, pos, key)


def _bitmap_rows(
    bitmap: str, key: str, message: bytes, doc: dict[str, str], pos: int
) -> tuple[bool, list[_Row]]:
    """Whether another bitmap follows, and the rows this (canonical) bitmap selects."""
    if len(bitmap) != _BITMAP_LEN:
        msg = f"Field data is {len(bitmap)} bytes, expecting {_BITMAP_LEN}"
        raise _decode_error(msg, message, {**doc, key: ""}, pos, key)
    if not _HEX_UPPER.issuperset(bitmap):
        msg = f"Bitmap is not {_BITMAP_LEN} upper-case hex digits"
        raise _decode_error(msg, message, {**doc, key: ""}, pos, key)
    offset = 0 if key == "p" else 64
    value = int(bitmap, 16)
    more = bool(value >> 63)
    rows = []
    for bit in range(1, 64):
        if value >> (63 - bit) & 1:
            number = offset + bit + 1
            row = _BY_NUMBER.get(number)
            if row is None:
                msg = f"Bitmap selects field {number}, which is not in the clearing layout"
                raise _decode_error(msg, message, {**doc, key: bitmap}, pos, key)
            rows.append(row)
    if key == "1" and more:
        msg = "Bitmap selects field 65 (a third bitmap), which is not in the clearing layout"
        raise _decode_error(msg, message, {**doc, key: bitmap}, pos, key)
    if key == "1" and not rows:
        msg = "Secondary bitmap selects no field"
        raise _decode_error(msg, message, {**doc, key: bitmap}, pos, key)
    return more, rows


def _plan(text: str, message: bytes, doc: dict[str, str]) -> _Plan:
    head = text[_MTI_LEN : _MTI_LEN + 2 * _BITMAP_LEN]
    plan = _decode_plans.get(head)
    if plan is None:
        primary = head[:_BITMAP_LEN]
        more, rows = _bitmap_rows(primary, "p", message, doc, _MTI_LEN)
        if more:
            secondary = head[_BITMAP_LEN:]
            pos = _MTI_LEN + _BITMAP_LEN
            _, more_rows = _bitmap_rows(secondary, "1", message, {**doc, "p": primary}, pos)
            rows += more_rows
        plan = more, tuple(rows)
        if len(_decode_plans) >= PLAN_CACHE_MAX:
            _decode_plans.clear()
        _decode_plans[head] = plan
    return plan


def decode(message: bytes) -> dict[str, str]:
    """Decode one message (without its length prefix) into a dict of field texts.

    For every message this accepts, the result equals ``iso8583.decode(message,
    CLEARING_ASCII)[0]`` and :func:`encode` of it gives ``message`` back.

    Error handling: :class:`iso8583.DecodeError` with ``msg``, ``field`` and ``pos`` (the
    offset in ``message``), also for what pyiso8583 would accept but :func:`encode` never
    writes: lower-case hex, a length prefix that is not plain digits, an empty secondary bitmap.
    ``doc_enc`` is empty; ``doc_dec`` holds what was decoded before the error.
    """
    text = message.decode("latin-1")  # byte i is character i: positions stay the same
    mti = text[:_MTI_LEN]
    if len(mti) != _MTI_LEN:
        msg = f"Field data is {len(mti)} bytes, expecting {_MTI_LEN}"
        raise _decode_error(msg, message, {"t": ""}, 0, "t")
    if not mti.isascii():
        raise _decode_error("Failed to decode field, invalid data", message, {"t": ""}, 0, "t")
    doc = {"t": mti}
    more, rows = _plan(text, message, doc)
    idx = _MTI_LEN + _BITMAP_LEN
    doc["p"] = text[_MTI_LEN:idx]
    last = "p"
    if more:
        doc["1"] = text[idx : idx + _BITMAP_LEN]
        idx += _BITMAP_LEN
        last = "1"
    for key, len_type, max_len, lengths, _ in rows:
        if len_type:
            prefix = text[idx : idx + len_type]
            size = lengths.get(prefix, -1)
            if size < 0:
                if len(prefix) != len_type:
                    msg = f"Field length is {len(prefix)} bytes wide, expecting {len_type}"
                elif prefix.isascii() and prefix.isdigit():
                    msg = f"Field data is {int(prefix)} bytes, larger than maximum {max_len}"
                else:
                    msg = f"Field length is not {len_type} digits"
                raise _decode_error(msg, message, {**doc, key: ""}, idx, key)
            idx += len_type
        else:
            size = max_len
        value = text[idx : idx + size]
        if len(value) != size:
            msg = f"Field data is {len(value)} bytes, expecting {size}"
            raise _decode_error(msg, message, {**doc, key: ""}, idx, key)
        if not value.isascii():
            msg = "Failed to decode field, invalid data"
            raise _decode_error(msg, message, {**doc, key: ""}, idx, key)
        doc[key] = value
        idx += size
        last = key
    if idx != len(text):
        raise _decode_error("Extra data after last field", message, doc, idx, last)
    return doc
