"""A fast codec for the house ASCII dialect, byte-identical to pyiso8583 (DESIGN §3, §8).

pyiso8583 spends about 25 µs on a 0200 and as much on its 0210, mostly in per-field function
calls and dict bookkeeping (``doc_enc``) the host never reads. This module does the same work
for :data:`~protocol.dialect.HOUSE_ASCII` only, from tables built from that spec at import:

- :func:`decode` gives exactly ``iso8583.decode(frame, HOUSE_ASCII)[0]``, and for every frame
  pyiso8583 rejects raises the same :class:`iso8583.DecodeError` (same ``msg``, ``field``,
  ``pos`` and partially decoded ``doc_dec``; ``doc_enc`` is left empty because it is not built).
  Where pyiso8583 fails with something else (``KeyError('129')`` for a set bit of a third
  bitmap, ``TypeError`` for a non-bytes frame), so does this module.
- :func:`decode_checked` also names the first field whose length prefix was accepted by
  ``int()`` without being ASCII digits (``"+6"``, ``" 6"``, ``"1_0"``, ``"-0"``), for the
  strict check of :func:`protocol.messages.decode_fields`.
- :func:`encode` gives exactly ``bytes(iso8583.encode(dict(fields), HOUSE_ASCII)[0])``, and
  the same :class:`iso8583.EncodeError` (``msg`` and ``field``) for a dict pyiso8583 rejects;
  a dict with odd keys (``"03"``, ``"129"``, an int) is passed to pyiso8583 as it is.

Both directions work on ``str``: the frame is decoded once as latin-1 (byte *i* is character
*i*, so positions and lengths stay the same) and ``str.isascii()``, which is O(1) on a slice,
tells where pyiso8583's ``decode("ascii")`` would have failed. Bitmaps repeat (a terminal fleet
sends a handful of field sets), so the list of fields a bitmap selects is computed once and
cached, and so is the bitmap of a set of keys on the way out.

>>> frame = encode({"t": "0200", "3": "000000", "2": "6036280000000001"})
>>> frame
b'02006000000000000000166036280000000001000000'
>>> decode(frame) == {"t": "0200", "p": "6000000000000000",
...                   "2": "6036280000000001", "3": "000000"}
True
>>> decode_checked(b"0200" b"4000000000000000" b"+6" b"603628")
({'t': '0200', 'p': '4000000000000000', '2': '603628'}, '2')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import iso8583

from protocol.dialect import HOUSE_ASCII

__all__ = ["decode", "decode_checked", "encode"]

# --- tables built from the spec --------------------------------------------------------------

# The shapes this module implements; anything else in the spec is a programmer error here.
assert HOUSE_ASCII["h"]["max_len"] == 0, "a message header is not implemented"
for _key in ("t", "p", "1"):
    assert HOUSE_ASCII[_key]["data_enc"] == "ascii", _key
assert HOUSE_ASCII["p"]["max_len"] == HOUSE_ASCII["1"]["max_len"] == 16
assert set(HOUSE_ASCII) == {"h", "t", "p", *map(str, range(1, 129))}, "fields 1-128 only"

BITMAP_LEN = 16  # characters: 64 bits as hex
MTI_LEN = 4
# Distinct bitmaps (decode) and key sets (encode) remembered. A fleet uses a few dozen; a peer
# sending random bitmaps costs one plan computation (2-3 µs) per frame and a cache reset
# every this many frames, never unbounded memory.
PLAN_CACHE_MAX = 1024

# One row per data field: key, len_type (0 fixed, 2 LLVAR, 3 LLLVAR), max_len, and for variable
# fields the length prefixes that are ASCII digits and within max_len, with their values: a
# dict lookup both checks and parses the common prefix. Fixed fields have an empty dict.
_Row = tuple[str, int, int, dict[str, int]]
# Per len_type, the canonical prefix text of every length: "00".."99", "000".."999".
_PREFIXES: dict[int, tuple[str, ...]] = {
    2: tuple(f"{n:02d}" for n in range(100)),
    3: tuple(f"{n:03d}" for n in range(1000)),
}


def _row(key: str, spec: Mapping[str, Any]) -> _Row:
    len_type: int = spec["len_type"]
    max_len: int = spec["max_len"]
    assert spec["data_enc"] == "ascii", key
    assert spec["len_enc"] == "ascii", key
    assert spec.get("len_count", "bytes") == "bytes", key
    assert len_type in (0, 2, 3), key
    assert len_type == 0 or max_len < 10**len_type, f"{key}: max_len does not fit the prefix"
    lengths = {} if len_type == 0 else {_PREFIXES[len_type][n]: n for n in range(max_len + 1)}
    return key, len_type, max_len, lengths


# Fields 1 and 65 are the bitmap flags of the secondary and tertiary bitmaps, never data.
_ROWS: dict[int, _Row] = {n: _row(str(n), HOUSE_ASCII[str(n)]) for n in range(2, 129) if n != 65}

# --- decode ----------------------------------------------------------------------------------

# A bitmap's plan: is its first bit (1 or 65: another bitmap follows) set, and the rows of the
# data fields it selects in ascending order (which is pyiso8583's processing order).
_Plan = tuple[bool, tuple[_Row, ...]]
_primary_plans: dict[str, _Plan] = {}
_secondary_plans: dict[str, _Plan] = {}

_INVALID_DATA = "Failed to decode field, invalid data"


def _bits(bitmap: str, offset: int) -> list[int]:
    """The field numbers a bitmap selects, ascending; ValueError when it is not hex.

    ``bytes.fromhex`` is what pyiso8583 uses and it skips ASCII whitespace between pairs of
    digits: ``"  F0000000000000"`` is a 7-byte bitmap selecting fields 1-4. Reproduced, not
    approved; ``int(text, 16)`` would also take ``0x``, ``_`` and a sign.
    """
    data = bytes.fromhex(bitmap)
    value = int.from_bytes(data, "big")
    last = offset + 8 * len(data)  # the field of the lowest bit
    numbers = []
    while value:  # highest set bit first: the lowest field number first
        top = value.bit_length()
        numbers.append(last + 1 - top)
        value ^= 1 << (top - 1)
    return numbers


def _plan(
    frame: bytes | bytearray,
    text: str,
    idx: int,
    key: str,
    cache: dict[str, _Plan],
    doc: dict[str, str],
) -> _Plan:
    """The plan of the bitmap ``key`` at ``idx``; on success ``doc[key]`` holds its text."""
    bitmap = text[idx : idx + BITMAP_LEN]
    plan = cache.get(bitmap)
    if plan is None:
        offset = 0 if key == "p" else 64
        if len(bitmap) != BITMAP_LEN:
            msg = f"Field data is {len(bitmap)} bytes, expecting {BITMAP_LEN}"
            raise iso8583.DecodeError(msg, frame, {**doc, key: ""}, {}, idx, key)
        if not bitmap.isascii():
            raise iso8583.DecodeError(_INVALID_DATA, frame, {**doc, key: ""}, {}, idx, key)
        try:
            numbers = _bits(bitmap, offset)
        except ValueError:
            msg = "Failed to decode field, non-hex data"
            raise iso8583.DecodeError(msg, frame, {**doc, key: bitmap}, {}, idx, key) from None
        flag = offset + 1
        plan = flag in numbers, tuple(_ROWS[n] for n in numbers if n != flag)
        if len(cache) >= PLAN_CACHE_MAX:
            cache.clear()
        cache[bitmap] = plan
    doc[key] = bitmap
    return plan


def _tertiary(frame: bytes | bytearray, text: str, doc: dict[str, str]) -> list[int]:
    """Bit 65: pyiso8583 reads 16 more hex characters into field "1" (fields 129-192).

    The house spec has no field above 128, so pyiso8583 then fails with ``KeyError`` on the
    first one, after decoding fields 2-128; an all-zero third bitmap decodes. Never cached.
    """
    idx = MTI_LEN + 2 * BITMAP_LEN
    extra = text[idx : idx + BITMAP_LEN]
    if len(extra) != BITMAP_LEN:
        msg = f"Field data is {BITMAP_LEN + len(extra)} bytes, expecting {2 * BITMAP_LEN}"
        raise iso8583.DecodeError(msg, frame, dict(doc), {}, idx, "1")
    if not extra.isascii():
        raise iso8583.DecodeError(_INVALID_DATA, frame, dict(doc), {}, idx, "1")
    doc["1"] += extra
    try:
        return _bits(extra, 128)
    except ValueError:
        msg = "Failed to decode field, non-hex data"
        raise iso8583.DecodeError(msg, frame, dict(doc), {}, idx, "1") from None


def _odd_length(
    frame: bytes | bytearray, text: str, idx: int, row: _Row, doc: dict[str, str]
) -> int:
    """A length prefix outside the table: pyiso8583's verdict, in pyiso8583's order.

    Returns the length only for a prefix that ``int()`` takes but that is not all digits.
    """
    key, len_type, max_len, _ = row
    prefix = text[idx : idx + len_type]
    if len(prefix) != len_type:
        msg = f"Field length is {len(prefix)} bytes wide, expecting {len_type}"
        raise iso8583.DecodeError(msg, frame, {**doc, key: ""}, {}, idx, key)
    if not prefix.isascii():
        msg = "Failed to decode field length, invalid data"
        raise iso8583.DecodeError(msg, frame, {**doc, key: ""}, {}, idx, key)
    try:
        size = int(prefix)
    except ValueError:
        msg = "Failed to decode field length, non-numeric data"
        raise iso8583.DecodeError(msg, frame, {**doc, key: ""}, {}, idx, key) from None
    if size > max_len:
        msg = f"Field data is {size} bytes, larger than maximum {max_len}"
        raise iso8583.DecodeError(msg, frame, {**doc, key: ""}, {}, idx, key)
    assert not prefix.isdigit(), prefix  # every digit prefix up to max_len is in the table
    return size


def decode_checked(frame: bytes | bytearray) -> tuple[dict[str, str], str | None]:
    """Decode like pyiso8583; also the first field with a length prefix that is not digits.

    Error handling: :class:`iso8583.DecodeError` as pyiso8583 raises it (``doc_enc`` empty);
    ``KeyError`` for a set bit in a third bitmap and ``TypeError`` for a frame that is not
    bytes, as pyiso8583.
    """
    if not isinstance(frame, (bytes, bytearray)):
        raise TypeError(
            f"Encoded ISO8583 data must be bytes or bytearray, not {frame.__class__.__name__}"
        )
    text = frame.decode("latin-1")
    mti = text[:MTI_LEN]
    if len(mti) != MTI_LEN:
        msg = f"Field data is {len(mti)} bytes, expecting {MTI_LEN}"
        raise iso8583.DecodeError(msg, frame, {"t": ""}, {}, 0, "t")
    if not mti.isascii():
        raise iso8583.DecodeError(_INVALID_DATA, frame, {"t": ""}, {}, 0, "t")
    doc = {"t": mti}
    more, rows = _plan(frame, text, MTI_LEN, "p", _primary_plans, doc)
    idx = MTI_LEN + BITMAP_LEN
    last = "p"  # the field pyiso8583 names when data follows the last field
    tertiary: list[int] = []
    if more:
        more, secondary_rows = _plan(frame, text, idx, "1", _secondary_plans, doc)
        rows += secondary_rows
        idx += BITMAP_LEN
        last = "1"
        if more:
            tertiary = _tertiary(frame, text, doc)
            idx += BITMAP_LEN

    # The hot loop: one slice per prefix, one per value, no call unless something is odd.
    loose: str | None = None
    for row in rows:
        key, len_type, max_len, lengths = row
        if len_type:
            found = lengths.get(text[idx : idx + len_type])
            if found is None:
                found = _odd_length(frame, text, idx, row, doc)
                loose = loose or key
            size = found
            idx += len_type
        else:
            size = max_len
        value = text[idx : idx + size]
        if len(value) != size:  # also a negative size from a "-5" prefix
            msg = f"Field data is {len(value)} bytes, expecting {size}"
            raise iso8583.DecodeError(msg, frame, {**doc, key: ""}, {}, idx, key)
        if not value.isascii():
            raise iso8583.DecodeError(_INVALID_DATA, frame, {**doc, key: ""}, {}, idx, key)
        doc[key] = value
        idx += size
        last = key

    if tertiary:
        raise KeyError(str(tertiary[0]))
    if idx != len(text):
        raise iso8583.DecodeError("Extra data after last field", frame, doc, {}, idx, last)
    return doc, loose


def decode(frame: bytes | bytearray) -> dict[str, str]:
    """Exactly ``iso8583.decode(frame, HOUSE_ASCII)[0]``; errors as :func:`decode_checked`."""
    return decode_checked(frame)[0]


# --- encode ----------------------------------------------------------------------------------

# key -> field number, len_type, max_len, canonical prefixes (empty for fixed fields).
_EncodeRow = tuple[str, int, int, tuple[str, ...]]
_ENCODE_ROWS: dict[str, tuple[int, _EncodeRow]] = {
    key: (n, (key, len_type, max_len, _PREFIXES[len_type] if len_type else ()))
    for n, (key, len_type, max_len, _) in _ROWS.items()
}
# Keys pyiso8583 drops (it computes bitmaps 1 and 65 itself; "h" has max_len 0, "t" is
# encoded first, and other non-numeric keys such as "p" are not fields).
_IGNORED = frozenset({"1", "65", "h", "t", "p"})
# A key set's bitmap text and rows in field order; None: keys only pyiso8583 knows how to
# treat ("03", "0", "129", 2, "٣"), so such dicts are handed to it.
_encode_plans: dict[tuple[object, ...], tuple[str, tuple[_EncodeRow, ...]] | None] = {}


def _encode_plan(keys: tuple[object, ...]) -> tuple[str, tuple[_EncodeRow, ...]] | None:
    numbered: list[tuple[int, _EncodeRow]] = []
    for key in keys:
        found = _ENCODE_ROWS.get(key) if isinstance(key, str) else None
        if found is not None:
            numbered.append(found)
        elif not (isinstance(key, str) and (key in _IGNORED or not key.isnumeric())):
            return None
    numbered.sort()
    primary = secondary = 0
    for n, _ in numbered:
        if n <= 64:
            primary |= 1 << (64 - n)
        else:
            secondary |= 1 << (128 - n)
    bitmap = f"{primary | 1 << 63:016X}{secondary:016X}" if secondary else f"{primary:016X}"
    return bitmap, tuple(row for _, row in numbered)


def _encode_error(msg: str, fields: Mapping[str, str], key: str) -> iso8583.EncodeError:
    return iso8583.EncodeError(msg, dict(fields), {}, key)


def encode(fields: Mapping[str, str]) -> bytes:
    """Exactly ``bytes(iso8583.encode(dict(fields), HOUSE_ASCII)[0])``; ``fields`` unchanged.

    Error handling: :class:`iso8583.EncodeError` with pyiso8583's ``msg`` and ``field``
    (``doc_enc`` empty). Non-string keys and numeric keys that are not a field number 2-128
    written plainly ("03", "0", "129", "٣") never come from the host: such a dict is handed to
    pyiso8583 itself, which raises ``EncodeError``, ``KeyError`` or ``ValueError`` or, for
    "03" next to "3", ignores the odd key.
    """
    if "t" not in fields:
        raise _encode_error("Field data is required", fields, "t")
    mti = fields["t"]
    if not (isinstance(mti, str) and mti.isascii()):
        raise _encode_error("Failed to encode field, invalid data", fields, "t")
    if len(mti) != MTI_LEN:
        raise _encode_error(f"Field data is {len(mti)} bytes, expecting {MTI_LEN}", fields, "t")

    keys = tuple(fields)
    if keys in _encode_plans:
        plan = _encode_plans[keys]
    else:
        plan = _encode_plan(keys)
        if len(_encode_plans) >= PLAN_CACHE_MAX:
            _encode_plans.clear()
        _encode_plans[keys] = plan
    if plan is None:
        return bytes(iso8583.encode(dict(fields), HOUSE_ASCII)[0])

    bitmap, rows = plan
    parts = [mti, bitmap]
    for key, len_type, max_len, prefixes in rows:
        value = fields[key]
        if not (isinstance(value, str) and value.isascii()):
            raise _encode_error("Failed to encode field, invalid data", fields, key)
        size = len(value)
        if not len_type:
            if size != max_len:
                msg = f"Field data is {size} bytes, expecting {max_len}"
                raise _encode_error(msg, fields, key)
        elif size > max_len:
            msg = f"Field data is {size} bytes, larger than maximum {max_len}"
            raise _encode_error(msg, fields, key)
        else:
            parts.append(prefixes[size])
        parts.append(value)
    # Every part is ASCII (checked above), so this cannot fail.
    return "".join(parts).encode("ascii")
