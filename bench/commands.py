"""``authsrv bench``: the command line and the run (provision, host, load, echo, report)."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_bench_parser", "cmd_bench"]

from simulators.security import PROFILES

EXIT_OK = 0
EXIT_FAILED = 1  # an SLO was violated, or the run found a problem (host, ledger, client)
EXIT_USAGE = 2
DEFAULT_MIX = "redeem=70,balance=15,load=10,reversal=5"
DEFAULT_TERMINALS = 64
DEFAULT_CARDS = 100_000
DEFAULT_STORES = 8
DEFAULT_SEED = 1
DEFAULT_BALANCE_MINOR = 50_000  # 500.00 on every card
CLIENTS_MAX = 64
# --stages: about what each commit of two workers carries at 64 terminals (docs/performance.md).
DEFAULT_STAGE_BATCH = 18
INFLIGHT_MAX = 64  # open loop, per connection (the host reads 16 ahead; the rest waits in TCP)


def add_bench_parser(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        sub,
        "bench",
        "measure the host: its own host on a provisioned store (or --port), closed or open "
        "loop, latency from HdrHistogram, host and generator CPU, echo baseline",
        [
            "authsrv bench                                    # closed loop, 64 terminals, 10 s",
            "authsrv bench --closed 64 --duration 10 --echo   # and the echo baseline ratio",
            "authsrv bench --rate 2000 --poisson --duration 30 --slo p99_ms=10,min_rate=1900",
            "authsrv bench --cards 1000000 --data /tmp/b1m --provision-only",
            "authsrv bench --data /tmp/b1m --hot 0.8:0.01 --clients 2 --json",
            "authsrv bench --port 8583 --data /tmp/b1m --server-pid 4242   # a host run by hand",
            "authsrv bench --echo-only --closed 64",
            "authsrv bench --security dukpt-aes --closed 64 --duration 10",
            "authsrv bench --provision-only --data /tmp/b1m --security mac-aes  # before a host",
        ],
        cmd_bench,
        store_args=False,
    )
    g = p.add_argument_group("load")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument(
        "--closed", type=int, metavar="N", help="closed loop with N terminals (default, 64)"
    )
    mode.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="open loop: R requests/s over --terminals; latency runs from the intended send time",
    )
    g.add_argument("--poisson", action="store_true", help="open loop: Poisson arrivals")
    g.add_argument(
        "--terminals",
        type=int,
        default=DEFAULT_TERMINALS,
        help=f"terminals, one connection each, unless --closed N says ({DEFAULT_TERMINALS})",
    )
    g.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    g.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (2)")
    g.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (5)")
    g.add_argument(
        "--clients", type=int, default=1, help="generator processes, to get past one core (1)"
    )
    g.add_argument(
        "--inflight-max",
        type=int,
        default=INFLIGHT_MAX,
        help=f"open loop: requests in flight per connection ({INFLIGHT_MAX})",
    )
    w = p.add_argument_group("workload")
    w.add_argument("--mix", default=DEFAULT_MIX, help=f"operation shares ({DEFAULT_MIX})")
    w.add_argument(
        "--retransmit-share",
        type=float,
        default=0.02,
        help="share of requests sent again unchanged, a replay (0.02)",
    )
    w.add_argument(
        "--distribution", choices=["uniform", "hot"], default=None, help="card choice (uniform)"
    )
    w.add_argument(
        "--hot",
        default=None,
        metavar="REQ:CARDS",
        help="hot cards: share of requests on a share of the cards (0.8:0.01 with 'hot')",
    )
    w.add_argument("--seed", type=int, default=None, help="card numbers and choices (1)")
    w.add_argument(
        "--security",
        choices=PROFILES,
        default="none",
        help="the terminals' security profile: none (the host runs in demo mode), mac-tdes, "
        "mac-aes (a key change per connection, then MACs), dukpt-tdes, dukpt-aes (a counter "
        "step and key derivation per request); requests and answers are MACed (none)",
    )
    w.add_argument(
        "--pin-share",
        type=float,
        default=0.0,
        help="with --security: share of redeems that carry the card's PIN as a PIN block, "
        "reported as redeem+pin (0)",
    )
    s = p.add_argument_group("store and host")
    s.add_argument("--cards", type=int, default=None, help=f"cards ({DEFAULT_CARDS:,})")
    s.add_argument("--stores", type=int, default=None, help=f"stores ({DEFAULT_STORES})")
    s.add_argument("--balance", default=None, help="balance of every card (500.00)")
    s.add_argument(
        "--data",
        type=Path,
        default=None,
        help="bench store to create or reuse, and keep (default: a temporary one)",
    )
    s.add_argument("--provision-only", action="store_true", help="provision --data and stop")
    s.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the ledger check on the store after the run (on)",
    )
    s.add_argument(
        "--log-requests",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the host logs one line per request, as in production (on)",
    )
    s.add_argument(
        "--host-processes",
        type=int,
        default=1,
        help="host processes (passed as serve --workers where serve has it) (1)",
    )
    s.add_argument(
        "--writer-nice",
        type=int,
        default=0,
        metavar="N",
        help="the bench's host decides and commits at this nice value (store.writer_nice, "
        "-20..0; below 0 needs CAP_SYS_NICE) (0)",
    )
    s.add_argument("--host", default=None, help="a running host's address (with --port)")
    s.add_argument("--port", type=int, default=None, help="a running host's port")
    s.add_argument(
        "--server-pid",
        default=None,
        metavar="PID[,PID...]",
        help="with --port: the host's processes, to measure their CPU",
    )
    o = p.add_argument_group("baseline and report")
    o.add_argument(
        "--echo",
        action="store_true",
        help="also run the echo baseline: the same client and connections, closed loop, "
        "against a server that returns each frame (after the main run)",
    )
    o.add_argument("--echo-only", action="store_true", help="only the echo baseline")
    o.add_argument(
        "--clearing",
        type=int,
        default=None,
        metavar="RECORDS",
        help="instead of authorizations: fill one business day to RECORDS clearing records "
        "(the cards' activations, then redeems, loads, refunds, reversals posted to the "
        "ledger), close it, and time writing and verifying its clearing files",
    )
    o.add_argument(
        "--stages",
        type=int,
        default=None,
        metavar="REQUESTS",
        help="instead of a load run: send REQUESTS requests of the workload through the "
        "host's code in this process, without sockets, and report the CPU of each stage "
        "(prepare, decide, commit, respond) per request",
    )
    o.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_STAGE_BATCH,
        help=f"--stages: requests per write transaction ({DEFAULT_STAGE_BATCH})",
    )
    o.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    o.add_argument(
        "--slo",
        default=None,
        metavar="KEY=V[,...]",
        help="p99_ms=10,min_rate=5000 (also p50_ms p90_ms p999_ms max_ms max_errors "
        "max_timeouts): exit 1 when violated",
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.provision import BenchError

    # SIGTERM unwinds like Ctrl-C: the host the bench started is stopped, the clients killed
    # and a temporary store removed, instead of leaving them behind.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args)
    except BenchError as exc:
        sys.stderr.write(f"authsrv bench: error: {exc}\n")
        return EXIT_USAGE
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _parse_mix(text: str) -> dict[str, float]:
    from bench.provision import BenchError
    from bench.report import parse_pairs
    from bench.wire import OPS

    try:
        weights = parse_pairs(text, "--mix", OPS)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    for op, weight in weights.items():
        if weight < 0:
            raise BenchError(f"--mix {op}: a weight cannot be negative")
    total = sum(weights.values())
    if total <= 0:
        raise BenchError("--mix needs a positive weight")
    return {op: w / total for op, w in weights.items() if w > 0}


def _workload(
    args: argparse.Namespace,
    mix: dict[str, float],
    hot: tuple[float, float],
    seed: int,
    pin_share: float,
) -> Any:
    """The generator's workload, for a load run and for ``--stages`` alike."""
    from bench.generator import Workload

    return Workload(
        mix=mix,
        hot_requests=hot[0],
        hot_cards=hot[1],
        retransmit_share=args.retransmit_share,
        seed=seed,
        pin_share=pin_share,
    )


