"""Running the generator processes and adding up what they measured.

Each client is a forked process (:func:`bench.generator.client_main`): forking shares the
card numbers with it instead of copying them through a pipe or a file. The parent prints one
progress line a second on stderr, samples the server's CPU time at the start and the end of
the measured window, and merges the clients' HdrHistograms and counters.

Resource handling: every client is joined; one that outlives the run by
``CLIENT_GRACE_S`` is killed and reported as failed.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

from bench.generator import ClientPlan, client_main, new_histogram
from bench.host import every_process_cpu, machine_cpu_seconds
from bench.provision import CardNumbers

__all__ = ["LoadResult", "run_clients"]

CLIENT_GRACE_S = 30.0  # beyond the run's end and its time-out, before a client counts as hung
POLL_S = 0.05
OTHERS_LISTED_MAX = 3  # the busiest other processes named in the report
OTHER_CORES_LISTED_MIN = 0.05
START_DELAY_S = 1.0  # from forking the clients to the first request (connect, templates)


@dataclass
class LoadResult:
    """One measured run (the host's or the echo server's), all clients added up."""

    label: str
    open_loop: bool
    connections: int
    clients: int
    duration_s: float
    rate_per_s: float  # open loop: the target
    sent: int = 0
    answered: int = 0
    timeouts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rc: Counter[tuple[str, str]] = field(default_factory=Counter)
    replays_differing: int = 0
    reversals_substituted: int = 0
    late_sends: int = 0
    connects: int = 0
    key_changes: int = 0
    hist: Any = field(default_factory=new_histogram)
    lag_hist: Any = None
    client_cpu_s: list[float] = field(default_factory=list)
    client_answered: list[int] = field(default_factory=list)
    client_wall_s: list[float] = field(default_factory=list)
    server_cpu_s: float | None = None
    machine_busy_s: float = 0.0  # every process on the machine, in the measured window
    machine_steal_s: float = 0.0
    others: list[tuple[str, float]] = field(default_factory=list)  # (command, CPU seconds)
    # The host's writers in the window, from its metrics (bench.host.writer_figures); None
    # for the echo server and a host the bench did not start.
    writer: dict[str, float] | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def achieved_per_s(self) -> float:
        return self.answered / self.duration_s

    @property
    def offered_per_s(self) -> float:
        return self.sent / self.duration_s

    def add(self, result: dict[str, Any]) -> None:
        self.sent += result["sent"]
        self.answered += result["answered"]
        self.timeouts += result["timeouts"]
        self.errors.update(result["errors"])
        for op, rc, n in result["rc"]:
            self.rc[(op, rc)] += n
        self.replays_differing += result["replays_differing"]
        self.reversals_substituted += result["reversals_substituted"]
        self.late_sends += result["late_sends"]
        self.connects += result["connects"]
        self.key_changes += result["key_changes"]
        self.hist.add(HdrHistogram.decode(result["histogram"]))
        if result["lag_histogram"] is not None:
            if self.lag_hist is None:
                self.lag_hist = new_histogram()
            self.lag_hist.add(HdrHistogram.decode(result["lag_histogram"]))
        self.client_cpu_s.append(result["cpu_s"])
        self.client_answered.append(result["answered"])
        self.client_wall_s.append(result["wall_s"])


class _Progress:
    """One stderr line a second from the clients' cumulative counters."""

    def __init__(self, label: str, clients: int, out: TextIO) -> None:
        self.label = label
        self.out = out
        self.latest: list[dict[str, Any]] = [{} for _ in range(clients)]
        self.printed: dict[str, int] = {}
        self.lat_sum = self.lat_n = self.lat_max = 0

    def update(self, client: int, data: dict[str, Any]) -> None:
        self.latest[client] = data
        self.lat_sum += data["latency_sum_us"]
        self.lat_n += data["latency_n"]
        self.lat_max = max(self.lat_max, data["latency_max_us"])

    def line(self, elapsed_s: float, phase: str, interval_s: float) -> None:
        totals: Counter[str] = Counter()
        for data in self.latest:
            for key in ("sent", "answered", "errors", "timeouts", "inflight"):
                totals[key] += data.get(key, 0)
        sent = totals["sent"] - self.printed.get("sent", 0)
        answered = totals["answered"] - self.printed.get("answered", 0)
        mean_ms = self.lat_sum / self.lat_n / 1000 if self.lat_n else 0.0
        self.out.write(
            f"[bench {self.label}] {elapsed_s:5.0f} s {phase:<8} sent {sent / interval_s:8,.0f}/s "
            f"answered {answered / interval_s:8,.0f}/s  latency mean {mean_ms:7.2f} ms "
            f"max {self.lat_max / 1000:7.2f} ms  in flight {totals['inflight']:5}  "
            f"errors {totals['errors']}  time-outs {totals['timeouts']}\n"
        )
        self.out.flush()
        self.printed = dict(totals)
        self.lat_sum = self.lat_n = self.lat_max = 0


