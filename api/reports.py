"""Report downloads: the settlement reports (CSV), a closed day's net settlement (CSV) and its
clearing files (CSV or IPM), built by :mod:`settlement` from a read snapshot in a worker
thread, at most ``api.reports_concurrency_max`` at once.

A store key gets the reports that have a row per store (liability by store of sale, activity,
net settlement), cut to its own store's rows; the others (breakage, summary, clearing files)
are the back office's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from api.errors import ApiError, forbidden, invalid, not_found
from api.routing import CSV, OCTETS, Call, Reply
from authsrv.model import ApiRole
from settlement.clearing import clearing_file_stem
from settlement.day import DayError, parse_day
from settlement.ledger import closed_day, write_day_files
from settlement.net import NET_COLUMNS, build_net_report
from settlement.output import csv_bytes
from settlement.reports import (
    Report,
    activity_report,
    breakage_report,
    liability_report,
    summary_report,
)

__all__ = ["REPORT_KINDS", "clearing_file", "net_report", "report"]

T = TypeVar("T")
REPORT_KINDS = ("liability", "breakage", "activity", "summary")
# The column that names a row's store, in the reports a store key may fetch.
STORE_COLUMN = {"liability": "store_of_sale", "activity": "store_id"}
_NET_STORE = NET_COLUMNS.index("store_id")
_NET_SECTION = NET_COLUMNS.index("section")


def _day(text: str | None, name: str) -> str | None:
    if text is None:
        return None
    try:
        parse_day(text)
    except DayError as exc:
        raise invalid(f"{name}: {exc}", name) from None
    return text


async def _in_thread(call: Call, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread once a report slot is free (503 after the wait)."""
    ctx = call.ctx
    with trio.move_on_after(ctx.cfg.api.request_timeout_s) as waited:
        await ctx.report_slots.acquire()
    if waited.cancelled_caught:
        raise ApiError(
            503,
            "unavailable",
            f"{ctx.cfg.api.reports_concurrency_max} reports are being built; try again",
            headers={"Retry-After": "5"},
        )
    try:
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=False)
    except DayError as exc:
        raise not_found(str(exc)) from None
    finally:
        ctx.report_slots.release()


def _csv(name: str, data: bytes) -> Reply:
    return Reply(
        200, data, media=CSV, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _own_rows(
    rows: Sequence[Sequence[object]], column: int, store_id: str
) -> list[Sequence[object]]:
    return [r for r in rows if r[column] == store_id]


async def report(call: Call) -> Reply:
    kind: str = call.params["kind"]
    first = _day(call.params.get("from"), "from")
    last = _day(call.params.get("to"), "to")
    store_only = call.key.store_id if call.key.role is ApiRole.STORE else None
    if store_only is not None and kind not in STORE_COLUMN:
        raise forbidden(f"the {kind} report is the back office's")
    if kind == "liability" and (first or last):
        raise invalid("the liability report is as of now; from and to do not apply", "from")
    if first is not None and last is not None and first > last:
        raise invalid(f"from {first} is after to {last}", "from")
    builders: dict[str, Callable[..., Report]] = {
        "breakage": breakage_report,
        "activity": activity_report,
        "summary": summary_report,
    }

    def build() -> Report:
        with call.ctx.store.read() as led:
            if kind == "liability":
                return liability_report(led)
            return builders[kind](led, first, last)

    built = await _in_thread(call, build)
    rows: Sequence[Sequence[Any]] = built.rows
    if store_only is not None:
        rows = _own_rows(rows, built.columns.index(STORE_COLUMN[kind]), store_only)
    return _csv(built.file_name, csv_bytes(built.columns, rows))


async def net_report(call: Call) -> Reply:
    day = _day(call.params["day"], "day")
    assert day is not None
    store_only = call.key.store_id if call.key.role is ApiRole.STORE else None

    def build() -> list[tuple[object, ...]]:
        with call.ctx.store.read() as led:
            return build_net_report(led, day).csv_rows()

    rows: Sequence[Sequence[object]] = await _in_thread(call, build)
    if store_only is not None:
        rows = [r for r in _own_rows(rows, _NET_STORE, store_only) if r[_NET_SECTION] == "store"]
    return _csv(f"net-{day}.csv", csv_bytes(NET_COLUMNS, rows))


async def clearing_file(call: Call) -> Reply:
    """The day's clearing file as the host wrote it into ``settlement.dir`` (written there
    first when it is missing: the bytes depend on the ledger only)."""
    day = _day(call.params["day"], "day")
    assert day is not None
    fmt: str = call.params.get("format") or "csv"
    ctx = call.ctx
    directory = ctx.cfg.settlement_dir

    def find() -> Path:
        with ctx.store.read() as led:
            record, _index = closed_day(led, day)
        stem = clearing_file_stem(day, record.file_seq)
        if not (directory / f"{stem}.{fmt}.sha256").exists():
            write_day_files(ctx.store, directory, ctx.cfg.settlement.host_id, day)
        return directory / f"{stem}.{fmt}"

    path = await _in_thread(call, find)
    return Reply(
        200,
        media=CSV if fmt == "csv" else OCTETS,
        file=path,
        headers={"Content-Disposition": f'attachment; filename="{path.name}"'},
    )
