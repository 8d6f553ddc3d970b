"""What the settlement reports share: CSV bytes, atomic files, readable tables.

CSV: RFC 4180 (CRLF line ends, quotes only where needed), like the clearing CSV; a header row,
then rows; amounts are integers of minor units. The bytes depend only on the rows, so a report
written twice from the same ledger is the same file.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from protocol.currency import CURRENCIES, format_minor

__all__ = ["csv_bytes", "currency_label", "money", "render_table", "write_atomic"]

FILE_MODE = 0o644  # reports hold no card data (no card numbers at all, not even masked)


def csv_bytes(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """The CSV file of ``rows`` under a header row of ``columns``.

    >>> csv_bytes(["a", "b"], [[1, "x,y"]])
    b'a,b\\r\\n1,"x,y"\\r\\n'
    """
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        assert len(row) == len(columns), (row, columns)
        writer.writerow(row)
    return out.getvalue().encode("utf-8")


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``: a temporary file beside it, fsynced, renamed over it.

    Resource handling: the directory is created if missing; an interrupted write leaves at most
    a ``.<name>.*.tmp`` file (removed on an exception), never half a report.

    Error handling: ``OSError`` from the file system.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temp, FILE_MODE)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def money(amount_minor: int, currency: str) -> str:
    """An exact amount with its currency; a unit the host does not know shows as minor units.

    >>> money(-38000, "978"), money(5, "999")
    ('-380.00 EUR', '5 (unit 999)')
    """
    if currency in CURRENCIES:
        return format_minor(amount_minor, currency)
    return f"{amount_minor} (unit {currency})"


def currency_label(code: str) -> str:
    """
    >>> currency_label("978"), currency_label("999")
    ('EUR', '999')
    """
    return CURRENCIES[code][0] if code in CURRENCIES else code


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: str = "") -> str:
    """Columns padded to their widest cell; ``right`` has an ``r`` for each right-aligned
    column (amounts, counts), anything else aligns left.

    >>> print(render_table(["store", "amount"], [["S1", "5.00 EUR"]], right="lr"), end="")
    store    amount
    S1     5.00 EUR
    """
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(w) if right[i : i + 1] == "r" else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
