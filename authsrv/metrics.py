"""Prometheus metrics (prometheus.io naming: ``authsrv_`` prefix, base units, ``_total``).

No card, terminal or STAN labels: label values come from small fixed sets (MTI, response code,
field number, reason). Each server owns its registry so tests can run several in one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from authsrv.store import LockTimes

__all__ = ["Metrics"]

_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_COMMIT_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    """Resource handling: in a worker process (prometheus-client multiprocess mode) values go to
    shared files that the supervisor sums; gauges then say how to combine processes."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "authsrv_requests_total",
            "Requests answered, by request MTI and response code",
            ["mti", "rc"],
            registry=r,
        )
        # requests.labels(mti, rc) per answer costs about 1.3 µs more than its child kept here.
        # As many entries as the counter has label sets (request MTIs times response codes).
        self._requests_by: dict[tuple[str, str], Any] = {}
        self.latency = Histogram(
            "authsrv_request_duration_seconds",
            "From the last byte of a request read to its answer written",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.connections = Gauge(
            "authsrv_connections",
            "Open terminal connections",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_total = Counter(
            "authsrv_connections_accepted_total", "Terminal connections accepted", registry=r
        )
        self.connections_refused = Counter(
            "authsrv_connections_refused_total",
            "Connections closed at once because connections_max was reached",
            registry=r,
        )
        self.connections_closed = Counter(
            "authsrv_connections_closed_total",
            "Connections ended, once each, by reason: eof (the terminal closed it), peer (reset "
            "or broken), idle, frame, unreadable, tls_handshake, drain, internal",
            ["reason"],
            registry=r,
        )
        self.tls_handshake_failures = Counter(
            "authsrv_tls_handshake_failures_total",
            "TLS handshakes that failed, closing the connection unanswered, by reason "
            "(version, not_tls, certificate, cipher, eof, timeout, other)",
            ["reason"],
            registry=r,
        )
        self.format_errors = Counter(
            "authsrv_format_errors_total",
            "Requests answered 30, by the field named in 44",
            ["field"],
            registry=r,
        )
        self.batch_size = Histogram(
            "authsrv_commit_batch_size",
            "Requests decided in one write transaction",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_duration = Histogram(
            "authsrv_commit_duration_seconds",
            "One batch: decide every request, write, commit with sync",
            buckets=_COMMIT_BUCKETS_S,
            registry=r,
        )
        # One write lock for every process of the host: the sum of these over all workers,
        # as a rate, is the share of the time the lock was held (near 1: more workers cannot
        # commit more; docs/performance.md, "The write lock").
        self.write_lock_wait = Histogram(
            "authsrv_write_lock_wait_seconds",
            "One write transaction of the writer (a batch, a sweep or an API job): waiting for "
            "LMDB's write lock, held by another worker or an administrative command",
            buckets=_COMMIT_BUCKETS_S,
            registry=r,
        )
        self.write_lock_held = Histogram(
            "authsrv_write_lock_held_seconds",
            "One write transaction of the writer (a batch, a sweep or an API job): holding "
            "LMDB's write lock, from its start to its commit's data sync",
            buckets=_COMMIT_BUCKETS_S,
            registry=r,
        )
        self.store_errors = Counter(
            "authsrv_store_errors_total",
            "Batches that could not commit, by reason",
            ["reason"],
            registry=r,
        )
        # In multiprocess mode the supervisor reports the store size itself.
        self.store_size = (
            None
            if self.multiprocess
            else Gauge("authsrv_store_size_bytes", "Bytes used in the LMDB map", registry=r)
        )
        self.store_map_size = (
            None
            if self.multiprocess
            else Gauge(
                "authsrv_store_map_size_bytes",
                "The LMDB map size (store.map_size_mib)",
                registry=r,
            )
        )

        self.duplicates = Counter(
            "authsrv_duplicates_total",
            "Requests whose duplicate key was known: replay, mismatch (94), tombstone (05)",
            ["verdict"],
            registry=r,
        )
        self.advice_exceptions = Counter(
            "authsrv_advice_exceptions_total",
            "Advices accepted although they break a rule, by kind (below_zero, ...)",
            ["kind"],
            registry=r,
        )
        self.security_failures = Counter(
            "authsrv_security_failures_total",
            "Requests refused with 63, by reason (mac_mismatch, ksn_stale, no_profile, ...)",
            ["reason"],
            registry=r,
        )
        self.key_changes = Counter(
            "authsrv_key_changes_total", "Working keys given to terminals (0800 70=101)", registry=r
        )
        self.cards_rekeyed = Counter(
            "authsrv_cards_rekeyed_total",
            "Cards moved to the current card-number hash key on use",
            registry=r,
        )
        self.pin_failures = Counter(
            "authsrv_pin_failures_total",
            "Requests declined for the PIN: wrong (55) or tries exceeded (75)",
            ["rc"],
            registry=r,
        )
        self.holds_expired = Counter(
            "authsrv_holds_expired_total", "Holds released by the expiry sweep", registry=r
        )
        self.business_days_closed = Counter(
            "authsrv_business_days_closed_total",
            "Business days closed by this host's automatic cut-over (empty skipped days too)",
            registry=r,
        )
        self.business_day = Gauge(
            "authsrv_business_day",
            "The open business day as the number YYYYMMDD (after the last cut-over seen)",
            registry=r,
            multiprocess_mode="max",
        )
        self.clearing_files_written = Counter(
            "authsrv_clearing_files_written_total",
            "Clearing files (IPM, CSV and digests) written for closed business days",
            registry=r,
        )
        self.cards_expired = Counter(
            "authsrv_cards_expired_total",
            "Cards the sweep set to expired after their expiry month",
            registry=r,
        )
        self.breakage = Counter(
            "authsrv_breakage_minor_total",
            "Value moved from expired cards to breakage, in minor units, by breakage account",
            ["account"],
            registry=r,
        )
        self.batches_closed = Counter(
            "authsrv_batches_closed_total",
            "Terminal batches closed by a 0500, by response code: 00 in balance, 95 out of balance",
            ["rc"],
            registry=r,
        )
        self.dupes_pruned = Counter(
            "authsrv_duplicate_records_pruned_total",
            "Duplicate records removed after the duplicate window",
            registry=r,
        )
        self.dupes_stored = Gauge(
            "authsrv_duplicate_records",
            "Duplicate records kept (at the last sweep)",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.dupes_oldest_age = Gauge(
            "authsrv_duplicate_records_oldest_age_seconds",
            "Age of the oldest duplicate record kept (at the last sweep)",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.dupes_window = Gauge(
            "authsrv_duplicate_window_seconds",
            "How long duplicate records are kept (store.dup_window_s)",
            registry=r,
            multiprocess_mode="max",
        )
        self.writer_jobs = Counter(
            "authsrv_writer_jobs_total",
            "HTTP API write jobs run by the writer, by outcome (committed, failed)",
            ["outcome"],
            registry=r,
        )
        self.api_requests = Counter(
            "authsrv_api_requests_total",
            "HTTP API requests answered, by operation and status code",
            ["operation", "status"],
            registry=r,
        )
        self.api_rate_limited = Counter(
            "authsrv_api_rate_limited_total",
            "Self-service requests refused by a rate limit, by bucket (client, card, full)",
            ["bucket"],
            registry=r,
        )

    def lock_times(self, times: LockTimes) -> None:
        """Count one committed write transaction's wait for the write lock and its hold."""
        self.write_lock_wait.observe(times.wait_s)
        self.write_lock_held.observe(times.held_s)

    def count_request(self, mti: str, rc: str) -> None:
        """One answered request: ``requests.labels(mti, rc).inc()``."""
        child = self._requests_by.get((mti, rc))
        if child is None:
            child = self._requests_by[(mti, rc)] = self.requests.labels(mti, rc)
        child.inc()

    def watch_store_size(self, size_fn: Callable[[], float], map_size_bytes: int) -> None:
        if self.store_size is not None and self.store_map_size is not None:
            self.store_size.set_function(size_fn)
            self.store_map_size.set(map_size_bytes)

    def serve(self, host: str, port: int) -> int:
        """Expose ``/metrics`` over HTTP in a background thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
