"""How the API changes the store: through one writer, whichever process it runs in.

A write is a function of the ledger (``fn(led) -> result``) run inside one write transaction
and committed with sync before :meth:`Writer.write` returns its result; an exception from it
aborts that transaction only and comes back to the caller. Endpoints see only :class:`Writer`:

- :class:`ServerWriter` when the API runs inside ``authsrv serve``: the job goes to the
  server's writer loop (:meth:`authsrv.server.Server.run_job`), between the terminals' batches;
- :class:`DirectWriter` for the standalone ``authsrv api``: ``store.write()`` in a worker
  thread, one job at a time; LMDB's write lock serialises it with a host serving the store.

Either closes a due business day in the job's transaction first, as the host's batches do, so
that every transfer belongs to exactly one day.

Error handling: :class:`WriterUnavailable` (answered 503) when the job did not run: the writer
is stopping, or every slot stayed taken for ``wait_s``. An AssertionError (a broken
invariant) is not caught: it stops the host (DESIGN §2).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

from authsrv.metrics import Metrics
from authsrv.server import Server, WriterBusy, WriterStopped
from authsrv.store import Ledger, LedgerStore
from settlement.day import DayClock, close_open_day, cutover_due

__all__ = ["DirectWriter", "ServerWriter", "Writer", "WriterUnavailable"]

T = TypeVar("T")


class WriterUnavailable(Exception):
    """The write did not run (nothing changed); the message says why."""


class Writer(Protocol):
    async def write(self, fn: Callable[[Ledger], T]) -> T:
        """Run ``fn`` in a write transaction; its result once committed (see the module)."""
        ...


class ServerWriter:
    """Jobs through the terminal server's writer loop (``authsrv serve``)."""

    def __init__(self, server: Server, *, wait_s: float) -> None:
        self.server = server
        self.wait_s = wait_s

    async def write(self, fn: Callable[[Ledger], T]) -> T:
        try:
            return await self.server.run_job(fn, self.wait_s)
        except (WriterBusy, WriterStopped) as exc:
            raise WriterUnavailable(str(exc)) from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class DirectWriter:
    """Jobs in write transactions of the API's own (``authsrv api``), one at a time.

    Resource handling: at most ``queue_max`` jobs wait or run; each runs in a worker thread
    that is never abandoned (a job once started commits or aborts whole).
    """

    def __init__(
        self,
        store: LedgerStore,
        metrics: Metrics,
        *,
        queue_max: int,
        wait_s: float,
        day_clock: DayClock | None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        assert queue_max >= 1
        self.store = store
        self.metrics = metrics
        self.wait_s = wait_s
        self.day_clock = day_clock
        self.clock_ms = clock_ms
        self.queue_max = queue_max
        self._slots = trio.Semaphore(queue_max)
        self._one = trio.Lock()

    async def write(self, fn: Callable[[Ledger], T]) -> T:
        with trio.move_on_after(self.wait_s) as waited:
            await self._slots.acquire()
        if waited.cancelled_caught:
            raise WriterUnavailable(f"the writer has {self.queue_max} jobs waiting")
        try:
            async with self._one:
                return await trio.to_thread.run_sync(self._run, fn, abandon_on_cancel=False)
        finally:
            self._slots.release()

    def _run(self, fn: Callable[[Ledger], T]) -> T:
        try:
            with self.store.write() as led:
                if self.day_clock is not None:
                    close_due_day(led, self.day_clock, self.clock_ms())
                result = fn(led)
        except AssertionError:
            raise
        except Exception:
            self.metrics.writer_jobs.labels("failed").inc()
            raise
        self.metrics.writer_jobs.labels("committed").inc()
        return result


def close_due_day(led: Ledger, clock: DayClock, now_ms: int) -> None:
    """Close the open business day in ``led``'s transaction when its cut-over time has come
    (what the host's first commit after that time does)."""
    due, _ends_ms = cutover_due(led, clock, now_ms)
    if due:
        close_open_day(led, clock, now_ms, how="auto")
