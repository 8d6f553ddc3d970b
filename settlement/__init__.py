"""Settlement and clearing: what each business day moved, in files the processor can check.

- ``clearing``: the clearing file of a business day (layout in :mod:`protocol.clearing`):
  :class:`ClearingRecord` in, ``.ipm`` + ``.csv`` + SHA-256 digest files out
  (:func:`write_clearing_files`, :func:`build_clearing_file`), and back
  (:func:`read_clearing_file`, :func:`verify_clearing_file`, :func:`describe_clearing_file`);
- ``commands``: ``authsrv settle verify FILE`` and ``authsrv settle describe FILE``;
- ``imports``: ``authsrv settle import FILE``, offline transactions from an inbound file
  (:class:`InboundFile`: full card numbers, read in place) applied through the host's
  processor, each record exactly once, with a masked rejects file;
- ``net``: the net settlement of a closed day per store and funding account, reconciled
  (``authsrv settle net DAY``); ``expiry``: cards past their expiry month to breakage
  (``authsrv settle expire``); ``reports``: liability, breakage, activity, summary
  (``authsrv settle report KIND``); ``accounts``: the funding and breakage account rules.

Not built yet (issue 6): the business-day cut-over that extracts a day's records from the
journal in ``authsrv.store`` (every transfer there has its store, terminal, STAN, RRN and
approval code) and terminal reconciliation.
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
    InboundFile,
    InboundItem,
    InboundRecord,
    VerifyReport,
    build_clearing_file,
    build_inbound_file,
    clearing_file_stem,
    describe_clearing_file,
    read_clearing_file,
    verify_clearing_file,
    write_clearing_files,
    write_digest_file,
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
    "InboundFile",
    "InboundItem",
    "InboundRecord",
    "VerifyReport",
    "add_settle_parser",
    "build_clearing_file",
    "build_inbound_file",
    "clearing_file_stem",
    "cmd_settle",
    "describe_clearing_file",
    "read_clearing_file",
    "verify_clearing_file",
    "write_clearing_files",
    "write_digest_file",
]