def _parse_hot(args: argparse.Namespace) -> tuple[float, float]:
    from bench.provision import BenchError

    if args.distribution == "uniform":
        if args.hot is not None:
            raise BenchError("--hot goes with --distribution hot, not uniform")
        return 0.0, 0.0
    if args.hot is None:
        return (0.8, 0.01) if args.distribution == "hot" else (0.0, 0.0)
    req, sep, cards = args.hot.partition(":")
    try:
        hot = float(req), float(cards)
    except ValueError:
        hot = (-1.0, -1.0)
    if not sep or not (0 < hot[0] <= 1 and 0 < hot[1] <= 1):
        raise BenchError("--hot must be REQUESTS:CARDS shares, e.g. 0.8:0.01")
    return hot


def _check_args(args: argparse.Namespace) -> None:
    from bench.provision import BenchError

    if args.closed is not None and not 1 <= args.closed <= 10_000:
        raise BenchError("--closed must be between 1 and 10000 terminals")
    if not 1 <= args.terminals <= 10_000:
        raise BenchError("--terminals must be between 1 and 10000")
    if args.rate is not None and not 0 < args.rate <= 1_000_000:
        raise BenchError("--rate must be above 0 and at most 1000000 requests/s")
    if args.poisson and args.rate is None:
        raise BenchError("--poisson goes with --rate (open loop)")
    if not 0 < args.duration <= 86_400 or not 0 <= args.warmup <= 3600:
        raise BenchError("--duration must be 0-86400 s (above 0), --warmup 0-3600 s")
    if not 0 < args.timeout <= 600:
        raise BenchError("--timeout must be above 0 and at most 600 s")
    if not 1 <= args.clients <= CLIENTS_MAX:
        raise BenchError(f"--clients must be between 1 and {CLIENTS_MAX}")
    if not 1 <= args.inflight_max <= 10_000:
        raise BenchError("--inflight-max must be between 1 and 10000")
    if not 0 <= args.retransmit_share < 1:
        raise BenchError("--retransmit-share must be at least 0 and below 1")
    if not 1 <= args.host_processes <= 64:
        raise BenchError("--host-processes must be between 1 and 64")
    if not -20 <= args.writer_nice <= 0:
        raise BenchError("--writer-nice must be between -20 and 0")
    if args.writer_nice and args.port is not None:
        raise BenchError(
            "--writer-nice sets the bench's own host; set a running host's "
            "store.writer_nice in its configuration"
        )
    if args.echo and args.echo_only:
        raise BenchError("--echo-only already is the echo baseline; give one of them")
    if args.host is not None and args.port is None:
        raise BenchError("--host goes with --port (a running host)")
    if args.server_pid is not None and args.port is None:
        raise BenchError("--server-pid goes with --port (the bench measures its own host)")
    if args.port is not None and args.provision_only:
        raise BenchError("--provision-only prepares a store for a host; it takes no --port")
    if args.provision_only and args.data is None:
        raise BenchError("--provision-only needs --data DIR (where the store is kept)")
    if args.security != "none" and args.port is not None and args.data is None:
        raise BenchError(
            f"--security {args.security} with --port needs --data DIR (the bench store, whose "
            "terminal keys the bench holds)"
        )
    if not 0 <= args.pin_share <= 1:
        raise BenchError("--pin-share must be between 0 and 1")
    if args.pin_share and args.security == "none":
        raise BenchError("--pin-share needs --security: a PIN block travels under a PIN key")
    if args.security != "none" and args.echo_only:
        raise BenchError("--echo-only sends no authorizations: it takes no --security")


