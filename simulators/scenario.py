"""Scenario files: TOML steps with expected answers, played against a running host.

```toml
name = "Gift card life cycle"
[defaults]
terminal = "T0000001"
store = "S0001"
currency = "978"

[[step]]
name = "activate 500.00"
op = "activate"
card = "@1"                # @N from --cards FILE, @set:N, "unknown", or a card number
amount = "500.00"          # major units of the step's currency
expect_rc = "00"
expect_balance = "500.00"  # available balance in field 54
```

Other step keys: ``partial = true`` (field 48 PA=1), ``terminal``, ``store``, ``currency``,
``fields = { "4" = "00000000012A" }`` (replace fields as sent; ``""`` removes one),
``expect_approved = "380.00"`` (field 4 of the answer), ``expect_field44 = "004"`` (prefix).
``original = 3`` names step 3's request in field 90 (complete, reverse, reverse-advice), with
``final = "50.00"`` for a partial reversal (field 95). ``resend = 3`` sends step 3's message
again (a retransmission; ``op`` is then only a label; ``fields`` still applies, e.g. to change
the amount under the same duplicate key), ``as_repeat = true`` as a repeat MTI (0221, 0401,
0421).
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.currency import parse_major
from simulators.terminal import (
    OPERATIONS,
    CardBook,
    SimError,
    TerminalConnection,
    as_repeat,
    build_request,
    describe_exchange,
    summarize,
)

__all__ = ["ScenarioResult", "load_scenario", "run_scenario"]

STEP_KEYS = frozenset(
    {
        "name",
        "op",
        "card",
        "amount",
        "partial",
        "terminal",
        "store",
        "currency",
        "fields",
        "original",
        "final",
        "resend",
        "as_repeat",
        "expect_rc",
        "expect_balance",
        "expect_approved",
        "expect_field44",
    }
)
STEPS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    passed: int
    failed: int
    lines: list[str]


def load_scenario(path: Path) -> dict[str, Any]:
    """Read and check a scenario file. Error handling: :class:`SimError` naming the step."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SimError(f"scenario {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SimError(f"scenario {path} is not valid TOML: {exc}") from None
    steps = data.get("step")
    if not isinstance(steps, list) or not steps:
        raise SimError(f"scenario {path} has no [[step]] entries")
    if len(steps) > STEPS_MAX:
        raise SimError(f"scenario {path} has more than {STEPS_MAX} steps")
    for i, step in enumerate(steps, 1):
        unknown = set(step) - STEP_KEYS
        if unknown:
            raise SimError(f"scenario step {i}: unknown key(s) {', '.join(sorted(unknown))}")
        if step.get("op") not in OPERATIONS:
            raise SimError(f"scenario step {i}: op must be one of {', '.join(OPERATIONS)}")
        for ref in ("original", "resend"):
            if ref in step and not (isinstance(step[ref], int) and 1 <= step[ref] < i):
                raise SimError(f"scenario step {i}: {ref} must name an earlier step number")
    return data


async def run_scenario(
    data: dict[str, Any], book: CardBook, host: str, port: int, *, verbose: bool = False
) -> ScenarioResult:
    defaults = data.get("defaults", {})
    passed = failed = 0
    lines: list[str] = [f"scenario: {data.get('name', 'unnamed')}"]
    sent: dict[int, dict[str, str]] = {}
    async with await TerminalConnection.open(host, port) as conn:
        for i, step in enumerate(data["step"], 1):
            s = {**defaults, **step}
            currency = str(s.get("currency", "978"))
            op = s["op"]
            overrides = {str(k): (str(v) or None) for k, v in s.get("fields", {}).items()}
            if "resend" in s:
                previous = sent[int(s["resend"])]
                req = as_repeat(previous) if s.get("as_repeat") else dict(previous)
                for key, value in overrides.items():
                    if value is None:
                        req.pop(key, None)
                    else:
                        req[key] = value
            else:
                amount = parse_major(str(s["amount"]), currency) if "amount" in s else None
                final = parse_major(str(s["final"]), currency) if "final" in s else None
                req = build_request(
                    op,
                    terminal=str(s.get("terminal", "T0000001")),
                    store=str(s.get("store", "S0001")),
                    pan=book.resolve(str(s["card"])) if "card" in s else None,
                    amount_minor=amount,
                    currency=currency,
                    partial=bool(s.get("partial", False)),
                    original=sent[int(s["original"])] if "original" in s else None,
                    final_minor=final,
                    overrides=overrides,
                )
            sent[i] = req
            started = time.perf_counter()
            resp = await conn.exchange(req)
            elapsed = time.perf_counter() - started
            problems = _check(s, resp, currency)
            verdict = "PASS" if not problems else "FAIL " + "; ".join(problems)
            passed += not problems
            failed += bool(problems)
            lines.append(f"[{i}] {s.get('name', op)}: {verdict}")
            lines.append(describe_exchange(op, req, resp, elapsed, verbose))
    lines.append(f"{passed} passed, {failed} failed")
    return ScenarioResult(passed, failed, lines)


def _check(step: dict[str, Any], resp: dict[str, str], currency: str) -> list[str]:
    ans = summarize(resp)
    problems = []
    if "expect_rc" in step and ans.rc != str(step["expect_rc"]):
        problems.append(f"rc {ans.rc}, expected {step['expect_rc']}")
    if "expect_balance" in step:
        want = parse_major(str(step["expect_balance"]), currency)
        if ans.available_minor != want:
            problems.append(f"balance {ans.available_minor}, expected {want}")
    if "expect_approved" in step:
        want = parse_major(str(step["expect_approved"]), currency)
        if ans.approved_minor != want:
            problems.append(f"approved {ans.approved_minor}, expected {want}")
    if "expect_field44" in step and not (ans.field44 or "").startswith(str(step["expect_field44"])):
        problems.append(f"field 44 {ans.field44!r}, expected {step['expect_field44']!r}...")
    return problems
