"""``authsrv bench --stages REQUESTS``: where the CPU of one authorization goes, stage by stage.

The host's own code runs in the bench process, without sockets: a processor opened on a bench
store as ``authsrv serve`` opens it (demo mode, request log on unless ``--no-log-requests``,
metrics counted but not served), fed with the generator's requests (the same workload: mix,
card choice, retransmissions, reversals of approved redeems) in batches of ``--batch-size``, one
write transaction each, as the writer commits them. Per request it reports:

- **prepare**: what a connection's reader does before the writer (decode, validation, the
  terminal's security profile, keyed card hash, duplicate key and content MAC);
- **decide**: inside the write transaction, before its commit (duplicate check, engine,
  ledger reads and writes, duplicate record);
- **commit**: the commit with its page sync, and the meta page sync after it (wall time per
  batch, mostly waiting for the disk, and its CPU);
- **respond**: the answer built, encoded, logged and counted.

CPU is each stage's thread CPU (``time.thread_time``). The four stages leave out what the
network path costs (reading and writing sockets, trio's scheduling, the hand-over to the
writer thread): their sum is below the host CPU per authorization of a load run, and the
difference is that path.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.generator import REDEEMS, Workload, _Sent, _Terminal
from bench.provision import CardNumbers, Layout, map_size_mib_for
from bench.wire import Clock

__all__ = ["StageCosts", "run_stages"]

FRAME_HEADER_LEN = 2  # the generator's frames carry the 2-byte length header
WARMUP_BATCHES = 20  # before the measured requests


@dataclass(frozen=True, slots=True)
class StageCosts:
    requests: int
    batches: int
    batch_size: int
    prepare_us: float
    decide_us: float
    commit_cpu_us: float
    respond_us: float
    commit_ms_per_batch: float
    rc: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "batch_size": self.batch_size,
            "cpu_us_per_request": {
                "prepare": round(self.prepare_us, 1),
                "decide": round(self.decide_us, 1),
                "commit": round(self.commit_cpu_us, 1),
                "respond": round(self.respond_us, 1),
                "total": round(
                    self.prepare_us + self.decide_us + self.commit_cpu_us + self.respond_us, 1
                ),
            },
            "commit_ms_per_batch": round(self.commit_ms_per_batch, 3),
            "rc": dict(sorted(self.rc.items())),
        }


class _CommitTimer:
    """Wraps the store's ``write`` so that the commit is timed apart from the decisions made
    inside the transaction (the bench's own instance only)."""

    def __init__(self, store: Any) -> None:
        self._write = store.write
        self.commit_s = 0.0
        self.commit_cpu_s = 0.0
        store.write = self.write

    def reset(self) -> None:
        self.commit_s = self.commit_cpu_s = 0.0

    @contextmanager
    def write(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with self._write(*args, **kwargs) as led:
            yield led
            # The body is done: what follows is the commit and the meta page sync.
            wall, cpu = time.perf_counter(), time.thread_time()
        self.commit_s += time.perf_counter() - wall
        self.commit_cpu_s += time.thread_time() - cpu


def run_stages(
    data: Path,
    layout: Layout,
    numbers: CardNumbers,
    workload: Workload,
    requests: int,
    batch_size: int,
    log_requests: bool,
) -> StageCosts:
    """Run ``requests`` requests through the host's stages on the bench store at ``data``."""
    from authsrv.app import open_host
    from authsrv.config import load_config
    from authsrv.logs import configure_logging

    cfg = load_config(
        None,
        {},
        {
            "store.path": str(data),
            "store.map_size_mib": map_size_mib_for(layout.cards),
            "metrics.enabled": False,
            "security.demo_mode": True,
            "log.requests": log_requests,
        },
    )
    with open(os.devnull, "w") as sink:
        configure_logging("info", sink)
        try:
            host = open_host(cfg)
            try:
                return _run(host, layout, numbers, workload, requests, batch_size)
            finally:
                host.close()
        finally:
            # The sink closes: whatever is logged after it (the CLI's report of an error
            # raised here) goes to stderr.
            configure_logging("info", sys.stderr)


def _run(
    host: Any,
    layout: Layout,
    numbers: CardNumbers,
    workload: Workload,
    requests: int,
    batch_size: int,
) -> StageCosts:
    proc = host.processor
    timer = _CommitTimer(proc.store)
    terminals = [
        _Terminal(
            i, layout.terminal_id(i), layout.store_id(i % layout.stores), numbers, workload, 1
        )
        for i in range(layout.terminals)
    ]
    clock = Clock()
    rc: Counter[str] = Counter()
    sent_n = 0

    def one_batch(n: int) -> tuple[float, float, float, int]:
        """Send ``n`` requests through the stages: (prepare, decide, respond) thread CPU
        seconds and the commits made (0 when no request needed the writer)."""
        nonlocal sent_n
        sent: list[tuple[_Terminal, _Sent]] = []
        for k in range(n):
            term = terminals[(sent_n + k) % len(terminals)]
            sent.append((term, term.next_request(clock)))
        sent_n += n
        cpu = time.thread_time()
        pending = [proc.prepare(bytes(request.frame[FRAME_HEADER_LEN:])) for _t, request in sent]
        prepare = time.thread_time() - cpu
        decide = 0.0
        batch = [p for p in pending if p.needs_writer]
        if batch:
            commit_before = timer.commit_cpu_s
            cpu = time.thread_time()
            outcomes = proc.process_batch(batch)
            decide = time.thread_time() - cpu - (timer.commit_cpu_s - commit_before)
            for p, outcome in zip(batch, outcomes, strict=True):
                p.outcome = outcome
                p.done.set()
        cpu = time.thread_time()
        for p in pending:
            proc.respond(p)
        respond = time.thread_time() - cpu
        for (term, request), p in zip(sent, pending, strict=True):
            code = p.outcome.decision.rc if p.outcome is not None else "30"
            rc[code] += 1
            if request.op in REDEEMS and code == "00":
                term.remember_approved(request)
        return prepare, decide, respond, 1 if batch else 0

    # Warm-up, not counted: the first batches fault the store's pages in and fill caches.
    for _ in range(WARMUP_BATCHES):
        one_batch(batch_size)
    timer.reset()
    rc.clear()
    prepare_s = decide_s = respond_s = 0.0
    batches = measured = 0
    while measured < requests:
        n = min(batch_size, requests - measured)
        prepare, decide, respond, commits = one_batch(n)
        prepare_s, decide_s, respond_s = prepare_s + prepare, decide_s + decide, respond_s + respond
        batches += commits
        measured += n
    per = 1e6 / requests
    return StageCosts(
        requests=requests,
        batches=batches,
        batch_size=batch_size,
        prepare_us=prepare_s * per,
        decide_us=decide_s * per,
        commit_cpu_us=timer.commit_cpu_s * per,
        respond_us=respond_s * per,
        commit_ms_per_batch=timer.commit_s * 1000 / max(batches, 1),
        rc=dict(rc),
    )