def _layout(args: argparse.Namespace, terminals: int) -> Any:
    from bench.provision import BenchError, Layout
    from protocol.currency import parse_major

    balance: int | None = None
    if args.balance is not None:
        try:
            balance = parse_major(args.balance, "978")
        except ValueError as exc:
            raise BenchError(f"--balance: {exc}") from None
    # A bench store remembers its layout: what is not given comes from there, else defaults.
    saved = Layout.load(args.data) if args.data is not None else None
    return Layout(
        cards=args.cards if args.cards is not None else saved.cards if saved else DEFAULT_CARDS,
        seed=args.seed if args.seed is not None else saved.seed if saved else DEFAULT_SEED,
        stores=args.stores
        if args.stores is not None
        else saved.stores
        if saved
        else DEFAULT_STORES,
        terminals=max(terminals, saved.terminals if saved else 0),
        balance_minor=balance
        if balance is not None
        else saved.balance_minor
        if saved
        else DEFAULT_BALANCE_MINOR,
    )


def _server_pids(text: str | None) -> list[int]:
    from bench.provision import BenchError

    if not text:
        return []
    try:
        pids = [int(p) for p in text.split(",")]
    except ValueError:
        raise BenchError("--server-pid takes PID[,PID...]") from None
    for pid in pids:
        if not Path(f"/proc/{pid}/stat").exists():
            raise BenchError(f"--server-pid {pid}: no such process on this machine")
    return pids


