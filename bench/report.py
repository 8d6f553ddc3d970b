"""The bench's report: one dictionary (``--json`` prints it), a readable text made from it, the
SLO check that sets the exit status, and the warnings that say when a figure is not the host's.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from authsrv.storefs import MEMORY_FILESYSTEMS
from bench.clients import LoadResult

__all__ = [
    "SLO_KEYS",
    "Slo",
    "cores_available",
    "load_section",
    "parse_slo",
    "render_text",
    "warnings_for",
]

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)
# SLO key -> (what it limits, "max" or "min")
SLO_KEYS: dict[str, tuple[str, str]] = {
    "p50_ms": ("latency p50", "max"),
    "p90_ms": ("latency p90", "max"),
    "p99_ms": ("latency p99", "max"),
    "p999_ms": ("latency p99.9", "max"),
    "max_ms": ("latency max", "max"),
    "min_rate": ("achieved rate", "min"),
    "max_errors": ("errors", "max"),
    "max_timeouts": ("time-outs", "max"),
}
# A generator process above this share of a core may be what limits the rate.
CLIENT_SATURATED_CORES = 0.85
# Host plus generator above this share of the machine's cores: they compete for the CPU.
MACHINE_BUSY_SHARE = 0.9
# Other processes (or the hypervisor's other guests) above this many cores: a noisy machine.
OTHER_CORES_MAX = 0.15
# An achieved rate above this share of the echo baseline is close to what the client, TCP and
# framing alone allow.
NEAR_ECHO_SHARE = 0.7
# Open loop: more sends than this share over 1 ms late, or an offered rate below this share
# of the target.
LATE_SHARE_MAX = 0.05  # the timers wake in whole milliseconds: a few late sends are normal
OFFERED_SHORT_SHARE = 0.97
# Below this share of approvals (00, 10) the figures are mostly of declines, which skip the
# ledger work (a host without demo mode answers terminals that have no keys 63).
APPROVED_SHARE_MIN = 0.9
APPROVED = ("00", "10")


@dataclass(frozen=True, slots=True)
class Slo:
    limits: dict[str, float]

    def check(self, result: dict[str, Any]) -> list[str]:
        """What the measured result violates, one readable line each."""
        latency = result["latency_ms"]
        actual = {
            "p50_ms": latency["p50"],
            "p90_ms": latency["p90"],
            "p99_ms": latency["p99"],
            "p999_ms": latency["p99.9"],
            "max_ms": latency["max"],
            "min_rate": result["achieved_rate_per_s"],
            "max_errors": result["errors"],
            "max_timeouts": result["timeouts"],
        }
        violations = []
        for key, limit in self.limits.items():
            value = actual[key]
            what, kind = SLO_KEYS[key]
            if value is None:
                violations.append(f"{key}={limit:g}: no {what} measured")
            elif (kind == "max" and value > limit) or (kind == "min" and value < limit):
                violations.append(f"{key}={limit:g}: {what} was {value:,.2f}")
        return violations


def parse_slo(text: str) -> Slo:
    """``p99_ms=10,min_rate=5000``.

    >>> parse_slo("p99_ms=10,min_rate=5000").limits
    {'p99_ms': 10.0, 'min_rate': 5000.0}
    """
    return Slo(parse_pairs(text, "--slo", SLO_KEYS))


def parse_pairs(text: str, option: str, keys: Iterable[str]) -> dict[str, float]:
    """``KEY=NUMBER,...`` with every KEY one of ``keys``.

    >>> parse_pairs("a=1,b=2.5", "--x", ("a", "b"))
    {'a': 1.0, 'b': 2.5}

    Error handling: ``ValueError`` with one line naming ``option``.
    """
    known = tuple(keys)
    pairs: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in known:
            raise ValueError(f"{option} takes KEY=VALUE pairs with KEY one of {', '.join(known)}")
        try:
            pairs[key] = float(value)
        except ValueError:
            raise ValueError(f"{option} {key}: {value!r} is not a number") from None
    return pairs


def cores_available() -> int:
    return len(os.sched_getaffinity(0))


def _ms(value_us: float | None) -> float | None:
    return None if value_us is None else round(value_us / 1000, 3)


def _latency(hist: Any) -> dict[str, float | None]:
    if hist.get_total_count() == 0:
        empty: dict[str, float | None] = {name: None for name, _ in PERCENTILES}
        return empty | {"max": None}
    values = {name: _ms(hist.get_value_at_percentile(p)) for name, p in PERCENTILES}
    return values | {"max": _ms(hist.get_max_value())}


def load_section(result: LoadResult) -> dict[str, Any]:
    """The measured figures of one run (the host's or the echo's)."""
    rc_total: Counter[str] = Counter()
    by_op: dict[str, dict[str, int]] = {}
    for (op, rc), n in sorted(result.rc.items()):
        rc_total[rc] += n
        by_op.setdefault(op, {})[rc] = n
    cpu_s = sum(result.client_cpu_s)
    wall_s = max(result.client_wall_s, default=0.0) or result.duration_s
    per_client: list[dict[str, Any]] = [
        {
            "client": i,
            "cpu_cores": round(cpu / wall_s, 3),
            "cpu_us_per_request": round(cpu * 1e6 / n, 1) if n else None,
        }
        for i, (cpu, n) in enumerate(zip(result.client_cpu_s, result.client_answered, strict=True))
    ]
    generator: dict[str, Any] = {
        "processes": result.clients,
        "cpu_us_per_request": (
            round(cpu_s * 1e6 / result.answered, 1) if result.answered else None
        ),
        "cpu_cores": round(cpu_s / wall_s, 3),
        "per_client": per_client,
        "saturated": any(c["cpu_cores"] > CLIENT_SATURATED_CORES for c in per_client),
    }
    if result.open_loop:
        lag = result.lag_hist
        generator["send_lag_ms"] = (
            {"p99": _ms(lag.get_value_at_percentile(99.0)), "max": _ms(lag.get_max_value())}
            if lag is not None and lag.get_total_count()
            else None
        )
        generator["late_sends"] = result.late_sends
    server_cpu = result.server_cpu_s
    return {
        "connections": result.connections,
        "duration_s": result.duration_s,
        "target_rate_per_s": result.rate_per_s if result.open_loop else None,
        "offered_rate_per_s": round(result.offered_per_s, 1),
        "achieved_rate_per_s": round(result.achieved_per_s, 1),
        "sent": result.sent,
        "answered": result.answered,
        "latency_ms": _latency(result.hist),
        "rc": dict(sorted(rc_total.items())),
        "rc_by_op": by_op,
        "errors": sum(result.errors.values()),
        "errors_by_kind": dict(result.errors),
        "timeouts": result.timeouts,
        "retransmissions": sum(n for (op, _rc), n in result.rc.items() if op == "retransmit"),
        "replays_differing": result.replays_differing,
        "reversals_substituted": result.reversals_substituted,
        "connects": result.connects,
        "key_changes": result.key_changes,
        "server_cpu_us_per_request": (
            round(server_cpu * 1e6 / result.answered, 1)
            if server_cpu is not None and result.answered
            else None
        ),
        "server_cpu_cores": round(server_cpu / wall_s, 3) if server_cpu is not None else None,
        "writer": result.writer,
        "generator": generator,
        "machine": _machine(result, wall_s, server_cpu, cpu_s),
        "client_failures": result.failures,
    }


def _machine(
    result: LoadResult, wall_s: float, server_cpu_s: float | None, generator_cpu_s: float
) -> dict[str, Any]:
    """Where the machine's CPU went in the measured window: what is neither the server nor the
    generator is other processes (or the bench's own parent, which only waits)."""
    busy = result.machine_busy_s / wall_s
    ours = (generator_cpu_s + (server_cpu_s or 0.0)) / wall_s
    return {
        "busy_cores": round(busy, 3),
        "steal_cores": round(result.machine_steal_s / wall_s, 3),
        "other_cores": round(max(busy - ours, 0.0), 3) if server_cpu_s is not None else None,
        "busiest_others": [
            {"command": name, "cores": round(cpu / wall_s, 3)} for name, cpu in result.others
        ],
    }


def warnings_for(report: dict[str, Any]) -> list[str]:
    """Why a figure may not be the host's own (generator, machine, method)."""
    out: list[str] = []
    cores = report["machine"]["cores"]
    fs = (report.get("host") or {}).get("store_filesystem")
    if fs and fs["type"] in MEMORY_FILESYSTEMS:
        out.append(
            f"the store is on {fs['type']} at {fs['mount_point']} (memory): its commits cost no "
            "disk time, so these figures are not those of a durable host; give --data on a disk"
        )
    for name in ("result", "echo"):
        section = report.get(name)
        if not section:
            continue
        what = "main run" if name == "result" else "echo baseline"
        gen = section["generator"]
        for client in gen["per_client"]:
            if client["cpu_cores"] > CLIENT_SATURATED_CORES:
                out.append(
                    f"{what}: generator process {client['client']} used "
                    f"{client['cpu_cores']:.2f} of a core: it may be what limits the rate "
                    "(add --clients, or a machine with more cores)"
                )
        busy = gen["cpu_cores"] + (section["server_cpu_cores"] or 0.0)
        if section["server_cpu_cores"] is not None and busy > MACHINE_BUSY_SHARE * cores:
            out.append(
                f"{what}: server and generator together used {busy:.2f} of {cores} cores: "
                "they compete for the CPU, the server's rate is lower than on its own machine"
            )
        m = section["machine"]
        if (m["other_cores"] or 0.0) > OTHER_CORES_MAX or m["steal_cores"] > OTHER_CORES_MAX:
            busiest = ", ".join(f"{o['command']} {o['cores']:.2f}" for o in m["busiest_others"])
            out.append(
                f"{what}: other processes used {m['other_cores'] or 0.0:.2f} cores "
                f"({busiest or 'none above 0.05 each'}) and the hypervisor stole "
                f"{m['steal_cores']:.2f} during the measurement: the figures are lower than on "
                "a quiet machine (kernel threads such as jbd2 or kworker may be the host's "
                "own I/O)"
            )
        if section["target_rate_per_s"]:
            target = section["target_rate_per_s"]
            late = gen.get("late_sends", 0)
            if section["offered_rate_per_s"] < OFFERED_SHORT_SHARE * target or (
                section["sent"] and late > LATE_SHARE_MAX * section["sent"]
            ):
                out.append(
                    f"{what}: the generator fell behind its schedule (offered "
                    f"{section['offered_rate_per_s']:,.0f}/s of {target:,.0f}/s, {late:,} sends "
                    "more than 1 ms late); latency still runs from the intended send time"
                )
        if section["errors"] or section["timeouts"]:
            out.append(
                f"{what}: {section['errors']} error(s), {section['timeouts']} time-out(s) "
                f"({section['errors_by_kind']})"
            )
        if section["client_failures"]:
            out.append(f"{what}: " + "; ".join(section["client_failures"]))
        answered = sum(section["rc"].values())
        approved = sum(section["rc"].get(rc, 0) for rc in APPROVED)
        if name == "result" and answered and approved < APPROVED_SHARE_MIN * answered:
            out.append(
                f"{what}: only {approved / answered:.0%} of the answers approved "
                f"({section['rc']}): the figures are mostly of declines, which skip the ledger "
                "work (63: the host is not in demo mode and the terminals have no keys; use "
                "--security, or the bench's own host)"
            )
    result = report.get("result")
    if result:
        if result["replays_differing"]:
            out.append(
                f"{result['replays_differing']} retransmission(s) answered with another code "
                "than their original: exactly-once replay (DESIGN §5) did not hold"
            )
        if result["target_rate_per_s"] is None:
            out.append(
                "closed loop: each terminal waits for its answer, so queueing in the host slows "
                "the offered load instead of showing as latency; use --rate for latency under a "
                "fixed load"
            )
        ratio = report.get("ratio_auth_per_echo")
        if ratio is not None and ratio > NEAR_ECHO_SHARE:
            out.append(
                f"the host reached {ratio:.0%} of the echo baseline: the client, TCP and framing "
                "may limit more than the host"
            )
    host = report.get("host") or {}
    if host.get("exit_code") not in (None, 0):
        out.append(f"the host exited with status {host['exit_code']}; see {host.get('log')}")
    check = report.get("check")
    if check and not check["passed"]:
        out.append("the ledger check failed: " + "; ".join(check["problems"][:5]))
    return out


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _section_lines(section: dict[str, Any], unit: str) -> list[str]:
    lat = section["latency_ms"]
    gen = section["generator"]
    lines = []
    if section["target_rate_per_s"]:
        lines.append(
            f"offered        {section['offered_rate_per_s']:,.0f}/s "
            f"(target {section['target_rate_per_s']:,.0f}/s, {section['sent']:,} sent)"
        )
    else:
        lines.append(
            f"offered        closed loop: as fast as the answers come ({section['sent']:,} sent)"
        )
    lines.append(
        f"achieved       {section['achieved_rate_per_s']:,.0f} {unit}/s "
        f"({section['answered']:,} answered in {section['duration_s']:g} s on "
        f"{section['connections']} connections)"
    )
    lines.append(
        "latency ms     "
        + "  ".join(f"{k} {_fmt_ms(lat[k])}" for k in ("p50", "p90", "p99", "p99.9", "max"))
    )
    if section["rc"] and set(section["rc"]) != {"echo"}:
        lines.append(
            "responses      " + "  ".join(f"{rc}: {n:,}" for rc, n in section["rc"].items())
        )
        ops = []
        for op, codes in section["rc_by_op"].items():
            ops.append(op + " " + " ".join(f"{rc}:{n:,}" for rc, n in codes.items()))
        lines.append("by operation   " + " | ".join(ops))
    lines.append(
        f"errors         {section['errors']:,}  time-outs {section['timeouts']:,}"
        + (f"  ({section['errors_by_kind']})" if section["errors_by_kind"] else "")
    )
    if section["server_cpu_us_per_request"] is not None:
        lines.append(
            f"server CPU     {section['server_cpu_us_per_request']:,.1f} µs per request "
            f"({section['server_cpu_cores']:.2f} cores)"
        )
    w = section.get("writer")
    if w:
        lines.append(
            f"writer         {w['commits_per_s']:,.0f} commits/s, {w['requests_per_commit']:.1f} "
            f"requests per commit, {w['batch_ms']:.2f} ms per batch (lock wait "
            f"{w['lock_wait_ms']:.2f} ms of it), write lock held {w['lock_held_share']:.0%} "
            "of the time"
        )
    gen_line = (
        f"generator      {gen['processes']} process(es), "
        f"{_fmt_ms(gen['cpu_us_per_request'])} µs CPU per request "
        f"({gen['cpu_cores']:.2f} cores"
        + ", ".join(
            [""] + [f"client {c['client']} {c['cpu_cores']:.2f}" for c in gen["per_client"]]
        )
        + ")"
    )
    if gen.get("send_lag_ms"):
        gen_line += (
            f", send lag p99 {gen['send_lag_ms']['p99']:.2f} ms max "
            f"{gen['send_lag_ms']['max']:.2f} ms, {gen['late_sends']:,} late"
        )
    lines.append(gen_line)
    m = section["machine"]
    other = "" if m["other_cores"] is None else f", other processes {m['other_cores']:.2f}"
    lines.append(
        f"machine CPU    {m['busy_cores']:.2f} cores busy{other}, steal {m['steal_cores']:.2f}"
    )
    return lines


def _security(report: dict[str, Any]) -> str:
    """The terminals' profile, and for none how the host serves them."""
    profile = str(report["bench"]["security"])
    if profile != "none":
        return profile
    host = report.get("host") or {}
    if host.get("started_by_bench"):
        return "none (demo mode)"
    return "none (the host must run in demo mode)" if host else "none"


def render_text(report: dict[str, Any]) -> str:
    b = report["bench"]
    lines = []
    if b["mode"] == "open":
        how = f"open loop, {b['arrivals']} arrivals at {b['rate_per_s']:,.0f}/s"
    else:
        how = "closed loop"
    mix = " ".join(f"{op} {share:.0%}" for op, share in b["mix"].items())
    dist = b["distribution"]
    cards = (
        f"{b['cards']:,} cards, "
        + (
            "uniform"
            if dist["kind"] == "uniform"
            else f"hot: {dist['requests']:.0%} of requests on {dist['cards']:.1%} of the cards"
        )
        + f", seed {b['seed']}"
    )
    lines.append(
        f"authsrv bench: {how}, {b['terminals']} terminals, {b['duration_s']:g} s measured after "
        f"{b['warmup_s']:g} s warm-up, {b['clients']} generator process(es), "
        f"security: {_security(report)}"
    )
    pins = f"; PIN on {b['pin_share']:.0%} of redeems" if b.get("pin_share") else ""
    lines.append(
        f"workload       {mix}; retransmissions {b['retransmit_share']:.1%}{pins}; {cards}"
    )
    host = report.get("host")
    if host:
        if host["started_by_bench"]:
            lines.append(
                f"host           authsrv serve at {host['address']}, {host['processes']} "
                f"process(es), durability {host['durability']}, request log "
                f"{'on' if host['log_requests'] else 'off'}"
                + (f", writer nice {host['writer_nice']}" if host.get("writer_nice") else "")
                + f", log {host['log']}"
            )
        else:
            pids = ",".join(str(p) for p in host["pids"]) or "none given (--server-pid)"
            lines.append(
                f"host           {host['address']} (not started by the bench; pids {pids})"
            )
    prov = report.get("provisioning")
    if prov:
        lines.append(f"store          {prov['line']}")
    result = report.get("result")
    if result:
        lines += _section_lines(result, "authorizations")
        extra = (
            f"retransmitted  {result['retransmissions']:,} (answered otherwise than the original: "
            f"{result['replays_differing']:,}); reversals sent as redeems for want of an "
            f"approved original: {result['reversals_substituted']:,}"
        )
        lines.append(extra)
        if result["key_changes"]:
            lines.append(
                f"key changes    {result['key_changes']:,} (one per connection, before its "
                "first request; not counted as requests)"
            )
    echo = report.get("echo")
    if echo:
        lines.append("echo baseline  (same client and framing; a server that returns each frame)")
        lines += ["  " + line for line in _section_lines(echo, "round trips")]
    ratio = report.get("ratio_auth_per_echo")
    if ratio is not None:
        what = (
            "the offered load's share of the echo capacity, not the host's limit"
            if b["mode"] == "open"
            else "same run"
        )
        lines.append(f"ratio          {ratio:.3f} authorizations/s per echo round trip/s ({what})")
    check = report.get("check")
    if check:
        state = "passed" if check["passed"] else "FAILED"
        lines.append(f"ledger check   {state} ({check['seconds']:.1f} s)")
    slo = report.get("slo")
    if slo:
        lines.append(
            "SLO            "
            + ("met" if slo["passed"] else "VIOLATED: " + "; ".join(slo["violations"]))
            + f" ({', '.join(f'{k}={v:g}' for k, v in slo['limits'].items())})"
        )
    lines.append(f"machine        {report['machine']['cores']} cores available to the bench")
    for warning in report["warnings"]:
        lines.append(f"note: {warning}")
    return "\n".join(lines)
