"""The format error: which field, and why (answered with 39=30 and field 44)."""

from __future__ import annotations

__all__ = ["FormatError"]

FIELD44_LEN_MAX = 25


class FormatError(Exception):
    """A field of a request is malformed or missing.

    ``field`` is the ISO field number; ``reason`` is a short text without field data (it is
    logged and sent back in field 44, so it never repeats what the terminal sent).

    >>> FormatError(4, "not numeric").field44
    '004 not numeric'
    """

    def __init__(self, field: int, reason: str) -> None:
        assert 0 <= field <= 128, field
        assert len(reason) <= FIELD44_LEN_MAX - 4, f"reason does not fit field 44: {reason}"
        super().__init__(f"field {field:03d}: {reason}")
        self.field = field
        self.reason = reason
        # Fields decoded before the error, for echoing in the 30 answer (set by the decoder).
        self.partial: dict[str, str] = {}

    @property
    def field44(self) -> str:
        return f"{self.field:03d} {self.reason}"