def _say(text: str) -> None:
    sys.stderr.write(f"[bench] {text}\n")
    sys.stderr.flush()


def _run(args: argparse.Namespace) -> int:
    from authsrv.storefs import durability, filesystem_of
    from bench.clients import LoadResult, run_clients
    from bench.generator import ClientPlan
    from bench.host import (
        cpu_seconds,
        process_tree,
        serve_supports_workers,
        start_echo,
        start_host,
        writer_figures,
        writer_sample,
    )
    from bench.provision import (
        LAYOUT_FILE,
        BenchError,
        CardNumbers,
        Layout,
        map_size_mib_for,
        provision,
    )
    from bench.report import cores_available, load_section, parse_slo, render_text, warnings_for
    from bench.security import TerminalKeyset, prepare_security

    _check_args(args)
    if args.clearing is not None:
        return _clearing(args)
    if args.stages is not None:
        return _stages(args, _parse_mix(args.mix))
    mix = _parse_mix(args.mix)
    hot_requests, hot_cards = _parse_hot(args)
    try:
        slo = parse_slo(args.slo) if args.slo else None
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    open_loop = args.rate is not None
    terminals = args.closed if args.closed is not None else args.terminals
    external = args.port is not None
    if args.data is not None and not args.data.exists() and (external or args.echo_only):
        raise BenchError(f"--data {args.data} does not exist")
    layout = _layout(args, terminals)
    if external and args.data is not None:
        saved = Layout.load(args.data)
        if saved is None:
            raise BenchError(f"--data {args.data} is not a bench store (no {LAYOUT_FILE})")
        if saved.terminals < terminals:
            raise BenchError(
                f"the bench store has {saved.terminals} terminals, the run needs {terminals}: "
                f"add them with `authsrv bench --data {args.data} --provision-only "
                f"--terminals {terminals}` (it adds terminals to a store in use)"
            )
    workload = _workload(args, mix, (hot_requests, hot_cards), layout.seed, args.pin_share)
    report: dict[str, Any] = {
        "bench": {
            "mode": "open" if open_loop else "closed",
            "terminals": terminals,
            "clients": args.clients,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "timeout_s": args.timeout,
            "rate_per_s": args.rate,
            "arrivals": ("poisson" if args.poisson else "constant") if open_loop else None,
            "mix": mix,
            "distribution": (
                {"kind": "hot", "requests": hot_requests, "cards": hot_cards}
                if hot_requests
                else {"kind": "uniform"}
            ),
            "retransmit_share": args.retransmit_share,
            "seed": layout.seed,
            "cards": layout.cards,
            "security": args.security,
            "pin_share": args.pin_share,
        },
        "machine": {"cores": cores_available()},
        "host": None,
        "provisioning": None,
        "result": None,
        "echo": None,
        "ratio_auth_per_echo": None,
        "check": None,
        "slo": None,
    }
    t0 = time.perf_counter()
    numbers = CardNumbers(layout.seed, layout.cards)
    numbers_s = time.perf_counter() - t0

    temp: Path | None = None
    if args.data is None:
        temp = Path(tempfile.mkdtemp(prefix="authsrv-bench-"))
        work = temp
        data = temp / "store"
    else:
        work = data = args.data
    failed = False
    keysets: list[TerminalKeyset] = []
    try:

        def secure(may_add_keys: bool) -> None:
            """The terminals' profile and keys (the bench holds the terminal side)."""
            nonlocal keysets
            started = time.perf_counter()
            keysets = prepare_security(
                data,
                layout,
                args.security,
                terminals,
                map_size_mib_for(layout.cards),
                may_add_keys=may_add_keys,
                pins=args.pin_share > 0,
            )
            if args.security != "none":
                what = (
                    "working keys cleared: each connection's key change gets new ones"
                    if args.security.startswith("mac-")
                    else "counters continue from the last one the host accepted"
                )
                _say(
                    f"terminals set to {args.security}, {what} "
                    f"({time.perf_counter() - started:.1f} s)"
                )

        def plans(host: str, port: int, echo: bool, rate: float | None) -> list[ClientPlan]:
            k = min(args.clients, terminals)
            start_at = time.time() + 1.0 + 0.1 * k
            split = [
                tuple(
                    (t, layout.terminal_id(t), layout.store_of_terminal(t))
                    for t in range(c, terminals, k)
                )
                for c in range(k)
            ]
            return [
                ClientPlan(
                    client=c,
                    host=host,
                    port=port,
                    terminals=split[c],
                    open_loop=rate is not None,
                    rate_per_s=(rate or 0.0) * len(split[c]) / terminals,
                    poisson=args.poisson,
                    start_at=start_at,
                    warmup_s=args.warmup,
                    duration_s=args.duration,
                    timeout_s=args.timeout,
                    inflight_max=args.inflight_max,
                    echo=echo,
                    workload=workload,
                    connections_total=terminals,
                    keysets=tuple(keysets[t] for t in range(c, terminals, k)) if keysets else (),
                )
                for c in range(k)
            ]

        def run(
            label: str,
            target: tuple[str, int],
            echo: bool,
            pids: list[int],
            metrics_url: str | None = None,
        ) -> LoadResult:
            rate = args.rate if not echo else None  # the echo baseline: as fast as it goes
            result = LoadResult(
                label=label,
                open_loop=rate is not None,
                connections=terminals,
                clients=min(args.clients, terminals),
                duration_s=args.duration,
                rate_per_s=rate or 0.0,
            )

            writes: list[dict[str, float] | None] = []

            def sample() -> dict[int, float]:
                # At the measured window's edges: the host's CPU and its writers' figures.
                if metrics_url is not None:
                    writes.append(writer_sample(metrics_url))
                return cpu_seconds([p for root in pids for p in process_tree(root)])

            run_clients(
                plans(*target, echo=echo, rate=rate),
                numbers,
                result,
                server_cpu=sample if pids else None,
            )
            if len(writes) >= 2:
                result.writer = writer_figures(writes[0], writes[1], args.duration)
            return result

        if not args.echo_only:
            if external:
                address = (args.host or "127.0.0.1", args.port)
                pids = _server_pids(args.server_pid)
                report["host"] = {
                    "started_by_bench": False,
                    "address": f"{address[0]}:{address[1]}",
                    "pids": pids,
                }
                if args.data is not None:
                    secure(may_add_keys=False)
                _say(f"load on {report['host']['address']} ({layout.cards:,} cards)")
                report["result"] = load_section(run("host", address, False, pids))
            else:
                _say(f"bench store {data}: {layout.cards:,} cards, {layout.terminals} terminals")
                prov = provision(data, layout, numbers, numbers_s)
                report["provisioning"] = {
                    "created": prov.created,
                    "cards": prov.cards,
                    "seconds": round(prov.total_s, 2),
                    "numbers_s": round(prov.numbers_s, 2),
                    "hash_s": round(prov.hash_s, 2),
                    "write_s": round(prov.write_s, 2),
                    "cards_per_s": round(prov.cards_per_s),
                    "line": prov.line(),
                }
                _say(prov.line())
                secure(may_add_keys=True)
                if args.provision_only:
                    print(
                        json.dumps(report["provisioning"]) if args.json else prov.line(), flush=True
                    )
                    return EXIT_OK
                workers = args.host_processes
                has_workers = workers > 1 and serve_supports_workers()
                if workers > 1 and not has_workers:
                    _say("authsrv serve has no --workers option: running one host process")
                log = work / "host.log"
                host = start_host(
                    data,
                    log,
                    log_requests=args.log_requests,
                    writer_nice=args.writer_nice,
                    workers=workers if has_workers else 1,
                    map_size_mib=map_size_mib_for(layout.cards),
                    demo_mode=args.security == "none",
                )
                with host:
                    pids = process_tree(host.pid)
                    _say(f"host listening on 127.0.0.1:{host.port} (pids {pids})")
                    result = run(
                        "host", ("127.0.0.1", host.port), False, [host.pid], host.metrics_url
                    )
                    alive = host.alive()
                code = host.returncode
                store_fs = filesystem_of(data)
                report["host"] = {
                    "started_by_bench": True,
                    "address": f"127.0.0.1:{host.port}",
                    "processes": workers if has_workers else 1,
                    "workers_option": has_workers,
                    "demo_mode": args.security == "none",
                    "durability": durability(store_fs),
                    "store_filesystem": (
                        None
                        if store_fs is None
                        else {"type": store_fs.type, "mount_point": store_fs.mount_point}
                    ),
                    "log_requests": args.log_requests,
                    "writer_nice": args.writer_nice,
                    "log": str(log) if temp is None else None,
                    "pids": pids,
                    "alive_at_end": alive,
                    "exit_code": code,
                }
                report["result"] = load_section(result)
                failed |= code != 0 or not alive
                if args.check:
                    report["check"] = _check(data, layout.cards)
                    failed |= not report["check"]["passed"]
        if args.echo or args.echo_only:
            echo_log = work / "echo.log"
            work.mkdir(parents=True, exist_ok=True)
            with start_echo(echo_log) as echo:
                _say(f"echo server on 127.0.0.1:{echo.port} (pid {echo.pid})")
                echo_result = run("echo", ("127.0.0.1", echo.port), True, [echo.pid])
            report["echo"] = load_section(echo_result)
            main = report["result"]
            if main and report["echo"]["achieved_rate_per_s"]:
                report["ratio_auth_per_echo"] = round(
                    main["achieved_rate_per_s"] / report["echo"]["achieved_rate_per_s"], 4
                )
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    for section in ("result", "echo"):
        if report[section] and report[section]["client_failures"]:
            failed = True
    if slo is not None and report["result"] is not None:
        violations = slo.check(report["result"])
        report["slo"] = {"limits": slo.limits, "violations": violations, "passed": not violations}
        failed |= bool(violations)
    report["warnings"] = warnings_for(report)
    code = EXIT_FAILED if failed else EXIT_OK
    report["exit_code"] = code
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_text(report))
    sys.stdout.flush()
    return code


