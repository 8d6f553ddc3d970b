"""The terminal server: trio, a reader and a sender task per connection, one group-commit writer.

Per connection a reader task splits frames and prepares requests; they are answered strictly in
the order they were read, by whoever completes the request at the head of the connection's
queue: the reader itself (an answer known at once: a format error, a failed MAC), or the writer
task right after a batch's commit, which writes the answers straight to a plain TCP socket. A
sender task per connection sends what the socket did not take at once, and every answer of a
TLS connection. At most ``inflight_per_connection_max`` + 1 requests of a connection wait to be
answered; when the window is full the reader stops reading and TCP pushes back on the terminal.

The writer decides in a worker thread, in one LMDB write transaction per batch: once the
transaction holds the write lock, it takes everything that has arrived, up to
``batch_size_max``, so that what came in while another worker's commit held the lock joins
this batch. It commits with sync; only then are the answers of that batch released (DESIGN §2).

Limits and what happens when one is reached:

- ``connections_max``: a further connection is accepted and closed at once (counted);
- ``frame_size_max_bytes``: a larger length header closes that connection (counted, logged);
- ``idle_timeout_s``: a connection that sends nothing for this long is closed;
- ``inflight_per_connection_max``: the reader waits; nothing is dropped;
- ``drain_timeout_s``: on SIGTERM the host stops accepting, answers what terminals have
  already sent (reading until a connection is quiet for ``DRAIN_QUIET_S``), and cuts whatever
  is left after this long.

TLS (``server.tls_cert_file`` and ``server.tls_key_file``): every listener is wrapped in a
``trio.SSLListener`` sharing one ``ssl.SSLContext`` per process (:func:`tls_context`). A
connection's handshake is its first step, bounded by ``TLS_HANDSHAKE_TIMEOUT_S``; one that fails
(plaintext, a version below ``server.tls_min_version``, no or a wrong client certificate) closes
that connection without an answer, counted in ``authsrv_tls_handshake_failures_total`` by reason
and logged once.

Write jobs (the HTTP API, docs/api.md): :meth:`Server.run_job` hands the writer a function of
the ledger; the writer runs it between batches in a write transaction of its own, which closes
a due business day first as a batch does, and commits it with sync before the caller gets its
result. An exception from the job aborts that transaction only and goes back to the caller; an
AssertionError stops the writer and the server (DESIGN §2). At most ``api.write_queue_max``
jobs wait at once, in slots of their own, so they never take the terminals' share of the queue.
"""

from __future__ import annotations

import os
import signal
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import trio

from authsrv.config import TLS_VERSIONS, Config, ServerConfig, load_tls_files
from authsrv.metrics import Metrics
from authsrv.processor import Pending, Processor
from authsrv.store import Ledger
from protocol.framing import FrameError, FrameReader, encode_frame
from protocol.messages import Unreadable
from settlement.clearing import ClearingFileError
from settlement.day import DayError
from settlement.ledger import days_without_files, write_day_files

__all__ = [
    "Server",
    "Service",
    "WriteJob",
    "WriterBusy",
    "WriterStopped",
    "tls_context",
]

RECEIVE_BYTES_MAX = 65_536
# While draining, a connection is closed once its terminal has sent nothing for this long.
DRAIN_QUIET_S = 0.2
# After a clearing file could not be written (a full disk, say): wait before trying again.
CLEARING_RETRY_S = 60.0
# A TLS handshake is two round trips: even a terminal on a slow mobile link completes it well
# within this; a slower one holds a connection slot that long at most (capped by idle_timeout_s).
TLS_HANDSHAKE_TIMEOUT_S = 10.0
# Closing a TLS connection sends close_notify, which waits while the peer does not read: the
# close is bounded by this, then the socket is closed anyway.
CLOSE_TIMEOUT_S = 1.0
# TLS 1.2 only: forward secrecy and AEAD. TLS 1.3 suites are all of that; OpenSSL's stay.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!PSK"
# OpenSSL reasons of a failed handshake -> the metric's reason label (a small fixed set; the
# rest is "other").
_HANDSHAKE_REASONS = {
    "UNSUPPORTED_PROTOCOL": "version",
    "WRONG_SSL_VERSION": "version",
    "VERSION_TOO_LOW": "version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "version",
    "WRONG_VERSION_NUMBER": "not_tls",
    "HTTP_REQUEST": "not_tls",
    "HTTPS_PROXY_REQUEST": "not_tls",
    "PACKET_LENGTH_TOO_LONG": "not_tls",
    "RECORD_LAYER_FAILURE": "not_tls",
    "UNEXPECTED_RECORD": "not_tls",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "certificate",
    "CERTIFICATE_VERIFY_FAILED": "certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "certificate",
    "NO_SHARED_CIPHER": "cipher",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "cipher",
    "NO_SHARED_GROUPS": "cipher",
}


