"""What every request handler may use: the configuration, the store, the key store, the
writer, the processor (web-shop loads go through its engine), the rate limits and the limits
on concurrent work.

Resource handling: owns nothing that needs closing; the store and the key store belong to the
caller (``authsrv api`` or the host).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from api.ratelimit import TokenBuckets
from api.writer import Writer
from authsrv.config import Config
from authsrv.metrics import Metrics
from authsrv.processor import Processor
from authsrv.store import LedgerStore
from keys import KeyStore

__all__ = ["ApiContext", "api_context", "issue_dir"]

ISSUE_DIR_NAME = "card-issue"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def issue_dir(cfg: Config) -> Path:
    """Where issue requests write card files: ``api.issue_dir``, else ``card-issue`` beside
    the store directory."""
    if cfg.api.issue_dir:
        return Path(cfg.api.issue_dir)
    return cfg.data_path.absolute().parent / ISSUE_DIR_NAME


@dataclass(eq=False)
class ApiContext:
    cfg: Config
    store: LedgerStore
    keys: KeyStore
    writer: Writer
    # Decides web-shop loads inside writer jobs (the host's own processor inside `serve`).
    processor: Processor
    metrics: Metrics
    log: Any
    client_buckets: TokenBuckets
    card_buckets: TokenBuckets
    report_slots: trio.Semaphore
    clock_ms: Callable[[], int] = _now_ms
    inflight: int = 0
    # Set when a handler met a broken invariant: the API (and the host it runs in) stops.
    fatal: trio.Event = field(default_factory=trio.Event)

    @property
    def issue_dir(self) -> Path:
        return issue_dir(self.cfg)


def api_context(
    cfg: Config,
    store: LedgerStore,
    keys: KeyStore,
    writer: Writer,
    processor: Processor,
    metrics: Metrics,
    log: Any,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> ApiContext:
    a = cfg.api
    return ApiContext(
        cfg=cfg,
        store=store,
        keys=keys,
        writer=writer,
        processor=processor,
        metrics=metrics,
        log=log,
        client_buckets=TokenBuckets(
            burst=a.self_client_burst,
            per_min=a.self_client_per_min,
            buckets_max=a.rate_buckets_max,
            clock=clock,
        ),
        card_buckets=TokenBuckets(
            burst=a.self_card_burst,
            per_min=a.self_card_per_min,
            buckets_max=a.rate_buckets_max,
            clock=clock,
        ),
        report_slots=trio.Semaphore(a.reports_concurrency_max),
    )
