"""Serving the API: hypercorn's trio worker on a socket bound here, inside ``authsrv serve``
(a :class:`authsrv.server.Service` of the terminal server) or alone (``authsrv api``).

Why hypercorn and Starlette: hypercorn is an ASGI server with a native trio worker (no asyncio
loop beside the host's), HTTP/1.1 over h11, TLS; Starlette routes and parses requests on
AnyIO, which runs on trio. Both are well kept and small.

Limits (``[api]``): ``request_timeout_s`` also bounds how long a client may take to send a
request (hypercorn's read timeout); ``keep_alive_timeout_s`` closes idle connections; request
headers are at most ``HEADERS_BYTES_MAX``; ``requests_inflight_max`` bounds requests handled at
once (:mod:`api.app`). Hypercorn has no cap on connections: an idle one costs a socket and a
few KiB until its keep-alive time-out; put the API behind a proxy that caps connections where
that matters.

Lifecycle: ``stop`` (the host's drain, or SIGTERM for ``authsrv api``) stops accepting and
lets requests in flight finish for up to ``server.drain_timeout_s``. A broken invariant met by
a handler (``ctx.fatal``) stops the API with :class:`InvariantBroken`, and the host with it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import ssl
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from api.app import build_app
from api.context import ApiContext, api_context
from api.writer import DirectWriter, ServerWriter
from authsrv.config import TLS_VERSIONS, ApiConfig, Config, ConfigError, load_api_tls
from authsrv.metrics import Metrics
from authsrv.server import TLS12_CIPHERS, Server
from authsrv.store import LedgerStore
from keys import KeyStore

__all__ = ["ApiService", "InvariantBroken", "api_tls_context", "host_service", "run_standalone"]

LISTEN_BACKLOG = 128
HEADERS_BYTES_MAX = 16 * 1024
# Hypercorn's WSGI body limit; unused (the app is ASGI), given for completeness.
WSGI_BODY_MAX = 1024 * 1024


class InvariantBroken(Exception):
    """A handler met a broken invariant (logged as invariant_broken): the API stops."""


def api_tls_context(a: ApiConfig) -> ssl.SSLContext:
    """The API's TLS server context: the terminal listener's floor and ciphers, HTTP/1.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[a.tls_min_version]
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    load_api_tls(ctx, a)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class _HyperConfig(HyperConfig):
    """Hypercorn's settings, with the TLS context made here (hypercorn's own has no floor)."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        super().__init__()
        self._tls = tls

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._tls


class _ToStructlog(logging.Handler):
    """Hypercorn's own warnings and errors as structured log lines."""

    def __init__(self, log: Any) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.warning("http_server", detail=record.getMessage(), level=record.levelname)


class ApiService:
    """Resource handling: owns its listening socket (closed when :meth:`run` ends) and the
    hypercorn tasks inside :meth:`run`."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.app = build_app(ctx)
        self.port: int | None = None
        self._sock: socket.socket | None = None
        a = ctx.cfg.api
        self._tls = api_tls_context(a) if a.tls_cert_file else None

    async def bind(self) -> None:
        """Open the listening socket (once).

        Error handling: :class:`ConfigError` naming the address when it cannot be had.
        """
        if self._sock is not None:
            return
        a = self.ctx.cfg.api
        family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((a.host, a.port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on api.host {a.host} api.port {a.port}: {exc.strerror}; "
                "choose another api.port"
            ) from None
        self._sock = sock
        self.port = int(sock.getsockname()[1])

    def _config(self) -> HyperConfig:
        cfg = self.ctx.cfg
        hc = _HyperConfig(self._tls)
        hc.accesslog = None  # one line per request comes from api.app
        error_log = logging.getLogger("authsrv.api.http")
        error_log.handlers = [_ToStructlog(self.ctx.log)]
        error_log.propagate = False
        hc.errorlog = error_log
        hc.keep_alive_timeout = float(cfg.api.keep_alive_timeout_s)
        hc.read_timeout = cfg.api.request_timeout_s
        hc.graceful_timeout = float(cfg.server.drain_timeout_s)
        hc.h11_max_incomplete_size = HEADERS_BYTES_MAX
        hc.include_server_header = False
        hc.alpn_protocols = ["http/1.1"]
        return hc

    async def run(
        self, stop: trio.Event, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until ``stop`` is set, then drain (see the module)."""
        await self.bind()
        sock = self._sock
        assert sock is not None and self.port is not None
        tls = self._tls is not None
        sockets = Sockets(
            secure_sockets=[sock] if tls else [],
            insecure_sockets=[] if tls else [sock],
            quic_sockets=[],
        )
        app = wrap_app(cast(Any, self.app), WSGI_BODY_MAX, "asgi")
        watching = trio.CancelScope()
        a = self.ctx.cfg.api
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_fatal, watching)
                await nursery.start(self._serve, app, sockets, stop, watching)
                self.ctx.log.info(
                    "api_listening",
                    host=a.host,
                    port=self.port,
                    transport="tls" if tls else "plaintext",
                    requests_inflight_max=a.requests_inflight_max,
                    body_size_max_bytes=a.body_size_max_bytes,
                    write_queue_max=a.write_queue_max,
                )
                task_status.started(self.port)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            self._sock = None
        self.ctx.log.info("api_stopped")

    async def _serve(
        self,
        app: Any,
        sockets: Sockets,
        stop: trio.Event,
        watching: trio.CancelScope,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await worker_serve(
                app,
                self._config(),
                sockets=sockets,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        finally:
            watching.cancel()

    async def _watch_fatal(self, watching: trio.CancelScope) -> None:
        with watching:
            await self.ctx.fatal.wait()
            raise InvariantBroken("a broken invariant stopped the API (see invariant_broken)")


def host_service(
    cfg: Config, store: LedgerStore, keys: KeyStore, metrics: Metrics, log: Any, server: Server
) -> ApiService:
    """The API inside ``authsrv serve``: its writes go through ``server``'s writer loop."""
    writer = ServerWriter(server, wait_s=cfg.api.request_timeout_s)
    return ApiService(api_context(cfg, store, keys, writer, server.processor, metrics, log))


def run_standalone(cfg: Config) -> int:
    """``authsrv api``: the API alone on the store, until SIGTERM or SIGINT (exit 0).

    Error handling: :class:`ConfigError`, :class:`authsrv.store.StoreError`,
    :class:`keys.KeyStoreError` (one line, exit 2, from the CLI).
    """
    from authsrv.app import make_processor, open_keys, open_store
    from authsrv.logs import configure_logging, get_logger

    configure_logging(cfg.log.level)
    log = get_logger().bind(process="api")
    store = open_store(cfg.data_path, cfg.store.map_size_mib)
    try:
        keys = open_keys(store)
        metrics = Metrics()
        processor = make_processor(cfg, store, keys, metrics, log)
        writer = DirectWriter(
            processor, queue_max=cfg.api.write_queue_max, wait_s=cfg.api.request_timeout_s
        )
        service = ApiService(api_context(cfg, store, keys, writer, processor, metrics, log))
        trio.run(partial(_until_signal, service, log))
    finally:
        store.close()
    return 0


async def _until_signal(service: ApiService, log: Any) -> None:
    await service.bind()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, stop, log)
        await service.run(stop)
        nursery.cancel_scope.cancel()


async def _watch_signals(stop: trio.Event, log: Any) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal", signal=signal.Signals(signum).name)
            stop.set()