T = TypeVar("T")


class _Closing:
    """Why one connection ends: the first cause set wins, and it is counted once, when the
    connection's handler returns (``authsrv_connections_closed_total{reason}``)."""

    __slots__ = ("cause",)

    def __init__(self) -> None:
        self.cause: str | None = None

    def set(self, cause: str) -> None:
        if self.cause is None:
            self.cause = cause


class _Connection:
    """One terminal connection: its requests waiting to be answered, in the order read, and
    the answers its socket has not taken yet. Used by the event loop's tasks only."""

    __slots__ = (
        "closed",
        "closing",
        "fd",
        "idle",
        "out",
        "queue",
        "scope",
        "sender",
        "sending",
        "space",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream, closing: _Closing) -> None:
        self.stream = stream
        self.closing = closing
        self.fd = _plain_socket(stream)  # None: TLS, every answer goes through the sender
        self.queue: deque[Pending] = deque()
        self.out = bytearray()  # answers for the sender task to send, in order
        self.sending = False  # the sender task is inside send_all
        self.closed = False  # no answer may be written any more (the socket may be reused)
        self.scope = trio.CancelScope()  # the connection's tasks
        self.sender = trio.lowlevel.ParkingLot()  # the sender waits here for output
        self.space = trio.lowlevel.ParkingLot()  # the reader waits here while the window is full
        self.idle = trio.lowlevel.ParkingLot()  # the handler waits here for the last answer

    @property
    def answered(self) -> bool:
        return not self.queue and not self.out and not self.sending


# A request on its way to the writer, with the connection its answer goes to.
_Queued = tuple[_Connection, Pending]


class WriterStopped(Exception):
    """The writer is stopping or has stopped: the job did not run, nothing was written."""


class WriterBusy(Exception):
    """Every write-job slot stayed taken while the caller waited: the job did not run."""