def _clearing(args: argparse.Namespace) -> int:
    """``--clearing RECORDS``: the clearing file of a business day of that many records."""
    from bench.clearing import run_clearing_bench
    from bench.provision import BenchError, CardNumbers, provision
    from bench.report import cores_available

    if not 1 <= args.clearing <= 10_000_000:
        raise BenchError("--clearing must be between 1 and 10000000 records")
    if args.data is not None and args.data.exists() and any(args.data.iterdir()):
        raise BenchError("--clearing builds its own day: give a new --data directory or none")
    layout = _layout(args, args.terminals)
    if layout.cards > args.clearing:
        raise BenchError("--clearing must be at least --cards (their activations are records)")
    temp = Path(tempfile.mkdtemp(prefix="authsrv-bench-")) if args.data is None else None
    work = temp if temp is not None else args.data
    try:
        _say(f"provisioning {layout.cards:,} cards")
        report = provision(work / "store", layout, CardNumbers(layout.seed, layout.cards))
        _say(f"filling the day to {args.clearing:,} records, closing it, writing its files")
        result = run_clearing_bench(
            work / "store", layout, args.clearing, layout.seed, work / "settlement"
        )
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    out: dict[str, Any] = {
        "bench": {"mode": "clearing", "cards": layout.cards, "seed": layout.seed},
        "machine": {"cores": cores_available()},
        "provisioning_s": round(report.total_s, 1),
        "result": result.as_dict(),
    }
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        r = result.as_dict()
        sys.stdout.write(
            f"clearing file of one business day, {r['records']:,} records "
            f"({cores_available()} cores)\n"
            f"  posting the day's transfers   {r['append_s']:8.1f} s (setup, not timed below)\n"
            f"  build + write IPM, CSV, .sha256 {r['build_write_s']:6.1f} s "
            f"({r['records_per_s']:,} records/s)\n"
            f"  settle verify                 {r['verify_s']:8.1f} s\n"
            f"  files                         IPM {r['ipm_bytes']:,} bytes, "
            f"CSV {r['csv_bytes']:,} bytes\n"
            f"  peak RSS of the bench         {r['rss_max_mib']:8.1f} MiB\n"
        )
    return EXIT_OK