def run_clients(
    plans: Sequence[ClientPlan],
    numbers: CardNumbers,
    result: LoadResult,
    *,
    server_cpu: Callable[[], dict[int, float]] | None,
    progress: TextIO = sys.stderr,
) -> LoadResult:
    """Fork one process per plan, follow them, fill ``result``. ``server_cpu`` samples the
    measured server's CPU seconds per process (None: nothing to measure)."""
    assert plans and all(p.start_at == plans[0].start_at for p in plans)
    first = plans[0]
    ctx = multiprocessing.get_context("fork")
    queue: Any = ctx.Queue()
    procs = [
        ctx.Process(target=client_main, args=(plan, numbers, queue), name=f"bench-client-{i}")
        for i, plan in enumerate(plans)
    ]
    for proc in procs:
        proc.start()
    m_start = first.start_at + first.warmup_s
    m_end = m_start + first.duration_s
    hard_end = m_end + first.timeout_s + CLIENT_GRACE_S
    samples: list[dict[int, float]] = []
    machine: list[tuple[float, float]] = []
    everyone: list[dict[int, tuple[str, float]]] = []
    tracker = _Progress(result.label, len(plans), progress)
    done: set[int] = set()
    next_tick = first.start_at + 1.0
    try:
        while len(done) < len(plans):
            now = time.time()
            if any(t <= now for t in (m_start, m_end)[len(samples) :]):
                samples.append(server_cpu() if server_cpu is not None else {})
                machine.append(machine_cpu_seconds())
                everyone.append(every_process_cpu())
            if now >= next_tick:
                phase = "warm-up" if now < m_start else "measured" if now < m_end else "drain"
                tracker.line(now - first.start_at, phase, 1.0)
                next_tick += 1.0
            if now > hard_end:
                for i, proc in enumerate(procs):
                    if i not in done:
                        result.failures.append(f"client {i} did not finish; killed")
                        proc.kill()
                        done.add(i)
                break
            try:
                client, kind, data = queue.get(timeout=POLL_S)
            except queue_module.Empty:
                for i, proc in enumerate(procs):
                    if i not in done and proc.exitcode is not None and queue.empty():
                        result.failures.append(
                            f"client {i} exited ({proc.exitcode}) without a result"
                        )
                        done.add(i)
                continue
            if kind == "progress":
                tracker.update(client, data)
            elif kind == "result":
                result.add(data)
                done.add(client)
            elif kind == "failed":
                result.failures.append(f"client {client} failed: {data['error']}")
                done.add(client)
    except BaseException:  # Ctrl-C or a bug here: the clients stop at once, not at their end
        for proc in procs:
            proc.kill()
        raise
    finally:
        for proc in procs:
            proc.join(timeout=CLIENT_GRACE_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
    while len(samples) < 2:  # a run that failed early ended before its samples came due
        samples.append(server_cpu() if server_cpu is not None else {})
        machine.append(machine_cpu_seconds())
        everyone.append(every_process_cpu())
    if server_cpu is not None:
        start, end = samples[0], samples[1]
        result.server_cpu_s = sum(end[pid] - start.get(pid, 0.0) for pid in end)
    result.machine_busy_s = machine[1][0] - machine[0][0]
    result.machine_steal_s = machine[1][1] - machine[0][1]
    ours = set(samples[1]) | {p.pid for p in procs} | {os.getpid()}
    before, after = everyone
    wall_s = max(m_end - m_start, 1e-9)
    others = [
        (name, cpu - before[pid][1])
        for pid, (name, cpu) in after.items()
        if pid not in ours and pid in before
    ]
    others.sort(key=lambda item: -item[1])
    result.others = [(name, cpu) for name, cpu in others if cpu / wall_s >= OTHER_CORES_LISTED_MIN][
        :OTHERS_LISTED_MAX
    ]
    return result
