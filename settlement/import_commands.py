"""``authsrv settle import FILE`` and ``authsrv settle imports``: the handlers (the parsers are in
:mod:`settlement.commands`, the import itself in :mod:`settlement.imports`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from settlement.commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _fail, _local

if TYPE_CHECKING:
    from authsrv.config import Config
    from authsrv.processor import Processor
    from authsrv.store import LedgerStore

__all__ = ["IMPORT_ACTIONS"]


def _processor(cfg: Config, store: LedgerStore) -> Processor:
    """A processor with the serving host's settings (as ``authsrv.app.open_host`` makes it):
    the same engine, limits, duplicate window and business-day cut-over."""
    from authsrv.app import day_clock, open_keys
    from authsrv.logs import get_logger
    from authsrv.metrics import Metrics
    from authsrv.processor import Processor

    return Processor(
        store,
        open_keys(store),
        Metrics(),
        get_logger(),
        skew_max_s=cfg.server.skew_max_s,
        log_requests=False,
        dup_window_s=cfg.store.dup_window_s,
        hold_expiry_s=cfg.store.hold_expiry_s,
        sweep_batch_max=cfg.store.sweep_batch_max,
        key_grace_s=cfg.security.key_grace_s,
        pin_tries_max=cfg.security.pin_tries_max,
        day_clock=day_clock(cfg) if cfg.settlement.auto_cutover else None,
    )


def _cannot(args: argparse.Namespace, exc: OSError) -> int:
    what = f"cannot read {exc.filename}: " if exc.filename is not None else ""
    _fail(args, f"error: {what}{exc.strerror or exc}")
    return EXIT_USAGE


def _import(args: argparse.Namespace) -> int:
    from authsrv.cli import _load_cfg, _store
    from authsrv.logs import configure_logging
    from settlement.clearing import ClearingFileError, InboundFile
    from settlement.imports import ImportStopped, import_file

    if args.check:
        try:
            with InboundFile(args.file, digest=args.digest) as inbound:
                line = inbound.summary()
        except ClearingFileError as exc:
            _fail(args, f"REFUSED: {args.file}: {exc}")
            return EXIT_FAILED
        except OSError as exc:
            return _cannot(args, exc)
        sys.stdout.write(line + "\n")
        return EXIT_OK
    cfg = _load_cfg(args)
    configure_logging(cfg.log.level, sys.stderr)  # stdout is the operator's summary
    with _store(cfg) as store:
        try:
            result = import_file(
                _processor(cfg, store), args.file, rejects_dir=args.out, digest=args.digest
            )
        except ClearingFileError as exc:
            _fail(args, f"REFUSED: {args.file}: {exc}; nothing moved")
            return EXIT_FAILED
        except ImportStopped as exc:
            _fail(args, f"STOPPED: {args.file}: {exc}")
            return EXIT_FAILED
        except OSError as exc:
            return _cannot(args, exc)
    for line in result.lines():
        sys.stdout.write(line + "\n")
    return EXIT_OK if result.rejected == 0 and not result.changed else EXIT_FAILED


def _imports(args: argparse.Namespace) -> int:
    from authsrv.app import day_clock
    from authsrv.cli import _load_cfg, _store
    from settlement.imports import imported_files

    cfg = _load_cfg(args)
    clock = day_clock(cfg)
    with _store(cfg, readonly=True) as store:
        files = sorted(imported_files(store), key=lambda f: (f.first_ms, f.file_id))
    if not files:
        sys.stdout.write("no inbound file has been imported\n")
        return EXIT_OK
    rows = [("file id", "records", "applied", "rejected", "first import", "last import", "sha256")]
    for f in files[-args.last :]:
        rows.append(
            (
                f.file_id,
                str(f.records),
                str(f.applied),
                str(f.rejected),
                _local(clock, f.first_ms),
                _local(clock, f.last_ms),
                f.sha256[:16],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        sys.stdout.write(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
        )
    return EXIT_OK


IMPORT_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "import": _import,
    "imports": _imports,
}
