"""Card numbers: Luhn check digit and masking for display and logs (DESIGN §6)."""

from __future__ import annotations

__all__ = ["luhn_check_digit", "luhn_valid", "mask_pan"]

PAN_LEN_MIN = 12
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # digit sum of 2 x d
PAN_LEN_MAX = 19


def luhn_check_digit(body: str) -> str:
    """The digit that makes ``body + digit`` Luhn-valid.

    >>> luhn_check_digit("7992739871")
    '3'
    """
    digits = body.encode("ascii")
    # From the right: every other digit doubled (its digit sum from a table), the rest as is.
    total = (
        sum(_DOUBLED[d - 48] for d in digits[-1::-2])
        + sum(digits[-2::-2])
        - 48 * (len(digits) // 2)
    )
    return str((10 - total % 10) % 10)


def luhn_valid(pan: str) -> bool:
    """True when the last digit of ``pan`` is its Luhn check digit.

    >>> luhn_valid("79927398713"), luhn_valid("79927398710")
    (True, False)
    """
    if len(pan) < 2 or not (pan.isascii() and pan.isdigit()):
        return False
    return luhn_check_digit(pan[:-1]) == pan[-1]


def mask_pan(pan: str) -> str:
    """First six and last four digits, the rest as ``*``; short numbers show less.

    >>> mask_pan("6036280000000000003")
    '603628*********0003'
    """
    n = len(pan)
    if n >= PAN_LEN_MIN:
        return pan[:6] + "*" * (n - 10) + pan[-4:]
    if n > 4:
        return "*" * (n - 4) + pan[-4:]
    return "*" * n
