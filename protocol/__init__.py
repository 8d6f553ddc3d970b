"""The wire: the house ISO 8583 dialect as data, framing, validation and field codecs.

Bytes in, a typed :class:`Request` out (or a :class:`FormatError` naming the field); a dict of
response fields in, bytes out; ``reconciliation`` holds the batch totals of a 0500/0510.
Nothing here touches the store or the network.
"""

from protocol.cards import luhn_check_digit, luhn_valid, mask_pan
from protocol.currency import CURRENCIES, format_minor, parse_major
from protocol.dialect import HOUSE_ASCII, HOUSE_FIELDS
from protocol.errors import FormatError
from protocol.framing import FrameError, FrameReader, Framing, encode_frame
from protocol.messages import (
    ECHOED,
    ECHOED_BY_CLASS,
    Request,
    Unreadable,
    decode_fields,
    encode_message,
    parse_request,
    response_mti,
)
from protocol.reconciliation import Totals, decode_net, encode_net
from protocol.tlv import (
    Balance,
    OriginalData,
    decode_balances,
    decode_original,
    decode_tlv,
    encode_balances,
    encode_original,
    encode_tlv,
)

__all__ = [
    "CURRENCIES",
    "ECHOED",
    "ECHOED_BY_CLASS",
    "HOUSE_ASCII",
    "HOUSE_FIELDS",
    "Balance",
    "FormatError",
    "FrameError",
    "FrameReader",
    "Framing",
    "OriginalData",
    "Request",
    "Totals",
    "Unreadable",
    "decode_balances",
    "decode_fields",
    "decode_net",
    "decode_original",
    "decode_tlv",
    "encode_balances",
    "encode_frame",
    "encode_message",
    "encode_net",
    "encode_original",
    "encode_tlv",
    "format_minor",
    "luhn_check_digit",
    "luhn_valid",
    "mask_pan",
    "parse_major",
    "parse_request",
    "response_mti",
]
