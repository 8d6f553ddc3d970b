"""Bytes to typed requests and typed responses to bytes, with strict validation (DESIGN §3).

Every field the host reads is checked here: ASCII digits where numeric, lengths, dates,
amounts, currency, TLV structure. A failure raises :class:`~protocol.errors.FormatError` naming
the field, which the server answers with 39=30 and field 44. A frame whose MTI cannot be read
raises :class:`Unreadable` and the connection is closed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import iso8583

from protocol import fastcodec
from protocol.cards import PAN_LEN_MAX, PAN_LEN_MIN
from protocol.currency import CURRENCIES
from protocol.dialect import HOUSE_FIELDS, RESPONSE_ONLY
from protocol.errors import FormatError
from protocol.reconciliation import (
    BATCH_NUMBER_LEN,
    TOTALS_FIELDS,
    Totals,
    decode_net,
    totals_from_fields,
)
from protocol.tlv import OriginalData, decode_original, decode_tlv

__all__ = [
    "ECHOED",
    "ECHOED_BY_CLASS",
    "Request",
    "Unreadable",
    "decode_fields",
    "encode_message",
    "parse_request",
    "response_mti",
]

# Fields copied from the request into its response (DESIGN §3).
ECHOED: tuple[str, ...] = (
    "2",
    "3",
    "4",
    "7",
    "11",
    "12",
    "13",
    "32",
    "37",
    "41",
    "42",
    "49",
    "70",
    "90",
    "95",
)
# Fields echoed in the answer to one message class only: the batch number of a 0500.
ECHOED_BY_CLASS: dict[str, tuple[str, ...]] = {"0500": ("60",)}

# MTI classes the house dialect defines; the last digit 1 marks a repeat where allowed.
REQUEST_CLASSES = frozenset({"0100", "0200", "0220", "0400", "0420", "0500", "0800"})
REPEATABLE = frozenset({"0220", "0400", "0420"})
ACCOUNT_TYPES = frozenset({"00", "60", "65", "66"})
assert BATCH_NUMBER_LEN == 6, "field 44 says 'not 6 digits'"
# Processing codes whose field 4 may be absent (balance inquiries).
AMOUNT_OPTIONAL = frozenset({"30", "31"})

_TRACK2 = re.compile(r"^(\d{12,19})[=D](\d{4})(\d{3})?[\dF]*$")
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")


class Unreadable(Exception):
    """A frame without a readable request MTI: the connection is closed."""


def response_mti(mti: str) -> str:
    """The answer's MTI: function digit + 1, repeat digit cleared.

    >>> response_mti("0200"), response_mti("0421"), response_mti("0800")
    ('0210', '0430', '0810')
    """
    return f"{mti[:2]}{int(mti[2]) + 1}0"


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request. Card data is kept out of ``repr`` so it never reaches a log."""

    mti: str
    mti_class: str
    repeat: bool
    supported: bool  # an MTI of the house dialect (0201 or 1200 are not: answered 12)
    stan: str
    transmission: str  # field 7 as sent, MMDDhhmmss UTC
    local_time: str
    local_date: str
    terminal_id: str
    store_id: str | None
    acquirer: str | None
    proc: str | None
    amount_minor: int | None
    currency: str | None
    rrn: str | None
    network_code: str | None
    original: OriginalData | None
    replacement_minor: int | None
    tags: Mapping[str, str]
    batch_number: str | None  # field 60 of a 0500
    totals: Totals | None  # fields 74-77 and 86-89 of a 0500
    net_minor: int | None  # field 97 of a 0500, as sent (signed)
    pan: str | None = field(repr=False)
    expiry: str | None = field(repr=False)
    fields: Mapping[str, str] = field(repr=False)

    @property
    def tx_type(self) -> str | None:
        return None if self.proc is None else self.proc[:2]

    @property
    def from_account(self) -> str | None:
        return None if self.proc is None else self.proc[2:4]

    @property
    def partial_ok(self) -> bool:
        return self.tags.get("PA") == "1"

    def transmission_at(self, now: datetime) -> datetime:
        """Field 7 as an aware UTC datetime, in the year that puts it nearest to ``now``."""
        return transmission_datetime(self.transmission, now)


