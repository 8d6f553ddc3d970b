"""Settlement and clearing: what each business day moved, in files the processor can check.

- ``clearing``: the clearing file of a business day (layout in :mod:`protocol.clearing`):
  :class:`ClearingRecord` in, ``.ipm`` + ``.csv`` + SHA-256 digest files out
  (:func:`write_clearing_files`, :func:`build_clearing_file`), and back
  (:func:`read_clearing_file`, :func:`verify_clearing_file`, :func:`describe_clearing_file`);
- ``commands``: ``authsrv settle verify FILE`` and ``authsrv settle describe FILE``.

Not built yet (issue 6): the business-day cut-over that extracts a day's records from the
journal in ``authsrv.store`` (every transfer there has its store, terminal, STAN, RRN and
approval code), net settlement positions, terminal reconciliation and batch import.
"""

from settlement.clearing import (
    CSV_COLUMNS,
    ClearingFile,
    ClearingFileError,
    ClearingOriginal,
    ClearingPaths,
    ClearingRecord,
    CurrencyTotals,
    FileHeader,
    FileTrailer,
    VerifyReport,
    build_clearing_file,
    clearing_file_stem,
    describe_clearing_file,
    read_clearing_file,
    verify_clearing_file,
    write_clearing_files,
)
from settlement.commands import add_settle_parser, cmd_settle

__all__ = [
    "CSV_COLUMNS",
    "ClearingFile",
    "ClearingFileError",
    "ClearingOriginal",
    "ClearingPaths",
    "ClearingRecord",
    "CurrencyTotals",
    "FileHeader",
    "FileTrailer",
    "VerifyReport",
    "add_settle_parser",
    "build_clearing_file",
    "clearing_file_stem",
    "cmd_settle",
    "describe_clearing_file",
    "read_clearing_file",
    "verify_clearing_file",
    "write_clearing_files",
]