def _stages(args: argparse.Namespace, mix: dict[str, float]) -> int:
    """``--stages REQUESTS``: the CPU of each stage of the host's path, without sockets."""
    from bench.provision import BenchError, CardNumbers, provision
    from bench.report import cores_available
    from bench.stages import run_stages

    if not 1 <= args.stages <= 10_000_000:
        raise BenchError("--stages must be between 1 and 10000000 requests")
    if not 1 <= args.batch_size <= 10_000:
        raise BenchError("--batch-size must be between 1 and 10000 requests")
    if args.port is not None or args.security != "none":
        raise BenchError("--stages runs the host's code in the bench: no --port, no --security")
    layout = _layout(args, args.terminals)
    workload = _workload(args, mix, _parse_hot(args), layout.seed, pin_share=0.0)
    temp = Path(tempfile.mkdtemp(prefix="authsrv-bench-")) if args.data is None else None
    store = temp / "store" if temp is not None else args.data
    try:
        numbers = CardNumbers(layout.seed, layout.cards)
        _say(f"bench store {store}: {layout.cards:,} cards, {layout.terminals} terminals")
        provision(store, layout, numbers)
        _say(f"{args.stages:,} requests through the host's stages, {args.batch_size} per commit")
        costs = run_stages(
            store, layout, numbers, workload, args.stages, args.batch_size, args.log_requests
        )
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    out: dict[str, Any] = {
        "bench": {"mode": "stages", "cards": layout.cards, "seed": layout.seed, "mix": mix},
        "machine": {"cores": cores_available()},
        "result": costs.as_dict(),
    }
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return EXIT_OK
    r = costs.as_dict()
    cpu = r["cpu_us_per_request"]
    sys.stdout.write(
        f"host stages without sockets: {r['requests']:,} requests, {r['batches']:,} commits "
        f"of up to {r['batch_size']} ({cores_available()} cores)\n"
        f"  prepare   {cpu['prepare']:7.1f} µs CPU per request (reader: decode, validation, "
        "card hash, duplicate key)\n"
        f"  decide    {cpu['decide']:7.1f} µs (in the write transaction: duplicate check, "
        "engine, ledger)\n"
        f"  commit    {cpu['commit']:7.1f} µs ({r['commit_ms_per_batch']:.2f} ms per commit "
        "with both syncs)\n"
        f"  respond   {cpu['respond']:7.1f} µs (answer built, encoded, logged, counted)\n"
        f"  total     {cpu['total']:7.1f} µs; a load run's host CPU per authorization adds the "
        "network path\n"
        f"  answers   {', '.join(f'{k} {v:,}' for k, v in r['rc'].items())}\n"
    )
    return EXIT_OK


def _check(data: Path, cards: int) -> dict[str, Any]:
    from authsrv.app import open_store
    from authsrv.store import check_ledger
    from bench.provision import map_size_mib_for

    _say("ledger check (authsrv check) on the store")
    started = time.perf_counter()
    store = open_store(data, map_size_mib_for(cards), readonly=True)
    try:
        with store.read() as led:
            problems = check_ledger(led)
    finally:
        store.close()
    return {
        "passed": not problems,
        "problems": problems[:20],
        "seconds": round(time.perf_counter() - started, 2),
    }