def transmission_datetime(mmddhhmmss: str, now: datetime) -> datetime:
    """Field 7 has no year: take the candidate year closest to ``now``.

    29 February exists only in leap years, so the search spans four years either side; such a
    date far from ``now`` is then simply out of the skew window (39=12).

    >>> transmission_datetime("0229120000", datetime(2026, 11, 22, tzinfo=UTC)).year
    2028
    """
    month, day = int(mmddhhmmss[0:2]), int(mmddhhmmss[2:4])
    hh, mi, ss = int(mmddhhmmss[4:6]), int(mmddhhmmss[6:8]), int(mmddhhmmss[8:10])
    best: datetime | None = None
    # This year or a neighbour nearly always; only 29 February may need to look further.
    years: tuple[int, ...] = (now.year, now.year - 1, now.year + 1)
    if month == 2 and day == 29:
        years = tuple(range(now.year - 4, now.year + 5))
    for year in years:
        try:
            candidate = datetime(year, month, day, hh, mi, ss, tzinfo=UTC)
        except ValueError:
            continue
        if best is None or abs(candidate - now) < abs(best - now):
            best = candidate
    assert best is not None  # validation allows only dates that exist in a leap year
    return best


def transmission_ms(mmddhhmmss: str, now_ms: int) -> int:
    """:func:`transmission_datetime` in epoch milliseconds, from ``now_ms``. The engine's
    skew check runs it on every request, inside the write transaction: when the date falls
    within half a year of ``now`` in this year, that year is the nearest (any other is a
    year away) and integer arithmetic gives it; otherwise, and for 29 February, the full
    search does.

    >>> transmission_ms("1122153012", 1795392000000)  # 2026-11-23 00:00 UTC
    1795361412000
    """
    month, day = int(mmddhhmmss[0:2]), int(mmddhhmmss[2:4])
    if not (month == 2 and day == 29):
        at = _days_from_civil(time.gmtime(now_ms // 1000).tm_year, month, day) * 86_400_000 + (
            int(mmddhhmmss[4:6]) * 3_600_000
            + int(mmddhhmmss[6:8]) * 60_000
            + int(mmddhhmmss[8:10]) * 1000
        )
        if abs(at - now_ms) <= _HALF_YEAR_MS:
            return at
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return int(transmission_datetime(mmddhhmmss, now).timestamp() * 1000)


_HALF_YEAR_MS = 182 * 86_400_000


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
    ``days_from_civil``)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def decode_fields(frame: bytes) -> dict[str, str]:
    """Decode with the house spec; map decoding errors to field errors.

    The fast codec gives exactly pyiso8583's result (property-tested byte for byte); on top of
    it the house is stricter: bitmaps are 16 hex characters (pyiso8583 lets ``bytes.fromhex``
    skip spaces), bit 65 (a third bitmap) is refused, and length prefixes are ASCII digits
    (pyiso8583 reads them with ``int()``, which takes ``+6`` and `` 6``).

    Error handling: :class:`Unreadable` when the MTI cannot be read or is not a request;
    :class:`FormatError` (with the field) for anything after the MTI.
    """
    mti = frame[:4].decode("latin-1")
    if not (len(mti) == 4 and mti.isascii() and mti.isdigit()):
        raise Unreadable("no readable MTI")
    if not _request_mti_readable(mti):
        raise Unreadable("MTI is not a request MTI")
    _check_bitmaps(frame, mti)
    try:
        decoded, loose = fastcodec.decode_checked(frame)
    except iso8583.DecodeError as exc:
        error = _format_error_from_decode(exc)
        error.partial = {k: v for k, v in exc.doc_dec.items() if k != exc.field}
        raise error from None
    if loose is not None:
        error = FormatError(int(loose), "bad length prefix")
        error.partial = {k: v for k, v in decoded.items() if k != loose}
        raise error
    return decoded


