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

from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

from authsrv.processor import Processor
from authsrv.server import Server, WriterBusy, WriterStopped
from authsrv.store import Ledger

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


class DirectWriter:
    """Jobs in write transactions of the API's own (``authsrv api``), one at a time.

    Resource handling: at most ``queue_max`` jobs wait or run; each runs in a worker thread
    that is never abandoned (a job once started commits or aborts whole).
    """

    def __init__(self, processor: Processor, *, queue_max: int, wait_s: float) -> None:
        assert queue_max >= 1
        self.processor = processor
        self.wait_s = wait_s
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
        processor = self.processor
        now_ms = processor.clock_ms()
        try:
            with processor.store.write() as led:
                day = processor.day_boundary(led, now_ms)
                result = fn(led)
        except AssertionError:
            raise
        except Exception:
            processor.metrics.writer_jobs.labels("failed").inc()
            raise
        processor.day_committed(day)
        processor.metrics.writer_jobs.labels("committed").inc()
        return result
