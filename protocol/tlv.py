"""Codecs for the structured fields: 48/63 TLV, 54 balances, 90 original data (DESIGN §3)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import FormatError

__all__ = [
    "Balance",
    "OriginalData",
    "decode_balances",
    "decode_original",
    "decode_tlv",
    "encode_balances",
    "encode_original",
    "encode_tlv",
]

TLV_TAG_LEN = 2
TLV_LEN_LEN = 3
BALANCE_BLOCK_LEN = 20
BALANCE_BLOCKS_MAX = 6
ORIGINAL_DATA_LEN = 42


def decode_tlv(text: str, field: int) -> dict[str, str]:
    """Parse repeated ``TAG(2 alnum) LEN(3 digits) VALUE``; a repeated tag is a format error.

    >>> decode_tlv("PA0011OP003042", 48)
    {'PA': '1', 'OP': '042'}
    """
    tags: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        head = text[pos : pos + TLV_TAG_LEN + TLV_LEN_LEN]
        if len(head) < TLV_TAG_LEN + TLV_LEN_LEN:
            raise FormatError(field, "TLV truncated")
        tag, length = head[:TLV_TAG_LEN], head[TLV_TAG_LEN:]
        if not (tag.isascii() and tag.isalnum()):
            raise FormatError(field, "TLV tag not alnum")
        if not (length.isascii() and length.isdigit()):
            raise FormatError(field, "TLV length not num")
        start = pos + TLV_TAG_LEN + TLV_LEN_LEN
        end = start + int(length)
        if end > len(text):
            raise FormatError(field, "TLV value truncated")
        if tag in tags:
            raise FormatError(field, "TLV tag repeated")
        tags[tag] = text[start:end]
        pos = end
    return tags


def encode_tlv(tags: dict[str, str]) -> str:
    """Inverse of :func:`decode_tlv`.

    >>> encode_tlv({"RT": "OK"})
    'RT002OK'
    """
    out = []
    for tag, value in tags.items():
        assert len(tag) == TLV_TAG_LEN and tag.isalnum(), tag
        assert len(value) <= 999, tag
        out.append(f"{tag}{len(value):03d}{value}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Balance:
    """One field-54 block: account type, amount type (01 ledger, 02 available), currency."""

    account_type: str
    amount_type: str
    currency: str
    amount_minor: int


def encode_balances(balances: list[Balance]) -> str:
    """Field 54: 20 characters per balance, at most six.

    >>> encode_balances([Balance("60", "02", "978", 38000)])
    '6002978C000000038000'
    >>> encode_balances([Balance("60", "01", "978", -5)])
    '6001978D000000000005'
    """
    assert len(balances) <= BALANCE_BLOCKS_MAX
    out = []
    for b in balances:
        sign = "C" if b.amount_minor >= 0 else "D"
        assert abs(b.amount_minor) < 10**12
        out.append(f"{b.account_type}{b.amount_type}{b.currency}{sign}{abs(b.amount_minor):012d}")
    return "".join(out)


def decode_balances(text: str) -> list[Balance]:
    """Inverse of :func:`encode_balances` (used by the simulator and tests).

    Error handling: raises ``ValueError`` for a block that is not 20 characters of that layout.
    """
    if len(text) % BALANCE_BLOCK_LEN:
        raise ValueError("field 54 is not a whole number of 20-character blocks")
    result = []
    for i in range(0, len(text), BALANCE_BLOCK_LEN):
        block = text[i : i + BALANCE_BLOCK_LEN]
        sign, digits = block[7], block[8:]
        if sign not in "CD" or not (digits.isascii() and digits.isdigit()):
            raise ValueError("field 54 block has a bad sign or amount")
        amount = int(digits) * (1 if sign == "C" else -1)
        result.append(Balance(block[0:2], block[2:4], block[4:7], amount))
    return result


@dataclass(frozen=True, slots=True)
class OriginalData:
    """Field 90: the request a reversal or completion refers to."""

    mti: str
    stan: str
    transmission: str
    acquirer: str


def decode_original(text: str) -> OriginalData:
    """Parse field 90 (n42).

    >>> decode_original("0200000123112210300000000000000000000000000")
    Traceback (most recent call last):
    ...
    protocol.errors.FormatError: field 090: not 42 digits
    """
    if len(text) != ORIGINAL_DATA_LEN or not (text.isascii() and text.isdigit()):
        raise FormatError(90, "not 42 digits")
    return OriginalData(text[0:4], text[4:10], text[10:20], text[20:31])


def encode_original(orig: OriginalData) -> str:
    """Inverse of :func:`decode_original`.

    >>> encode_original(OriginalData("0200", "000123", "1122103000", "0"))
    '020000012311221030000000000000000000000000'
    """
    text = f"{orig.mti}{orig.stan}{orig.transmission}{orig.acquirer.zfill(11)}{'0' * 11}"
    assert len(text) == ORIGINAL_DATA_LEN, text
    return text