def _check_bitmaps(frame: bytes, mti: str) -> None:
    primary = frame[4:20]
    if len(primary) < 16:
        return  # the decoder reports the short message
    if not _is_hex(primary):
        raise _with_mti(FormatError(0, "not hex"), mti)
    if not int(primary[:1], 16) & 0x8:
        return
    secondary = frame[20:36]
    if len(secondary) < 16:
        return
    if not _is_hex(secondary):
        raise _with_mti(FormatError(1, "not hex"), mti)
    if int(secondary[:1], 16) & 0x8:
        raise _with_mti(FormatError(65, "not supported"), mti)


def _with_mti(error: FormatError, mti: str) -> FormatError:
    error.partial = {"t": mti}
    return error


def _is_hex(data: bytes) -> bool:
    return data.isascii() and all(c in b"0123456789ABCDEFabcdef" for c in data)


def _request_mti_readable(mti: str) -> bool:
    return len(mti) == 4 and mti.isascii() and mti.isdigit() and int(mti[2]) % 2 == 0


def _format_error_from_decode(exc: iso8583.DecodeError) -> FormatError:
    number = 0 if exc.field in ("p", "h") else int(exc.field)
    msg: str = exc.msg
    if msg.startswith("Extra data"):
        reason = "extra data after"
    elif "larger than maximum" in msg:
        reason = "too long"
    elif msg.startswith("Field data is"):
        reason = "too short"
    elif msg.startswith("Field length is"):
        reason = "length prefix short"
    elif msg.startswith("Failed to decode field length"):
        reason = "bad length prefix"
    elif "non-hex" in msg:
        reason = "not hex"
    else:
        reason = "not ASCII"
    return FormatError(number, reason)


# --- field syntax -------------------------------------------------------------------------


def _digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _check_numeric(fld: int, value: str) -> None:
    if not _digits(value):
        raise FormatError(fld, "not numeric")


def _check_pan(fld: int, value: str) -> None:
    _check_numeric(fld, value)
    if not PAN_LEN_MIN <= len(value) <= PAN_LEN_MAX:
        raise FormatError(fld, "bad length")


def _check_mmdd(fld: int, value: str) -> None:
    _check_numeric(fld, value)
    month, day = int(value[0:2]), int(value[2:4])
    if not 1 <= month <= 12:
        raise FormatError(fld, "bad month")
    # 2000 is a leap year, so 29 February is accepted.
    days = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    if not 1 <= day <= days:
        raise FormatError(fld, "bad day")


def _check_hhmmss(fld: int, value: str) -> None:
    _check_numeric(fld, value)
    if int(value[0:2]) > 23 or int(value[2:4]) > 59 or int(value[4:6]) > 59:
        raise FormatError(fld, "bad time")


def _check_f7(fld: int, value: str) -> None:
    _check_numeric(fld, value)
    _check_mmdd(fld, value[0:4])
    _check_hhmmss(fld, value[4:10])


def _check_yymm(fld: int, value: str) -> None:
    _check_numeric(fld, value)
    if not 1 <= int(value[2:4]) <= 12:
        raise FormatError(fld, "bad month")


def _check_proc(fld: int, value: str) -> None:
    _check_numeric(fld, value)
    if value[2:4] not in ACCOUNT_TYPES or value[4:6] not in ACCOUNT_TYPES:
        raise FormatError(fld, "bad account type")


def _check_track2(fld: int, value: str) -> None:
    match = _TRACK2.match(value)
    if match is None:
        raise FormatError(fld, "bad track 2")
    if not 1 <= int(match.group(2)[2:4]) <= 12:
        raise FormatError(fld, "bad expiry month")


def _check_alnum_space(fld: int, value: str) -> None:
    if not all(c.isascii() and (c.isalnum() or c == " ") for c in value):
        raise FormatError(fld, "not alphanumeric")


