"""Several server processes on one port and one store (``server.workers``).

The supervisor reserves the port, starts ``workers`` processes (spawned, so that none inherits
an open LMDB environment) and waits. Each worker binds the same port with SO_REUSEPORT (the
kernel spreads connections over them) and runs a whole server: its own readers, responders
and group-commit writer, on the one LMDB environment. LMDB's write lock lets one writer commit
at a time, so the rules of DESIGN §2 hold across processes: a request is decided inside a
write transaction that sees every commit before it, and answered only after its own commit.
What the workers add is a second core for framing, validation, encoding and logging.

Metrics: the workers write prometheus-client's multiprocess files; the supervisor serves their
sum on ``metrics.port``, plus the store size.

Lifecycle: SIGTERM or SIGINT to the supervisor is passed to every worker, which drains as a
single server does; the supervisor exits 0 when all did. A worker that exits on its own (a
broken invariant stops it, DESIGN §2) makes the supervisor stop the others and exit 1.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import trio

from authsrv.config import Config

__all__ = ["reuseport_listener", "run_supervisor"]

WORKER_START_TIMEOUT_S = 60
POLL_S = 0.2
LISTEN_BACKLOG = 1024
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


async def reuseport_listener(host: str, port: int) -> trio.SocketListener:
    """A listening socket that shares its port with the other workers' (SO_REUSEPORT)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
        await sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) so that port 0 becomes a fixed port for every worker and no
    other program takes it while the supervisor runs; connections go to listening sockets."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _worker_main(cfg: Config, index: int, ready: multiprocessing.connection.Connection) -> None:
    """One worker: a whole server on the shared port (runs in a spawned process)."""
    from authsrv.app import open_host
    from authsrv.logs import configure_logging

    # Ctrl-C reaches the whole process group; the supervisor decides, the worker drains on
    # the SIGTERM it forwards.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(cfg.log.level)
    host = open_host(cfg, worker=index)

    async def main() -> None:
        listeners = [await reuseport_listener(cfg.server.host, cfg.server.port)]
        # The server wraps them in TLS (server.tls_*) with its own context: an SSLContext
        # cannot cross the process boundary, so each worker builds one in open_host().
        host.server.use_listeners(listeners)
        ready.send(index)
        ready.close()
        await host.server.run(handle_signals=True)

    try:
        trio.run(main)
    finally:
        host.close()


class _StoreSize:
    """Collector for the supervisor: the store file's size (workers' gauges cannot report a
    function of their own in multiprocess mode)."""

    def __init__(self, data_file: Path, map_size_bytes: int) -> None:
        self.data_file = data_file
        self.map_size_bytes = map_size_bytes

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            size = float(self.data_file.stat().st_size)
        except FileNotFoundError:
            size = 0.0
        yield GaugeMetricFamily("authsrv_store_size_bytes", "Bytes of the LMDB file", value=size)
        yield GaugeMetricFamily(
            "authsrv_store_map_size_bytes",
            "The LMDB map size (store.map_size_mib)",
            value=float(self.map_size_bytes),
        )


def run_supervisor(cfg: Config, log: Any) -> int:
    """Run ``cfg.server.workers`` worker processes until SIGTERM/SIGINT; the exit status."""
    workers = cfg.server.workers
    assert workers > 1
    reservation = _reserve_port(cfg.server.host, cfg.server.port)
    port = int(reservation.getsockname()[1])
    cfg.server.port = port
    metrics_dir = tempfile.mkdtemp(prefix="authsrv-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("signal", signal=signal.Signals(signum).name)
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    ctx = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    try:
        receivers = []
        for index in range(workers):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_worker_main, args=(cfg, index, send), name=f"authsrv-worker-{index}"
            )
            proc.start()
            send.close()
            procs.append(proc)
            receivers.append(recv)
        if not _wait_ready(receivers, procs):
            log.error("workers_failed_to_start", workers=workers)
            _stop_all(procs, cfg)
            return 1
        metrics_port = _serve_metrics(cfg, metrics_dir)
        if metrics_port is not None:
            log.info("metrics", url=f"http://{cfg.metrics.host}:{metrics_port}/metrics")
        log.info(
            "listening", host=cfg.server.host, port=port, workers=workers, **cfg.server.transport()
        )
        while not stopping:
            ended = [p for p in procs if not p.is_alive()]
            if ended:
                log.error(
                    "worker_exited",
                    worker=procs.index(ended[0]),
                    exitcode=ended[0].exitcode,
                )
                _stop_all(procs, cfg)
                return 1
            multiprocessing.connection.wait([p.sentinel for p in procs], timeout=POLL_S)
        log.info("draining", workers=workers)
        codes = _stop_all(procs, cfg)
        log.info("stopped", exitcodes=codes)
        return 0 if all(code == 0 for code in codes) else 1
    finally:
        for leftover in procs:
            if leftover.is_alive():
                leftover.kill()
        reservation.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.environ.pop(METRICS_DIR_ENV, None)


def _wait_ready(
    receivers: list[multiprocessing.connection.Connection], procs: list[BaseProcess]
) -> bool:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    pending = list(receivers)
    while pending:
        if any(not p.is_alive() for p in procs) or time.monotonic() > deadline:
            return False
        for conn in multiprocessing.connection.wait(pending, timeout=POLL_S):
            assert isinstance(conn, multiprocessing.connection.Connection)
            with contextlib.suppress(EOFError):
                conn.recv()
            pending.remove(conn)
    return True


def _stop_all(procs: list[BaseProcess], cfg: Config) -> list[int | None]:
    """SIGTERM every live worker (each drains), then wait; kill what outlives the drain."""
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + cfg.server.drain_timeout_s + 5
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
    return [proc.exitcode for proc in procs]


def _serve_metrics(cfg: Config, metrics_dir: str) -> int | None:
    if not cfg.metrics.enabled:
        return None
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    registry.register(_StoreSize(cfg.data_path / "data.mdb", cfg.store.map_size_mib << 20))
    server, _thread = start_http_server(cfg.metrics.port, addr=cfg.metrics.host, registry=registry)
    return int(server.server_port)
