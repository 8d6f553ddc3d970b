"""The house dialect: ISO 8583:1987, ASCII, as a pyiso8583 spec table (DESIGN §3).

An ISO 8583 spec is a Python dictionary, one row per field. The house dialect starts from
pyiso8583's ``default_ascii`` (MTI 4 digits, bitmaps as 16 hex characters, LLVAR/LLLVAR with
ASCII lengths) and states every field the host reads or writes, so that the table below is the
field list a terminal vendor reads top to bottom. Fields not listed keep ``default_ascii``'s
definition: they decode, and the validator decides whether they are allowed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from iso8583.specs import default_ascii

__all__ = ["HOUSE_ASCII", "HOUSE_FIELDS", "RESPONSE_ONLY"]


def _fixed(max_len: int, desc: str) -> dict[str, Any]:
    return {
        "data_enc": "ascii",
        "len_enc": "ascii",
        "len_type": 0,
        "max_len": max_len,
        "desc": desc,
    }


def _llvar(max_len: int, desc: str) -> dict[str, Any]:
    return {
        "data_enc": "ascii",
        "len_enc": "ascii",
        "len_type": 2,
        "max_len": max_len,
        "desc": desc,
    }


def _lllvar(max_len: int, desc: str) -> dict[str, Any]:
    return {
        "data_enc": "ascii",
        "len_enc": "ascii",
        "len_type": 3,
        "max_len": max_len,
        "desc": desc,
    }


# fmt: off
# field: definition                                              # format   direction
HOUSE_FIELDS: dict[str, dict[str, Any]] = {
    "h":   _fixed(0,   "Message header (none)"),
    "t":   _fixed(4,   "Message type indicator"),                 # n4       both
    "p":   _fixed(16,  "Primary bitmap (hex)"),                   # an16     both
    "1":   _fixed(16,  "Secondary bitmap (hex)"),                 # an16     both
    "2":   _llvar(19,  "Primary account number (PAN)"),          # n..19    req, echoed
    "3":   _fixed(6,   "Processing code TTFFTT"),                 # n6       req, echoed
    "4":   _fixed(12,  "Amount, transaction (minor units)"),      # n12      req, answer
    "7":   _fixed(10,  "Transmission date and time UTC MMDDhhmmss"),  # n10  req, echoed
    "11":  _fixed(6,   "System trace audit number (STAN)"),       # n6       req, echoed
    "12":  _fixed(6,   "Time, local transaction hhmmss"),         # n6       req, echoed
    "13":  _fixed(4,   "Date, local transaction MMDD"),           # n4       req, echoed
    "14":  _fixed(4,   "Date, expiration YYMM"),                  # n4       req
    "22":  _fixed(3,   "Point-of-service entry mode"),            # n3       req
    "25":  _fixed(2,   "Point-of-service condition code"),        # n2       req
    "32":  _llvar(11,  "Acquiring institution id"),               # n..11    req, echoed
    "35":  _llvar(37,  "Track 2 data"),                           # z..37    req
    "37":  _fixed(12,  "Retrieval reference number"),             # an12     req, answer
    "38":  _fixed(6,   "Approval code"),                          # an6      answer
    "39":  _fixed(2,   "Response code"),                          # an2      answer
    "41":  _fixed(8,   "Card acceptor terminal id"),              # ans8     req, echoed
    "42":  _fixed(15,  "Card acceptor (store) id"),               # ans15    req, echoed
    "44":  _llvar(25,  "Additional response data (format error)"),  # ans..25  answer
    "48":  _lllvar(999, "Additional data, private (TLV)"),        # ans..999 req
    "49":  _fixed(3,   "Currency code, transaction (ISO 4217)"),  # n3       req, echoed
    "52":  _fixed(16,  "PIN block (hex)"),                        # b64      req
    "54":  _lllvar(120, "Additional amounts (balances)"),         # an..120  answer
    "60":  _lllvar(6,  "Batch number (reconciliation)"),          # n..6     0500, echoed
    "63":  _lllvar(999, "Host data, private (TLV)"),              # ans..999 answer
    "64":  _fixed(16,  "Message authentication code (hex)"),      # b64      both
    "70":  _fixed(3,   "Network management information code"),    # n3       req, echoed
    "74":  _fixed(10,  "Credits, number"),                        # n10      0500, 0510 host's
    "75":  _fixed(10,  "Credits, reversal number"),               # n10      0500, 0510 host's
    "76":  _fixed(10,  "Debits, number"),                         # n10      0500, 0510 host's
    "77":  _fixed(10,  "Debits, reversal number"),                # n10      0500, 0510 host's
    "86":  _fixed(16,  "Credits, amount"),                        # n16      0500, 0510 host's
    "87":  _fixed(16,  "Credits, reversal amount"),               # n16      0500, 0510 host's
    "88":  _fixed(16,  "Debits, amount"),                         # n16      0500, 0510 host's
    "89":  _fixed(16,  "Debits, reversal amount"),                # n16      0500, 0510 host's
    "90":  _fixed(42,  "Original data elements"),                 # n42      req, echoed
    "95":  _fixed(42,  "Replacement amounts"),                    # an42     req, echoed
    "97":  _fixed(17,  "Amount, net settlement"),                 # x+n16    0500, 0510 host's
    "128": _fixed(16,  "Message authentication code (hex)"),      # b64      both
}
# fmt: on

# Fields a terminal must not send (the host sets them) and fields the host never sends back.
RESPONSE_ONLY: frozenset[str] = frozenset({"38", "39", "44", "54", "63"})


def _build() -> dict[str, dict[str, Any]]:
    spec: dict[str, dict[str, Any]] = copy.deepcopy(dict(default_ascii))
    spec.update(copy.deepcopy(HOUSE_FIELDS))
    return spec


HOUSE_ASCII: Mapping[str, Mapping[str, Any]] = _build()
