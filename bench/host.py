"""The processes the bench starts and measures: the host (``authsrv serve``) and the echo
server, each in a subprocess whose output goes to a log file; CPU time from ``/proc``.

Resource handling: :class:`Server` is a context manager; on exit it sends SIGTERM, waits for
the drain and kills what outlives it. The exit status is kept in ``returncode``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

from bench.provision import BenchError

__all__ = [
    "Server",
    "cpu_seconds",
    "every_process_cpu",
    "machine_cpu_seconds",
    "parse_writer_sample",
    "process_tree",
    "serve_supports_workers",
    "start_echo",
    "start_host",
    "writer_figures",
    "writer_sample",
]

STARTUP_TIMEOUT_S = 60.0  # a host on a large store opens it quickly; workers take longer
STOP_TIMEOUT_S = 30.0  # the host's drain (server.drain_timeout_s, 10 s) and some margin
POLL_S = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")
UTIME_AT, STIME_AT, PPID_AT = 11, 12, 1  # in /proc/PID/stat after the command name


class Server:
    """A server subprocess that logged ``{"event": "listening", "port": N}``."""

    def __init__(
        self, name: str, proc: subprocess.Popen[bytes], log_path: Path, log_offset: int
    ) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.log_offset = log_offset  # logs are appended to: earlier runs' lines come before
        self.port = 0
        self.metrics_url: str | None = None  # from a {"event": "metrics", "url": ...} line
        self.returncode: int | None = None

    def wait_listening(self) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"the {self.name} exited at start ({self.proc.returncode}); "
                    f"its log is {self.log_path}: {_tail(self.log_path)}"
                )
            with self.log_path.open("rb") as fh:
                fh.seek(self.log_offset)
                lines = fh.read().decode(errors="replace").splitlines()
            for raw in lines:
                if not raw.startswith("{"):
                    continue
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if event.get("event") == "metrics" and "worker" not in event:
                    self.metrics_url = str(event["url"])
                # With --workers each worker logs its own line; the supervisor's has no "worker".
                if event.get("event") == "listening" and "worker" not in event:
                    self.port = int(event["port"])
                    return self.port
            time.sleep(POLL_S)
        raise BenchError(f"the {self.name} did not start listening in time; see {self.log_path}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.returncode = self.proc.returncode
        return self.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _tail(path: Path, chars: int = 600) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-chars:].strip().replace("\n", " | ")


def _start(name: str, args: Sequence[str], log_path: Path, env: Mapping[str, str]) -> Server:
    with log_path.open("ab") as log_fh:
        offset = log_fh.tell()
        proc = subprocess.Popen(
            list(args), stdout=log_fh, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    server = Server(name, proc, log_path, offset)
    try:
        server.wait_listening()
    except BaseException:
        server.stop()
        raise
    return server


def serve_supports_workers() -> bool:
    """Whether this ``authsrv serve`` has ``--workers`` (asked at run time, not assumed)."""
    out = subprocess.run(
        [sys.executable, "-m", "authsrv", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--workers" in out.stdout


def start_host(
    data: Path,
    log_path: Path,
    *,
    log_requests: bool,
    workers: int,
    map_size_mib: int,
    demo_mode: bool,
    writer_nice: int = 0,
) -> Server:
    """``authsrv serve`` on 127.0.0.1, any free port, its metrics on 127.0.0.1 on another
    (read at the measured window's edges: :func:`writer_figures`); durability as configured
    (the store always commits with sync). ``demo_mode`` serves terminals without a security
    profile (``--security none``); with a profile the host runs as in production."""
    args = [sys.executable, "-m", "authsrv", "serve", "--data", str(data), "--port", "0"]
    if workers > 1:
        args += ["--workers", str(workers)]
    env = {
        "AUTHSRV_METRICS_ENABLED": "true",
        "AUTHSRV_METRICS_HOST": "127.0.0.1",
        "AUTHSRV_METRICS_PORT": "0",
        "AUTHSRV_LOG_REQUESTS": "true" if log_requests else "false",
        "AUTHSRV_STORE_MAP_SIZE_MIB": str(map_size_mib),
        "AUTHSRV_SECURITY_DEMO_MODE": "true" if demo_mode else "false",
        "AUTHSRV_STORE_WRITER_NICE": str(writer_nice),
    }
    return _start("host", args, log_path, env)


# The host's write figures, as sums and counts of its histograms (prometheus text format).
_WRITER_SERIES = (
    "authsrv_commit_batch_size_sum",
    "authsrv_commit_batch_size_count",
    "authsrv_commit_duration_seconds_sum",
    "authsrv_write_lock_wait_seconds_sum",
    "authsrv_write_lock_held_seconds_sum",
)
METRICS_TIMEOUT_S = 5.0


def writer_sample(url: str) -> dict[str, float] | None:
    """The host's write series now (None: its metrics could not be read). ``url`` is the one
    the host logged: plain HTTP on 127.0.0.1."""
    if not url.startswith("http://127.0.0.1:"):
        return None
    try:
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as resp:  # noqa: S310
            text = resp.read().decode()
    except (OSError, ValueError):
        return None
    return parse_writer_sample(text)


def parse_writer_sample(text: str) -> dict[str, float] | None:
    """The write series of a metrics page (None: one is missing, an older host)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _WRITER_SERIES:
                found[sample.name] = float(sample.value)
    return found if len(found) == len(_WRITER_SERIES) else None


def writer_figures(
    start: dict[str, float] | None, end: dict[str, float] | None, wall_s: float
) -> dict[str, float] | None:
    """What the host's writers did between two samples: commits per second, requests per
    commit, a batch's time in the writer (waiting for the write lock, deciding, committing
    with both syncs) and its wait for the lock alone, and the share of the window the lock
    was held (one lock for every worker: near 1, more workers cannot commit more)."""
    if start is None or end is None or wall_s <= 0:
        return None
    d = {name: end[name] - start[name] for name in _WRITER_SERIES}
    commits = d["authsrv_commit_batch_size_count"]
    if commits <= 0:
        return None
    return {
        "commits_per_s": round(commits / wall_s, 1),
        "requests_per_commit": round(d["authsrv_commit_batch_size_sum"] / commits, 2),
        "batch_ms": round(d["authsrv_commit_duration_seconds_sum"] * 1000 / commits, 3),
        "lock_wait_ms": round(d["authsrv_write_lock_wait_seconds_sum"] * 1000 / commits, 3),
        "lock_held_share": round(d["authsrv_write_lock_held_seconds_sum"] / wall_s, 3),
    }


def start_echo(log_path: Path) -> Server:
    return _start("echo server", [sys.executable, "-m", "bench.echo", "--port", "0"], log_path, {})


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def every_process_cpu() -> dict[int, tuple[str, float]]:
    """Every process's command name and CPU seconds (kernel threads included)."""
    result: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        result[int(entry)] = (name, (int(fields[UTIME_AT]) + int(fields[STIME_AT])) / CLK_TCK)
    return result


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (a host with workers is a supervisor and children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[PPID_AT]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User plus system CPU seconds of each process (all its threads); gone ones are left out."""
    result: dict[int, float] = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            result[pid] = (int(fields[UTIME_AT]) + int(fields[STIME_AT])) / CLK_TCK
    return result


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from ``/proc/stat``: busy is
    user, nice, system, irq and softirq (idle and I/O wait are not); steal is time the
    hypervisor gave to other guests."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    assert fields[0] == "cpu", fields[0]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK
