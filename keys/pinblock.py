"""ISO 9564-1 PIN blocks: formats 0 and 3 under TDES (8-byte blocks), format 4 under AES (16).

Pure functions, no state, no I/O. Two sides:

- terminal side, for simulators and tests: :func:`pin_field`, :func:`pan_field`,
  :func:`encode_pin_block` and :func:`encrypt_pin` (formats 3 and 4 draw their fill from
  :mod:`secrets`; ``fill`` is given only by known-answer tests);
- host side: :func:`decrypt_pin` and :func:`decode_pin_block`, which *refuse* with
  :class:`PinBlockError` a block whose control field is not an allowed format, a PIN length
  outside 4..12, PIN digits that are not decimal, and a wrong fill, which is how a block made
  for another PAN (or under another key) shows: the PAN is XORed into the block, not stored.
  (Formats 0 and 3 carry no check of their own: a PAN that differs only where the PIN digits
  are, or keeps a format 3 fill within A-F, gives a wrong PIN, which then fails verification.)

Formats 1 and 2 are never accepted: format 1 carries no PAN and PCI PIN requirement 3-3 forbids
translating a format 0, 3 or 4 block to it; format 2 is for offline PIN at the chip only. Asking
for them in ``formats_allowed`` is a programming error (:class:`ValueError`).

**Who may call this.** A decrypted PIN is returned as a ``str`` only to code inside the ``keys``
package: everything outside it goes through the security module (``keys.keystore``), which turns
a PIN into a verification value at once and hands out no PIN, PIN block or key. Nothing here logs,
and no exception message contains a PIN digit, a PAN digit or a key byte (psec's decoders put
PIN digits into their messages, which is why decoding is done here and psec is used only by the
tests, to cross-check every vector).

>>> pan = "4012345678909"
>>> encode_pin_block("1234", pan, 0).hex().upper()
'041274EDCBA9876F'
>>> decode_pin_block(bytes.fromhex("041274EDCBA9876F"), pan)
'1234'
>>> decode_pin_block(bytes.fromhex("241234FFFFFFFFFF"), pan)
Traceback (most recent call last):
...
keys.pinblock.PinBlockError: PIN block format 2 is not allowed here
>>> key = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
>>> decrypt_pin(encrypt_pin("1234", pan, key, 4), pan, key)
'1234'
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "ONLINE_FORMATS",
    "PinBlockError",
    "decode_pin_block",
    "decrypt_pin",
    "encode_pin_block",
    "encrypt_pin",
    "pan_field",
    "pin_field",
]

ONLINE_FORMATS: frozenset[int] = frozenset({0, 3, 4})
TDES_FORMATS = frozenset({0, 3})  # 8-byte blocks
PIN_LEN_MIN = 4  # digits (ISO 9564-1)
PIN_LEN_MAX = 12
PAN_LEN_MIN = 8  # digits (ISO/IEC 7812-1)
PAN_LEN_MAX = 19
TDES_BLOCK = 8  # bytes
AES_BLOCK = 16
TDES_KEY_LENS = frozenset({16, 24})  # single DES is not allowed for PINs
AES_KEY_LENS = frozenset({16, 24, 32})
_FORMAT3_FILL = "ABCDEF"
_HEX = frozenset("0123456789ABCDEF")
_DECIMAL = frozenset("0123456789")


class PinBlockError(ValueError):
    """A PIN block is refused (or a PIN cannot be encoded). The message never contains a PIN
    digit, a PAN digit or key material; it is safe to log."""


# -- terminal side -----------------------------------------------------------------------------


def pin_field(pin: str, fmt: int, *, fill: str | None = None) -> bytes:
    """The plain-text PIN field: 8 bytes for formats 0 and 3, 16 for format 4.

    Format 0: ``0 N PIN F..F``. Format 3: ``3 N PIN`` then random nibbles A-F. Format 4:
    ``4 N PIN A..A`` (8 bytes) then 8 random bytes. ``fill`` (hex digits: format 3 the
    ``14 - N`` fill nibbles, format 4 the 16 random nibbles) is for known-answer tests only.

    Error handling: :class:`PinBlockError` for a PIN that is not 4 to 12 decimal digits or a bad
    ``fill``; :class:`ValueError` for a format other than 0, 3 or 4.
    """
    _check_format(fmt)
    _check_pin(pin)
    head = f"{fmt}{len(pin):X}{pin}"
    pad_len = 16 - len(head)
    if fmt == 0:
        if fill is not None:
            raise PinBlockError("format 0 has a fixed fill")
        text = head + "F" * pad_len
    elif fmt == 3:
        if fill is None:
            fill = "".join(secrets.choice(_FORMAT3_FILL) for _ in range(pad_len))
        if len(fill) != pad_len or not set(fill) <= set(_FORMAT3_FILL):
            raise PinBlockError(f"format 3 fill must be {pad_len} nibbles A-F")
        text = head + fill
    else:
        if fill is None:
            fill = secrets.token_hex(8).upper()
        if len(fill) != 16 or not set(fill) <= _HEX:
            raise PinBlockError("format 4 fill must be 16 upper-case hex digits")
        text = head + "A" * pad_len + fill
    return bytes.fromhex(text)


def pan_field(pan: str, fmt: int) -> bytes:
    """The PAN field XORed into the PIN block: 8 bytes for formats 0 and 3, 16 for format 4.

    Formats 0 and 3: ``0000`` and the 12 rightmost PAN digits without the check digit
    (left-padded with zeros). Format 4: ``M`` (PAN length - 12, or 0), the PAN left-padded to
    12 digits, then zeros.

    Error handling: :class:`PinBlockError` for a PAN that is not 8 to 19 decimal digits;
    :class:`ValueError` for a format other than 0, 3 or 4.
    """
    _check_format(fmt)
    if not (PAN_LEN_MIN <= len(pan) <= PAN_LEN_MAX and set(pan) <= _DECIMAL):
        raise PinBlockError(f"PAN must be {PAN_LEN_MIN} to {PAN_LEN_MAX} decimal digits")
    if fmt in TDES_FORMATS:
        return bytes.fromhex("0000" + pan[:-1][-12:].rjust(12, "0"))
    text = f"{max(len(pan) - 12, 0)}{pan.rjust(12, '0')}"
    return bytes.fromhex(text.ljust(32, "0"))


def encode_pin_block(pin: str, pan: str, fmt: int, *, fill: str | None = None) -> bytes:
    """The clear 8-byte format 0 or 3 PIN block: PIN field XOR PAN field.

    (Format 4 has no clear block: its PAN field is XORed between two encryptions; use
    :func:`encrypt_pin`.)

    Error handling: as :func:`pin_field` and :func:`pan_field`; :class:`ValueError` for a
    format other than 0 or 3.
    """
    if fmt not in TDES_FORMATS:
        raise ValueError(f"a clear PIN block is format 0 or 3, not {fmt}")
    return _xor(pin_field(pin, fmt, fill=fill), pan_field(pan, fmt))


def encrypt_pin(pin: str, pan: str, key: bytes, fmt: int, *, fill: str | None = None) -> bytes:
    """An enciphered PIN block: format 0 or 3 under a 16/24-byte TDES key (TDES-ECB of the clear
    block), format 4 under an AES key (E(K, E(K, PIN field) XOR PAN field)).

    Error handling: as :func:`pin_field`; :class:`ValueError` for a bad key length or format.
    """
    if fmt in TDES_FORMATS:
        return _tdes(key).encryptor().update(encode_pin_block(pin, pan, fmt, fill=fill))
    _check_format(fmt)
    encryptor = _aes(key).encryptor()
    field = pin_field(pin, 4, fill=fill)
    return encryptor.update(_xor(encryptor.update(field), pan_field(pan, 4)))


# -- host side ---------------------------------------------------------------------------------


def decrypt_pin(
    block: bytes, pan: str, key: bytes, *, formats_allowed: frozenset[int] = ONLINE_FORMATS
) -> str:
    """The PIN inside an enciphered PIN block; callers must be inside ``keys`` (see above).

    An 8-byte block is format 0 or 3 under a TDES key; a 16-byte block is format 4 under an AES
    key. The control field of the deciphered block must be in ``formats_allowed``.

    Error handling: :class:`PinBlockError` when the block is refused (format not allowed, PIN
    length, PIN digits, fill, or a block length that is no format's); :class:`ValueError` for a
    bad key length or ``formats_allowed`` naming format 1 or 2 (or anything but 0, 3, 4).
    """
    _check_allowed(formats_allowed)
    if len(block) == TDES_BLOCK:
        clear = _tdes(key).decryptor().update(block)
        return decode_pin_block(clear, pan, formats_allowed=formats_allowed)
    if len(block) == AES_BLOCK:
        if 4 not in formats_allowed:
            raise PinBlockError("PIN block format 4 is not allowed here")
        decryptor = _aes(key).decryptor()
        field = decryptor.update(_xor(decryptor.update(block), pan_field(pan, 4)))
        return _decode(field.hex().upper()[:16], formats_allowed & {4})
    raise PinBlockError(f"PIN block must be 8 (TDES) or 16 (AES) bytes, not {len(block)}")


def decode_pin_block(
    block: bytes, pan: str, *, formats_allowed: frozenset[int] = ONLINE_FORMATS
) -> str:
    """The PIN inside a clear 8-byte format 0 or 3 block (XOR the PAN field, then check).

    Error handling: as :func:`decrypt_pin`.
    """
    _check_allowed(formats_allowed)
    if len(block) != TDES_BLOCK:
        raise PinBlockError(f"a clear format 0 or 3 PIN block is 8 bytes, not {len(block)}")
    clear = _xor(block, pan_field(pan, 0))
    return _decode(clear.hex().upper(), formats_allowed & TDES_FORMATS)


def _decode(nibbles: str, formats: frozenset[int]) -> str:
    """Check and read the first 16 nibbles ``C N PIN fill`` of a clear PIN field."""
    assert len(nibbles) == 16
    control = int(nibbles[0], 16)
    if control not in formats:
        raise PinBlockError(f"PIN block format {control:X} is not allowed here")
    pin_len = int(nibbles[1], 16)
    if not PIN_LEN_MIN <= pin_len <= PIN_LEN_MAX:
        raise PinBlockError(f"PIN length {pin_len} is outside {PIN_LEN_MIN}..{PIN_LEN_MAX}")
    pin = nibbles[2 : 2 + pin_len]
    if not set(pin) <= _DECIMAL:
        raise PinBlockError("PIN digits are not decimal")
    fill = nibbles[2 + pin_len :]
    allowed_fill = {0: "F", 3: _FORMAT3_FILL, 4: "A"}[control]
    if not set(fill) <= set(allowed_fill):
        raise PinBlockError(f"PIN block fill is wrong for format {control} (wrong PAN or key?)")
    return pin


# -- helpers -----------------------------------------------------------------------------------


def _check_format(fmt: int) -> None:
    if fmt not in ONLINE_FORMATS:
        raise ValueError(f"PIN block format {fmt} is not supported: use 0, 3 or 4")


def _check_allowed(formats_allowed: frozenset[int]) -> None:
    if not formats_allowed <= ONLINE_FORMATS:
        raise ValueError(
            f"formats {sorted(formats_allowed - ONLINE_FORMATS)} are never allowed for online PIN"
        )


def _check_pin(pin: str) -> None:
    if not (PIN_LEN_MIN <= len(pin) <= PIN_LEN_MAX and set(pin) <= _DECIMAL):
        raise PinBlockError(f"PIN must be {PIN_LEN_MIN} to {PIN_LEN_MAX} decimal digits")


def _tdes(key: bytes) -> Cipher[modes.ECB]:
    if len(key) not in TDES_KEY_LENS:
        raise ValueError(f"TDES PIN key must be 16 or 24 bytes, not {len(key)}")
    # K1 K2 K1 as 24 bytes: the same 2-key TDES without cryptography's deprecation warning.
    key24 = key + key[:8] if len(key) == 16 else key
    return Cipher(TripleDES(key24), modes.ECB())  # noqa: S305


def _aes(key: bytes) -> Cipher[modes.ECB]:
    if len(key) not in AES_KEY_LENS:
        raise ValueError(f"AES PIN key must be 16, 24 or 32 bytes, not {len(key)}")
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305


def _xor(a: bytes, b: bytes) -> bytes:
    assert len(a) == len(b)
    # Through ints: several times faster than a byte-by-byte generator.
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")