def _check_printable(fld: int, value: str) -> None:
    if not _PRINTABLE.match(value) or not value.strip():
        raise FormatError(fld, "not printable")


def _check_hex(fld: int, value: str) -> None:
    if not _HEX.match(value):
        raise FormatError(fld, "not hex")


def _check_currency(fld: int, value: str) -> None:
    _check_numeric(fld, value)
    if value not in CURRENCIES:
        raise FormatError(fld, "unknown currency")


# Field 48 tags with a fixed shape: a DUKPT key serial number (TDES 10 bytes, AES 12 bytes)
# and an AES PIN block (ISO 9564 format 4, 16 bytes; field 52 holds only 8).
KSN_HEX_LENGTHS = (20, 24)
AES_PIN_BLOCK_HEX_LEN = 32


def _check_tlv(fld: int, value: str) -> None:
    tags = decode_tlv(value, fld)
    if "PA" in tags and tags["PA"] not in ("0", "1"):
        raise FormatError(fld, "PA not 0 or 1")
    ksn = tags.get("KS")
    if ksn is not None and (len(ksn) not in KSN_HEX_LENGTHS or not _HEX.match(ksn)):
        raise FormatError(fld, "KS not 20/24 hex")
    pin_block = tags.get("PB")
    if pin_block is not None and (
        len(pin_block) != AES_PIN_BLOCK_HEX_LEN or not _HEX.match(pin_block)
    ):
        raise FormatError(fld, "PB not 32 hex")


def _check_batch_number(fld: int, value: str) -> None:
    if len(value) != BATCH_NUMBER_LEN or not _digits(value):
        raise FormatError(fld, "not 6 digits")


def _check_net(fld: int, value: str) -> None:
    if value[:1] not in ("C", "D"):
        raise FormatError(fld, "not C or D")
    _check_numeric(fld, value[1:])


def _check_original(fld: int, value: str) -> None:
    original = decode_original(value)
    if original.mti[2] not in "02468":
        raise FormatError(fld, "bad original MTI")


# fmt: off
FIELD_CHECKS: dict[str, Callable[[int, str], None]] = {
    "2": _check_pan,          "3": _check_proc,        "4": _check_numeric,
    "7": _check_f7,           "11": _check_numeric,    "12": _check_hhmmss,
    "13": _check_mmdd,        "14": _check_yymm,       "22": _check_numeric,
    "25": _check_numeric,     "32": _check_numeric,    "35": _check_track2,
    "37": _check_alnum_space, "41": _check_printable,  "42": _check_printable,
    "48": _check_tlv,         "49": _check_currency,   "52": _check_hex,
    "60": _check_batch_number, "64": _check_hex,       "70": _check_numeric,
    "74": _check_numeric,     "75": _check_numeric,    "76": _check_numeric,
    "77": _check_numeric,     "86": _check_numeric,    "87": _check_numeric,
    "88": _check_numeric,     "89": _check_numeric,    "90": _check_original,
    "95": _check_numeric,     "97": _check_net,        "128": _check_hex,
}
# fmt: on
assert set(FIELD_CHECKS) == set(HOUSE_FIELDS) - {"h", "t", "p", "1"} - RESPONSE_ONLY


def _field_number(key: str) -> int:
    return int(key)


# Fields whose only check is "digits" (about half of a request's): tested inline.
_NUMERIC_ONLY = frozenset(k for k, check in FIELD_CHECKS.items() if check is _check_numeric)