class WriteJob:
    """A state change from outside the terminal path: ``fn`` runs in the writer thread inside a
    write transaction of its own; ``done`` is set after its commit (or its failure)."""

    __slots__ = ("done", "error", "finished", "fn", "result")

    def __init__(self, fn: Callable[[Ledger], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False  # committed, or failed and aborted (set in the writer thread)
        self.done = trio.Event()


class Service(Protocol):
    """Another listener served inside :meth:`Server.run` (the HTTP API): bound before it runs,
    told to stop when the drain begins, and waited for before the writer closes, so that what
    it submitted is committed and answered."""

    async def bind(self) -> None: ...

    async def run(
        self, stop: trio.Event, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None: ...


def tls_context(s: ServerConfig) -> ssl.SSLContext:
    """The server side of TLS for the terminal listener (one per process: not picklable).

    Error handling: :class:`~authsrv.config.ConfigError` when a file cannot be loaded.
    """
    assert s.tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[s.tls_min_version]
    ctx.set_ciphers(TLS12_CIPHERS)
    # Compression leaks plaintext lengths (CRIME); renegotiation is a DoS lever nobody needs.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    load_tls_files(ctx, s)
    return ctx


def _handshake_reason(exc: trio.BrokenResourceError) -> tuple[str, str | None]:
    """The metric label and OpenSSL's reason for a failed handshake (never bytes received)."""
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
        return "eof", None
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason
        return _HANDSHAKE_REASONS.get(reason or "", "other"), reason
    # The transport broke: the peer reset or closed the connection mid-handshake.
    return "eof", None


def _plain_socket(stream: trio.abc.Stream) -> int | None:
    """The socket of a plain TCP connection, for the fast paths below (None: TLS)."""
    return stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None


async def _receive_plain(fd: int) -> bytes:
    """What a plain TCP connection has sent (b"" at its end), waiting for it first.

    trio's ``receive_some`` tries a read before it waits, which on a terminal's connection
    nearly always fails (a terminal sends its next request after the answer to the last one):
    a system call and an exception per request saved. A connection closed by another task
    raises ``trio.ClosedResourceError``; a reset, ``OSError``.
    """
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, RECEIVE_BYTES_MAX)
        except BlockingIOError:
            continue  # readable was a false alarm


def _send_plain(fd: int, frame: bytes) -> int:
    """Send what the socket takes at once (an answer nearly always fits), without trio's
    checkpoints; the caller sends the rest with ``send_all``. A broken connection raises
    ``trio.BrokenResourceError``, as ``send_all`` would."""
    try:
        return os.write(fd, frame)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise trio.BrokenResourceError(f"socket send failed: {exc.strerror}") from None


class Server:
    """Resource handling: owns its listeners, connection tasks, writer task and channels; all
    of them end inside :meth:`run`, which returns after a drain.

    Error handling: operating errors of a connection (bad frames, a peer that vanishes) close
    that connection only; an exception from the writer (a broken invariant) ends :meth:`run`.
    """

    def __init__(
        self,
        cfg: Config,
        processor: Processor,
        metrics: Metrics,
        log: Any,
        *,
        clearing_files: bool = True,
    ) -> None:
        self.cfg = cfg
        # Whether this process writes closed days' clearing files (one worker of several).
        self.clearing_files = clearing_files and cfg.settlement.auto_cutover
        self.processor = processor
        self.metrics = metrics
        self.log = log
        self.port: int | None = None
        self._open = 0
        self._draining = False
        self._stop = trio.Event()
        self._listeners: list[trio.SocketListener] = []
        self._tls = tls_context(cfg.server) if cfg.server.tls else None
        self._idle_scopes: set[trio.CancelScope] = set()
        # Requests for the writer, appended by the readers and taken by the writer thread once
        # it holds the write lock (deque's append and popleft are atomic). Bounded by the
        # windows: every connection has at most inflight_per_connection_max + 1 waiting.
        self._arrived: deque[_Queued] = deque()
        # Set when a request or a job arrives, or the writer is closed: the writer loop waits
        # on a fresh one whenever it has nothing to do.
        self._work = trio.Event()
        # Write jobs wait in slots of their own (see run_job), in a channel of their own.
        self._job_slots = trio.Semaphore(cfg.api.write_queue_max)
        self._writer_closed = False
        self._jobs_running: list[WriteJob] = []
        self._services: list[Service] = []
        self._writer_send, self._writer_recv = trio.open_memory_channel[WriteJob](
            cfg.api.write_queue_max
        )

    async def bind(self) -> list[trio.SocketListener]:
        """Open the listening sockets (before :meth:`run`, so that a taken port is an OSError
        of its own rather than one inside the server's task group)."""
        s = self.cfg.server
        self._listeners = await trio.open_tcp_listeners(s.port, host=s.host)
        self.port = int(self._listeners[0].socket.getsockname()[1])
        for service in self._services:
            await service.bind()
        return self._listeners

    def add_service(self, service: Service) -> None:
        """Serve ``service`` beside the terminals (before :meth:`run`)."""
        self._services.append(service)

    @property
    def services(self) -> tuple[Service, ...]:
        return tuple(self._services)

    def use_listeners(self, listeners: list[trio.SocketListener]) -> None:
        """Serve on sockets opened elsewhere (a worker's SO_REUSEPORT listener)."""
        assert listeners
        self._listeners = listeners
        self.port = int(listeners[0].socket.getsockname()[1])

    def request_stop(self) -> None:
        """Begin the drain (what SIGTERM does)."""
        self._stop.set()

    async def run(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        s = self.cfg.server
        listeners = self._serving(self._listeners or await self.bind())
        async with trio.open_nursery() as outer:
            writer_done = trio.Event()
            outer.start_soon(self._writer_loop, writer_done)
            if self.clearing_files:
                outer.start_soon(self._clearing_loop)
            if handle_signals:
                outer.start_soon(self._watch_signals)
            # The services watch _stop themselves; their nursery ends when each has drained,
            # before the writer closes, so that their last jobs commit.
            async with trio.open_nursery() as services:
                for service in self._services:
                    await service.bind()  # a no-op when bind() did it
                    await services.start(service.run, self._stop)
                with trio.CancelScope() as hard:
                    async with trio.open_nursery() as conns:
                        accept = trio.CancelScope()
                        conns.start_soon(self._accept, listeners, conns, accept)
                        self.log.info(
                            "listening",
                            host=s.host,
                            port=self.port,
                            framing=s.framing,
                            connections_max=s.connections_max,
                            inflight_per_connection_max=s.inflight_per_connection_max,
                            frame_size_max_bytes=s.frame_size_max_bytes,
                            idle_timeout_s=s.idle_timeout_s,
                            batch_size_max=self.cfg.store.batch_size_max,
                            writer_nice=self.cfg.store.writer_nice,
                            **s.transport(),
                        )
                        assert self.port is not None  # set by bind()
                        task_status.started(self.port)
                        await self._stop.wait()
                        self.log.info("draining", connections=self._open)
                        self._draining = True
                        accept.cancel()
                        # Readers go on reading what terminals already sent until the line has
                        # been quiet for DRAIN_QUIET_S; the hard deadline bounds it all.
                        quiet_until = trio.current_time() + DRAIN_QUIET_S
                        for scope in list(self._idle_scopes):
                            scope.deadline = min(scope.deadline, quiet_until)
                        hard.deadline = trio.current_time() + s.drain_timeout_s
            if hard.cancelled_caught:
                self.log.warning("drain_timeout", drain_timeout_s=s.drain_timeout_s)
            self._writer_closed = True
            await self._writer_send.aclose()
            self._work.set()
            await writer_done.wait()
            outer.cancel_scope.cancel()
        self.log.info("stopped")

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.log.info("signal", signal=signal.Signals(signum).name)
                self.request_stop()

    def _serving(
        self, listeners: list[trio.SocketListener]
    ) -> list[trio.abc.Listener[trio.abc.Stream]]:
        """The listeners connections are accepted from: TLS ones when TLS is configured (the
        single-process and the SO_REUSEPORT worker sockets alike)."""
        if self._tls is None:
            return list(listeners)
        return [trio.SSLListener(ls, self._tls, https_compatible=False) for ls in listeners]

    async def _accept(
        self,
        listeners: list[trio.abc.Listener[trio.abc.Stream]],
        conns: trio.Nursery,
        scope: trio.CancelScope,
    ) -> None:
        with scope:
            try:
                await trio.serve_listeners(self._handle, listeners, handler_nursery=conns)
            finally:
                for listener in listeners:
                    await listener.aclose()

    # -- writer -----------------------------------------------------------------------------
    async def run_job(self, fn: Callable[[Ledger], T], wait_s: float) -> T:
        """Run ``fn(ledger)`` in the writer, in a write transaction of its own that is
        committed with sync before this returns ``fn``'s result.

        Error handling: what ``fn`` raised (its transaction aborted, nothing of it written);
        :class:`WriterBusy` when no job slot came free within ``wait_s``; :class:`WriterStopped`
        when the server is stopping. Once the job is queued, the wait for it is shielded: a
        caller that gives up must not lose the answer to a change that commits.
        """
        if self._writer_closed:
            raise WriterStopped("the host is stopping")
        with trio.move_on_after(wait_s) as waited:
            await self._job_slots.acquire()
        if waited.cancelled_caught:
            raise WriterBusy(f"the writer has {self.cfg.api.write_queue_max} jobs waiting")
        try:
            job = WriteJob(fn)
            try:
                # Never blocks: the slots keep the jobs within the channel's size.
                self._writer_send.send_nowait(job)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise WriterStopped("the host is stopping") from None
            self._work.set()
            with trio.CancelScope(shield=True):
                await job.done.wait()
        finally:
            self._job_slots.release()
        if job.error is not None:
            raise job.error
        result: T = job.result
        return result

    async def _writer_loop(self, done: trio.Event) -> None:
        sweep_every_s = self.cfg.store.sweep_interval_s
        next_sweep = trio.current_time()
        try:
            async with self._writer_recv:
                try:
                    while True:
                        if trio.current_time() >= next_sweep:
                            await trio.to_thread.run_sync(
                                self.processor.sweep, abandon_on_cancel=False
                            )
                            next_sweep = trio.current_time() + sweep_every_s
                        # A fresh event before looking: what arrives after the look sets it.
                        self._work = trio.Event()
                        if self._arrived:
                            await self._decide_arrived()
                        jobs: list[WriteJob] = []
                        closed = False
                        while True:
                            try:
                                jobs.append(self._writer_recv.receive_nowait())
                            except trio.WouldBlock:
                                break
                            except trio.EndOfChannel:
                                closed = True
                                break
                        if jobs:
                            await self._jobs(jobs)
                        elif closed and not self._arrived:
                            return
                        elif not self._arrived:
                            with trio.move_on_at(next_sweep):
                                await self._work.wait()
                finally:
                    self._fail_jobs()
        finally:
            done.set()

    async def _decide_arrived(self) -> None:
        """One batch of requests in one write transaction. The writer thread takes the batch
        once it holds the write lock, so that what arrived while it waited for the lock
        (another worker's commit) is decided in this commit, not the next. Once the batch has
        committed, its answers are written here, connection by connection, without waking a
        task per request."""
        arrived, batch_max = self._arrived, self.cfg.store.batch_size_max
        taken: list[_Queued] = []

        def take() -> list[Pending]:
            while arrived and len(taken) < batch_max:
                taken.append(arrived.popleft())
            return [pending for _conn, pending in taken]

        outcomes = await trio.to_thread.run_sync(
            self.processor.process_batch, [], take, abandon_on_cancel=False
        )
        assert len(outcomes) == len(taken)
        for (_conn, pending), outcome in zip(taken, outcomes, strict=True):
            pending.outcome = outcome
            pending.done.set()
        for conn in dict.fromkeys(conn for conn, _pending in taken):
            self._answer(conn)

    async def _jobs(self, jobs: list[WriteJob]) -> None:
        """The jobs, one write transaction each, between batches."""
        self._jobs_running = jobs
        await trio.to_thread.run_sync(self._run_jobs, jobs, abandon_on_cancel=False)
        self._jobs_running = []
        for job in jobs:
            job.done.set()

    def _run_jobs(self, jobs: list[WriteJob]) -> None:
        """In the writer thread: each job in a write transaction of its own (committed with
        sync), which first closes a due business day as a batch does, so that every transfer
        belongs to exactly one day."""
        processor = self.processor
        for job in jobs:
            now_ms = processor.clock_ms()
            try:
                with processor.writing() as led:
                    day = processor.day_boundary(led, now_ms)
                    job.result = job.fn(led)
            except AssertionError:
                raise  # a broken invariant: nothing of it committed; the server stops
            except Exception as exc:
                job.error = exc
                job.finished = True
                self.metrics.writer_jobs.labels("failed").inc()
                continue
            job.finished = True
            processor.day_committed(day)
            self.metrics.writer_jobs.labels("committed").inc()

    def _fail_jobs(self) -> None:
        """The writer ends: every job still waiting (or cut off by a broken invariant) gets
        an answer, so that no caller waits for ever."""
        self._writer_closed = True
        left = list(self._jobs_running)
        self._jobs_running = []
        while True:
            try:
                left.append(self._writer_recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        for job in left:
            if not job.finished:
                job.error = WriterStopped("the writer stopped before the job committed")
            job.done.set()

    async def _clearing_loop(self) -> None:
        """Write the clearing files of every closed day that lacks them (after a cut-over, or
        after a restart that interrupted one), in a thread, from a read snapshot."""
        st = self.cfg.settlement
        directory = self.cfg.settlement_dir
        every_s = self.cfg.store.sweep_interval_s
        while True:
            try:
                missing = await trio.to_thread.run_sync(
                    days_without_files, self.processor.store, directory
                )
                for day in missing:
                    files = await trio.to_thread.run_sync(
                        write_day_files, self.processor.store, directory, st.host_id, day
                    )
                    self.metrics.clearing_files_written.inc()
                    self.log.info(
                        "clearing_files_written",
                        day=day,
                        records=files.records,
                        file=str(files.paths.ipm),
                    )
            except (OSError, ClearingFileError, DayError) as exc:
                self.log.error("clearing_files_failed", error=str(exc), retry_in_s=CLEARING_RETRY_S)
                await trio.sleep(CLEARING_RETRY_S)
            await trio.sleep(every_s)

    # -- connections ------------------------------------------------------------------------
    async def _handle(self, stream: trio.abc.Stream) -> None:
        s = self.cfg.server
        if self._draining or self._open >= s.connections_max:
            self.metrics.connections_refused.inc()
            self.log.warning(
                "connection_refused",
                connections=self._open,
                connections_max=s.connections_max,
                draining=self._draining,
            )
            # Forcefully: a graceful TLS close would first wait for the handshake.
            await trio.aclose_forcefully(stream)
            return
        self._open += 1
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        closing = _Closing()
        conn: _Connection | None = None
        try:
            if isinstance(stream, trio.SSLStream) and not await self._handshake(stream, closing):
                return
            conn = _Connection(stream, closing)
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_out, conn)
                    await self._read(conn)
                    # Every request read is answered before the connection closes.
                    while not conn.answered:
                        await conn.idle.park()
                    nursery.cancel_scope.cancel()  # the sender's wait
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            closing.set("peer")
        except* Exception:
            # Nothing a connection does may end the host (DESIGN §2); the writer's broken
            # invariants stop it from the writer task, not from here.
            self.log.exception("connection_failed")
            closing.set("internal")
        finally:
            if conn is not None:
                conn.closed = True
            self._open -= 1
            self.metrics.connections.dec()
            # "eof": the terminal closed it; "drain": the host's stop ended it.
            self.metrics.connections_closed.labels(closing.cause or "eof").inc()
            # Shielded from the drain's deadline, bounded by its own (TLS sends close_notify).
            with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await stream.aclose()

    async def _handshake(self, stream: trio.SSLStream[Any], closing: _Closing) -> bool:
        """Complete the TLS handshake; False (counted and logged) when it fails.

        Error handling: a failure is the peer's (plaintext, an old version, no certificate) and
        closes this connection only; nothing of what it sent is logged.
        """
        if self._draining:
            timeout_s = DRAIN_QUIET_S
        else:
            timeout_s = min(TLS_HANDSHAKE_TIMEOUT_S, self.cfg.server.idle_timeout_s)
        reason, ssl_reason = "timeout", None
        with trio.move_on_after(timeout_s) as scope:
            self._idle_scopes.add(scope)
            try:
                await stream.do_handshake()
                return True
            except trio.BrokenResourceError as exc:
                reason, ssl_reason = _handshake_reason(exc)
            finally:
                self._idle_scopes.discard(scope)
        if scope.cancelled_caught and self._draining:
            closing.set("drain")
            return False  # cut by the drain, not the terminal's fault
        self.metrics.tls_handshake_failures.labels(reason).inc()
        closing.set("tls_handshake")
        self.log.warning("tls_handshake_failed", reason=reason, ssl_reason=ssl_reason)
        return False

    async def _read(self, conn: _Connection) -> None:
        s = self.cfg.server
        reader = FrameReader(self.cfg.framing, s.frame_size_max_bytes)
        stream, fd, closing, queue = conn.stream, conn.fd, conn.closing, conn.queue
        # The requests a connection may have waiting for their answers (see __init__).
        window = s.inflight_per_connection_max + 1
        while True:
            timeout_s = DRAIN_QUIET_S if self._draining else s.idle_timeout_s
            with trio.move_on_after(timeout_s) as idle:
                self._idle_scopes.add(idle)
                try:
                    if fd is None:
                        data = await stream.receive_some(RECEIVE_BYTES_MAX)
                    else:
                        data = await _receive_plain(fd)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    # The terminal reset the connection (e.g. it hung up after a
                    # time-out with an answer unread): this connection ends, no other.
                    closing.set("peer")
                    return
                finally:
                    self._idle_scopes.discard(idle)
            if idle.cancelled_caught:
                if self._draining:
                    closing.set("drain")
                else:
                    self._closed(closing, "idle", buffered=reader.buffered)
                return
            if not data:
                return
            try:
                # bytes() of bytes is the same object; an SSLStream is typed bytearray too.
                frames = reader.feed(bytes(data))
            except FrameError as exc:
                self._closed(closing, "frame", reason=exc.reason)
                return
            for frame in frames:
                if conn.closed:
                    return  # an answer could not be given (see _fail): read nothing more
                try:
                    pending = self.processor.prepare(frame)
                except Unreadable as exc:
                    self._closed(closing, "unreadable", reason=str(exc))
                    return
                except Exception:
                    # A parsing bug must not take the host down: close this connection
                    # and log the error (the traceback holds no message bytes).
                    self.log.exception("prepare_failed")
                    self._closed(closing, "internal")
                    return
                # Waits while the window is full: TCP back-pressure on the terminal.
                while len(queue) >= window:
                    await conn.space.park()
                queue.append(pending)
                if pending.needs_writer:
                    self._arrived.append((conn, pending))
                    self._work.set()
                else:
                    self._answer(conn)
            if reader.error is not None:
                self._closed(closing, "frame", reason=reader.error.reason)
                return

    def _closed(self, closing: _Closing, cause: str, **details: Any) -> None:
        closing.set(cause)
        self.log.warning("connection_closed", cause=cause, **details)

    def _answer(self, conn: _Connection) -> None:
        """Answer the finished requests at the head of ``conn``'s queue, in order: build, log
        and count each (``Processor.respond``), then write them to a plain socket at once, or
        leave them to the connection's sender (TLS, a socket that did not take them all, or
        answers before them still being sent)."""
        queue = conn.queue
        if conn.closed or not queue or not queue[0].done.is_set():
            return
        framing = self.cfg.framing
        frames = []
        while queue and queue[0].done.is_set():
            pending = queue.popleft()
            try:
                frames.append(encode_frame(self.processor.respond(pending), framing))
            except Exception:
                self.log.exception("respond_failed")
                self._fail(conn, "internal")
                return
        conn.space.unpark_all()
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        sent = 0
        if conn.fd is not None and not conn.out and not conn.sending:
            try:
                sent = _send_plain(conn.fd, data)
            except trio.BrokenResourceError:
                self._fail(conn, "peer")
                return
        if sent < len(data):
            conn.out += data[sent:]
            conn.sender.unpark_all()
        elif conn.answered:
            conn.idle.unpark_all()

    def _fail(self, conn: _Connection, cause: str) -> None:
        """End a connection from outside its tasks (the writer answering it found it broken)."""
        if cause == "internal":
            self._closed(conn.closing, cause)
        else:
            conn.closing.set(cause)
        conn.closed = True
        conn.queue.clear()
        conn.scope.cancel()

    async def _send_out(self, conn: _Connection) -> None:
        """The connection's sender: what the socket did not take at once, and every answer of a
        TLS connection, in order."""
        while True:
            while not conn.out:
                await conn.sender.park()
            data = bytes(conn.out)
            conn.out.clear()
            conn.sending = True
            try:
                await conn.stream.send_all(data)
            finally:
                conn.sending = False
            if conn.answered:
                conn.idle.unpark_all()
