"""ISO 4217 numeric currency codes the host knows, with their minor-unit exponent."""

from __future__ import annotations

__all__ = ["CURRENCIES", "POINTS_CODE", "format_minor", "parse_major"]

# numeric code: (alphabetic code, minor-unit exponent)
# fmt: off
CURRENCIES: dict[str, tuple[str, int]] = {
    "036": ("AUD", 2), "124": ("CAD", 2), "156": ("CNY", 2), "203": ("CZK", 2),
    "208": ("DKK", 2), "348": ("HUF", 2), "352": ("ISK", 0), "356": ("INR", 2),
    "392": ("JPY", 0), "410": ("KRW", 0), "484": ("MXN", 2), "554": ("NZD", 2),
    "578": ("NOK", 2), "643": ("RUB", 2), "710": ("ZAR", 2), "752": ("SEK", 2),
    "756": ("CHF", 2), "826": ("GBP", 2), "840": ("USD", 2), "946": ("RON", 2),
    "949": ("TRY", 2), "975": ("BGN", 2), "978": ("EUR", 2), "985": ("PLN", 2),
    "986": ("BRL", 2), "048": ("BHD", 3), "414": ("KWD", 3), "512": ("OMR", 3),
}
# fmt: on

POINTS_CODE = "999"  # field 54 currency for points and stamps (DESIGN §3)


def exponent(code: str) -> int:
    return CURRENCIES[code][1]


def format_minor(amount_minor: int, code: str) -> str:
    """A readable amount: ``format_minor(12050, "978") == "120.50 EUR"``.

    >>> format_minor(-5, "978")
    '-0.05 EUR'
    >>> format_minor(1200, "392")
    '1200 JPY'
    """
    alpha, exp = CURRENCIES.get(code, (code, 2))
    sign = "-" if amount_minor < 0 else ""
    value = abs(amount_minor)
    if exp == 0:
        return f"{sign}{value} {alpha}"
    return f"{sign}{value // 10**exp}.{value % 10**exp:0{exp}d} {alpha}"


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_major(text: str, code: str) -> int:
    """Parse ``"12.50"`` in currency ``code`` to minor units; no floats involved.

    >>> parse_major("12.5", "978"), parse_major("7", "978"), parse_major("0.05", "978")
    (1250, 700, 5)

    Error handling: raises ``ValueError`` with a message fit for one CLI line.
    """
    if code not in CURRENCIES:
        raise ValueError(f"unknown currency {code!r}: use an ISO 4217 numeric code such as 978")
    exp = CURRENCIES[code][1]
    whole, dot, frac = text.strip().partition(".")
    if not _ascii_digits(whole) or (dot and not _ascii_digits(frac)) or len(frac) > exp:
        raise ValueError(
            f"amount {text!r} is not a positive decimal with at most {exp} decimals, e.g. 12.50"
        )
    scale: int = 10**exp
    return int(whole) * scale + int(frac.ljust(exp, "0") or "0")