def check_fields(fields: Mapping[str, str]) -> None:
    """Syntax of every present field, lowest field number first.

    A decoded message lists its fields in bitmap order already; only fields built in another
    order (the HTTP API, imports) are sorted first.
    """
    items: Iterable[tuple[str, str]] = fields.items()
    last = -1
    for key in fields:
        if key.isdigit():
            number = int(key)
            if number < last:
                ordered = sorted((k for k in fields if k.isdigit()), key=_field_number)
                items = [(k, fields[k]) for k in ordered]
                break
            last = number
    for key, value in items:
        if key in _NUMERIC_ONLY:
            if value.isascii() and value.isdigit():
                continue
            raise FormatError(int(key), "not numeric")
        check = FIELD_CHECKS.get(key)
        if check is not None:  # never an answer-only field (tests/test_protocol.py)
            check(int(key), value)
        elif key in RESPONSE_ONLY:
            raise FormatError(int(key), "not allowed")


def _require(fields: Mapping[str, str], *keys: str) -> None:
    for key in keys:
        if key not in fields:
            raise FormatError(int(key), "missing")


def parse_request(fields: Mapping[str, str]) -> Request:
    """Validate decoded fields into a :class:`Request`.

    The MTI class decides the mandatory fields; an MTI or processing code the host does not
    support is *not* a format error (the engine answers 12), so only structure is checked here.
    """
    mti = fields["t"]
    mti_class = mti[:3] + "0"
    repeat = mti[3] == "1" and mti_class in REPEATABLE
    supported = mti_class in REQUEST_CLASSES and (mti[3] == "0" or repeat)
    check_fields(fields)
    _require(fields, "7", "11", "12", "13", "41")

    pan: str | None = fields.get("2")
    expiry: str | None = fields.get("14")
    if "35" in fields:
        match = _TRACK2.match(fields["35"])
        assert match is not None  # checked above
        if pan is not None and pan != match.group(1):
            raise FormatError(35, "PAN differs from 002")
        pan, expiry = match.group(1), match.group(2)

    tags = decode_tlv(fields["48"], 48) if "48" in fields else {}
    proc = fields.get("3")
    if supported and mti_class in ("0100", "0200", "0220", "0400", "0420"):
        _require(fields, "3", "42")
        if pan is None and "AL" not in tags:
            raise FormatError(2, "missing")
        assert proc is not None
        if proc[:2] not in AMOUNT_OPTIONAL:
            _require(fields, "4")
    # A 0220 names its original (a completion of a 0100 hold) or stands alone (an offline advice).
    if supported and mti_class in ("0400", "0420"):
        _require(fields, "90")
    if supported and mti_class == "0800":
        _require(fields, "70")
    reconciliation = supported and mti_class == "0500"
    if reconciliation:
        _require(fields, "3", "42", "49", "60", *TOTALS_FIELDS)
    if "4" in fields:
        _require(fields, "49")

    amount = int(fields["4"]) if "4" in fields else None
    # Field 95 starts with the final transaction amount (n12); the rest is not used.
    replacement = int(fields["95"][:12]) if "95" in fields else None
    original = decode_original(fields["90"]) if "90" in fields else None
    return Request(
        mti=mti,
        mti_class=mti_class,
        repeat=repeat,
        supported=supported,
        stan=fields["11"],
        transmission=fields["7"],
        local_time=fields["12"],
        local_date=fields["13"],
        terminal_id=fields["41"],
        # Field 42 is fixed 15, space padded: the store id is what stands before the padding.
        store_id=fields["42"].rstrip(" ") if "42" in fields else None,
        acquirer=fields.get("32"),
        proc=proc,
        amount_minor=amount,
        currency=fields.get("49"),
        rrn=fields.get("37"),
        network_code=fields.get("70"),
        original=original,
        replacement_minor=replacement,
        tags=tags,
        batch_number=fields["60"] if reconciliation else None,
        totals=totals_from_fields(fields) if reconciliation else None,
        net_minor=decode_net(fields["97"]) if reconciliation else None,
        pan=pan,
        expiry=expiry,
        fields=fields,
    )


def encode_message(fields: Mapping[str, str]) -> bytes:
    """Encode a message with the house spec (the bitmap is computed)."""
    return fastcodec.encode(fields)  # byte-identical to pyiso8583 (tests/test_fastcodec.py)
