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
0421). A resend without ``fields`` or ``as_repeat`` sends the very same bytes (the same MAC and,
under DUKPT, the same KSN), as a terminal that got no answer does.

The terminal keeps its own batch totals as it goes: every step whose answer moved money counts
(resends do not: the terminal counted the transaction when it first got the answer).
``op = "close-batch"`` sends them in a 0500 for the step's terminal and currency and prints them
beside the host's; the host answers 00 (in balance) or 95 (out of balance), and the next batch
starts from zero either way. Its keys: ``batch = "000007"`` (field 60; else the terminal's
count, from 000001), ``totals = { debits = "2/35.00", credits = "1/500.00" }`` (KIND =
"COUNT/AMOUNT" instead of the kept totals; kinds credits, credit-reversals, debits,
debit-reversals), ``batch_offset_minor = 100`` (deliberately wrong: the debit amount sent is
that many minor units off).

```toml
[[step]]
name = "close the batch"
op = "close-batch"
expect_rc = "00"           # 95 with batch_offset_minor
```

The terminal's security profile and keys (the steps' terminal must have that profile):

```toml
[terminal]
security = "mac-aes"       # none, mac-tdes, mac-aes, dukpt-tdes, dukpt-aes
tmk_file = "T0000001.tmk"  # mac-*: the terminal master key (hex, mode 0600)
# ik_file = "dev.ik"       # dukpt-*: the device's initial key (hex, mode 0600)
# ksn = "123456789012345600000000"  # dukpt-*: the KSN to start from
```

Key files are relative to the scenario file; ``authsrv simulate run`` options (``--security``,
``--tmk-file``, ``--ik-file``, ``--ksn``) replace the table. A step's ``pin = "1234"`` sends the
PIN typed on the pad as a PIN block (field 52 under TDES keys, field 48 ``PB`` under AES).
"""

from __future__ import annotations

import json
import os
import stat
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from keys import dukpt
from protocol.currency import parse_major
from simulators.batch import TerminalBatches, describe_close_batch, parse_totals, with_offset
from simulators.security import PROFILES, Sealed, TerminalSecurity, TerminalSecurityError
from simulators.terminal import (
    OPERATIONS,
    CardBook,
    SimError,
    TerminalConnection,
    as_repeat,
    build_request,
    decode_response,
    describe_exchange,
    summarize,
)

__all__ = [
    "Exchange",
    "ScenarioResult",
    "TerminalKeys",
    "TerminalLink",
    "load_scenario",
    "read_key_file",
    "run_scenario",
    "write_private",
]

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
        "pin",
        "expect_rc",
        "expect_balance",
        "expect_approved",
        "expect_field44",
        "batch",
        "batch_offset_minor",
        "totals",
    }
)
TERMINAL_KEYS = frozenset({"security", "tmk_file", "ik_file", "ksn"})
STEPS_MAX = 10_000
KEY_LEN = 16  # terminal master keys and DUKPT initial keys: TDES double length or AES-128
KSN_HEX_LEN = {"dukpt-tdes": 20, "dukpt-aes": 24}
KSN_STATE_SUFFIX = ".ksn"  # beside --ik-file: the last KSN used (counters only go up)
WORKING_KEYS_SUFFIX = ".keys"  # beside --tmk-file: the last key change's blocks (under the TMK)
PIN_DIGITS_MIN, PIN_DIGITS_MAX = 4, 12  # ISO 9564
ANSWER_TIMEOUT_S = 15.0
KEY_CHANGE_CODE = "101"  # field 70 of a key change (0800)
REFUSED = "63"  # security violation: the answer carries no MAC


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    passed: int
    failed: int
    lines: list[str]


# -- the terminal's keys ------------------------------------------------------------------------
def read_key_file(path: Path, what: str) -> bytes:
    """A key file of the simulator (hex, one key): refused when group or others may read it,
    as the host refuses such a key-encrypting key file.

    Error handling: :class:`SimError` naming the file and what to do.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SimError(f"{what} {path} not found") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SimError(f"{what} {path} is readable by others; chmod 600 it")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise SimError(f"{what} {path} is not hex") from None
    except OSError as exc:
        raise SimError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(key) != KEY_LEN:
        raise SimError(f"{what} {path} must hold {KEY_LEN} bytes as {2 * KEY_LEN} hex digits")
    return key


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically (temp file, fsync, rename), readable by its owner only.

    Error handling: :class:`SimError` naming the file.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise SimError(f"cannot write {path}: {exc.strerror}") from None


def _ksn_counter(profile: str, ksn: bytes) -> int:
    return dukpt.aes_counter(ksn) if profile == "dukpt-aes" else dukpt.tdes_counter(ksn)


def _ksn_device(profile: str, ksn: bytes) -> bytes:
    """The KSN without its counter (what the host's terminal record holds)."""
    if profile == "dukpt-aes":
        return ksn[:8]
    return (int.from_bytes(ksn, "big") & ~0x1FFFFF).to_bytes(10, "big")


def _ksn_with_counter(profile: str, ksn: bytes, counter: int) -> bytes:
    if profile == "dukpt-aes":
        return ksn[:8] + counter.to_bytes(4, "big")
    return (int.from_bytes(_ksn_device(profile, ksn), "big") | counter).to_bytes(10, "big")


def _parse_ksn(profile: str, text: str, where: str) -> bytes:
    want = KSN_HEX_LEN[profile]
    try:
        ksn = bytes.fromhex(text)
    except ValueError:
        ksn = b""
    if len(text) != want or len(ksn) * 2 != want:
        raise SimError(f"{where} must be {want} hex digits for {profile}")
    return ksn


@dataclass(frozen=True, slots=True)
class TerminalKeys:
    """What the simulator holds as a terminal: its profile, its clear keys (from files readable
    by their owner only) and, for DUKPT, where its last KSN is kept. ``repr`` shows no key.
    """

    profile: str = "none"
    tmk: bytes = field(default=b"", repr=False)
    initial_key: bytes = field(default=b"", repr=False)
    ksn: bytes = b""  # DUKPT: the last KSN used, or the one given to start from
    tmk_file: Path | None = None
    ik_file: Path | None = None

    @classmethod
    def from_options(
        cls,
        security: str | None,
        tmk_file: Path | None,
        ik_file: Path | None,
        ksn: str | None,
        *,
        where: str = "--",
    ) -> TerminalKeys:
        """Check the combination, read the key files and the KSN state file.

        ``where`` prefixes option names in messages (``--`` for the command line,
        ``[terminal] `` for a scenario file).

        Error handling: :class:`SimError`, one line.
        """
        profile = security or "none"
        names = {
            k: f"{where}{k.replace('_', '-') if where == '--' else k}"
            for k in ("security", "tmk_file", "ik_file", "ksn")
        }
        if profile not in PROFILES:
            raise SimError(f"{names['security']} must be one of {', '.join(PROFILES)}")
        static, device = profile.startswith("mac-"), profile.startswith("dukpt-")
        if tmk_file is not None and not static:
            raise SimError(f"{names['tmk_file']} goes with {names['security']} mac-tdes or mac-aes")
        if (ik_file is not None or ksn is not None) and not device:
            raise SimError(
                f"{names['ik_file']} and {names['ksn']} go with {names['security']} "
                "dukpt-tdes or dukpt-aes"
            )
        if static:
            if tmk_file is None:
                raise SimError(f"{names['security']} {profile} needs {names['tmk_file']} FILE")
            return cls(
                profile, tmk=read_key_file(tmk_file, "terminal master key file"), tmk_file=tmk_file
            )
        if not device:
            return cls()
        if ik_file is None:
            raise SimError(f"{names['security']} {profile} needs {names['ik_file']} FILE")
        initial_key = read_key_file(ik_file, "initial key file")
        start = _parse_ksn(profile, ksn, names["ksn"]) if ksn is not None else None
        state = _read_ksn_state(profile, ik_file)
        if start is None and state is None:
            raise SimError(
                f"{names['security']} {profile} needs {names['ksn']} HEX (the KSN to start "
                f"from); no {ik_file}{KSN_STATE_SUFFIX} holds a later one yet"
            )
        if (
            start is not None
            and state is not None
            and _ksn_device(profile, state) != _ksn_device(profile, start)
        ):
            raise SimError(
                f"{ik_file}{KSN_STATE_SUFFIX} holds a KSN of another device than "
                f"{names['ksn']}; remove it for a new device"
            )
        candidates = [k for k in (start, state) if k is not None]
        last = max(candidates, key=lambda k: _ksn_counter(profile, k))
        return cls(profile, initial_key=initial_key, ksn=last, ik_file=ik_file)

    @property
    def static(self) -> bool:
        return self.profile.startswith("mac-")

    @property
    def dukpt(self) -> bool:
        return self.profile.startswith("dukpt-")

    def security(self) -> TerminalSecurity:
        """A fresh terminal side: DUKPT from the last KSN; static keys with the working keys of
        the last key change if they were kept (else none: the first key change is unMACed)."""
        try:
            sec = TerminalSecurity(
                self.profile, tmk=self.tmk, initial_key=self.initial_key, ksn=self.ksn
            )
        except TerminalSecurityError as exc:
            raise SimError(str(exc)) from None
        saved = self._saved_key_change()
        if saved is not None:
            try:
                sec.accept_key_change(saved)
            except (TerminalSecurityError, ValueError):
                # Under another master key, or damaged: start without working keys.
                return TerminalSecurity(self.profile, tmk=self.tmk)
        return sec

    # -- state beside the key files ------------------------------------------------------------
    def save_ksn(self, sec: TerminalSecurity) -> None:
        """Keep the KSN just used (before the request leaves): a later run starts above it."""
        assert self.dukpt and self.ik_file is not None
        ksn = _ksn_with_counter(self.profile, self.ksn, sec.ksn_counter)
        write_private(
            self.ik_file.with_name(self.ik_file.name + KSN_STATE_SUFFIX), ksn.hex().upper() + "\n"
        )

    def save_key_change(self, answer: Mapping[str, str]) -> None:
        """Keep a key change's answer (working keys under the master key, check values): the
        host wants the next key change MACed under them, also from the next run."""
        assert self.static and self.tmk_file is not None
        kept = {"39": answer["39"], "63": answer["63"]}
        write_private(self.working_keys_file, json.dumps(kept) + "\n")

    @property
    def working_keys_file(self) -> Path:
        assert self.tmk_file is not None
        return self.tmk_file.with_name(self.tmk_file.name + WORKING_KEYS_SUFFIX)

    def _saved_key_change(self) -> dict[str, str] | None:
        if not self.static:
            return None
        try:
            raw = json.loads(self.working_keys_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            return None
        return {str(k): v for k, v in raw.items()}


def _read_ksn_state(profile: str, ik_file: Path) -> bytes | None:
    path = ik_file.with_name(ik_file.name + KSN_STATE_SUFFIX)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SimError(f"cannot read {path}: {exc.strerror}") from None
    return _parse_ksn(profile, text, f"the KSN in {path}")


def check_pin(pin: str, where: str = "--pin") -> str:
    if not (pin.isascii() and pin.isdigit() and PIN_DIGITS_MIN <= len(pin) <= PIN_DIGITS_MAX):
        raise SimError(f"{where} must be {PIN_DIGITS_MIN} to {PIN_DIGITS_MAX} digits")
    return pin


# -- protected exchanges ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Exchange:
    """One request as sent (``sealed.payload``: MAC, KSN and PIN block included) and its answer."""

    sealed: Sealed
    answer: dict[str, str]
    elapsed_s: float


class TerminalLink:
    """A connection of a terminal with a security profile: a key change for static keys, then
    requests sealed by the profile and answers whose MAC is checked.

    ``security`` may be shared by the connections of one static-key terminal (one set of working
    keys); a DUKPT terminal's counter belongs to one connection at a time.
    """

    def __init__(
        self, conn: TerminalConnection, keys: TerminalKeys, security: TerminalSecurity
    ) -> None:
        self.conn = conn
        self.keys = keys
        self.security = security

    async def key_change(self, terminal: str, store: str) -> str:
        """0800 70=101: new working keys, checked against their check values and kept. Returns
        the line to show (check values only, never a key).

        Error handling: :class:`SimError` when the host refuses it.
        """
        assert self.keys.static

        def request() -> dict[str, str]:
            return build_request(
                "signon", terminal=terminal, store=store, overrides={"70": KEY_CHANGE_CODE}
            )

        answer = (await self.send(request())).answer
        if answer.get("39") == REFUSED and not self.security.needs_key_change:
            # The host has no working keys for this terminal any more (an operator set its
            # profile again): start over with the first key change, which carries no MAC.
            self.security = TerminalSecurity(self.keys.profile, tmk=self.keys.tmk)
            answer = (await self.send(request())).answer
        if answer.get("39") == REFUSED:
            raise SimError(
                f"the host refused the key change of {terminal} (63): it holds working keys "
                f"this simulator does not have (kept in {self.keys.working_keys_file}); "
                "an operator resets them with `authsrv terminals security`"
            )
        try:
            mac_kcv, pin_kcv = self.security.accept_key_change(answer)
        except (TerminalSecurityError, ValueError) as exc:
            raise SimError(f"key change of {terminal}: {exc}") from None
        self.keys.save_key_change(answer)
        return (
            f"key change {terminal} ({self.keys.profile}): MAC key check value {mac_kcv}, "
            f"PIN key check value {pin_kcv}"
        )

    async def send(
        self, fields: Mapping[str, str], pin: str | None = None, timeout_s: float = ANSWER_TIMEOUT_S
    ) -> Exchange:
        """Seal ``fields`` (and ``pin``), keep the KSN, send, check the answer's MAC."""
        started = time.perf_counter()
        try:
            sealed = self.security.seal(fields, pin)
        except TerminalSecurityError as exc:
            raise SimError(str(exc)) from None
        if self.keys.dukpt:
            self.keys.save_ksn(self.security)
        return await self._round_trip(sealed, started, timeout_s)

    async def resend(self, sealed: Sealed, timeout_s: float = ANSWER_TIMEOUT_S) -> Exchange:
        """The same bytes again (same MAC, same KSN): a terminal that got no answer."""
        return await self._round_trip(sealed, time.perf_counter(), timeout_s)

    async def _round_trip(self, sealed: Sealed, started: float, timeout_s: float) -> Exchange:
        await self.conn.send_raw(sealed.payload)
        with trio.move_on_after(timeout_s) as scope:
            raw = await self.conn.receive_raw()
        if scope.cancelled_caught:
            raise SimError(f"no answer within {timeout_s:g} s")
        answer = decode_response(raw)
        try:
            self.security.check_answer(sealed, raw, answer)
        except TerminalSecurityError as exc:
            raise SimError(str(exc)) from None
        return Exchange(sealed, answer, time.perf_counter() - started)


async def open_link(
    host: str, port: int, keys: TerminalKeys, security: TerminalSecurity | None = None
) -> TerminalLink:
    """A connection for a terminal; ``security`` shares a terminal side between connections."""
    conn = await TerminalConnection.open(host, port)
    return TerminalLink(conn, keys, security if security is not None else keys.security())


# -- scenario files -----------------------------------------------------------------------------
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
    terminal = data.get("terminal", {})
    if not isinstance(terminal, dict):
        raise SimError(f"scenario {path}: [terminal] must be a table")
    unknown = set(terminal) - TERMINAL_KEYS
    if unknown:
        raise SimError(
            f"scenario {path}: [terminal] has unknown key(s) {', '.join(sorted(unknown))}"
        )
    for i, step in enumerate(steps, 1):
        unknown = set(step) - STEP_KEYS
        if unknown:
            raise SimError(f"scenario step {i}: unknown key(s) {', '.join(sorted(unknown))}")
        if step.get("op") not in OPERATIONS:
            raise SimError(f"scenario step {i}: op must be one of {', '.join(OPERATIONS)}")
        for ref in ("original", "resend"):
            if ref in step and not (isinstance(step[ref], int) and 1 <= step[ref] < i):
                raise SimError(f"scenario step {i}: {ref} must name an earlier step number")
        if "pin" in step:
            check_pin(str(step["pin"]), f"scenario step {i}: pin")
        _check_batch_keys(step, i)
    # Key files are named relative to the scenario file.
    for key in ("tmk_file", "ik_file"):
        if key in terminal:
            terminal[key] = str(path.parent / str(terminal[key]))
    return data


def _check_batch_keys(step: Mapping[str, Any], i: int) -> None:
    batch_keys = {"batch", "batch_offset_minor", "totals"} & set(step)
    if batch_keys and step.get("op") != "close-batch":
        raise SimError(f"scenario step {i}: {', '.join(sorted(batch_keys))} go with close-batch")
    batch = step.get("batch")
    if batch is not None and not (isinstance(batch, str) and len(batch) == 6 and batch.isdigit()):
        raise SimError(f'scenario step {i}: batch must be 6 digits in quotes, e.g. "000001"')
    if not isinstance(step.get("batch_offset_minor", 0), int):
        raise SimError(f"scenario step {i}: batch_offset_minor must be an integer")
    totals = step.get("totals", {})
    if not (isinstance(totals, dict) and all(isinstance(v, str) for v in totals.values())):
        raise SimError(f'scenario step {i}: totals must be a table like {{ debits = "2/35.00" }}')


def _close_batch_request(
    s: Mapping[str, Any],
    batches: TerminalBatches,
    currency: str,
    overrides: Mapping[str, str | None],
    i: int,
) -> dict[str, str]:
    """A close-batch step's 0500: the kept totals, or the step's, maybe deliberately off."""
    terminal = str(s.get("terminal", "T0000001"))
    if "totals" in s:
        text = ",".join(f"{kind}={value}" for kind, value in s["totals"].items())
        totals = parse_totals(text, currency, f"scenario step {i}: totals")
    else:
        totals = batches.current(terminal, currency)
    return build_request(
        "close-batch",
        terminal=terminal,
        store=str(s.get("store", "S0001")),
        currency=currency,
        totals=with_offset(totals, int(s.get("batch_offset_minor", 0))),
        batch_number=str(s["batch"]) if "batch" in s else batches.number(terminal),
        overrides=overrides,
    )


def scenario_keys(data: Mapping[str, Any]) -> TerminalKeys:
    """The terminal keys of a scenario's ``[terminal]`` table."""
    table = data.get("terminal", {})

    def path(key: str) -> Path | None:
        return Path(str(table[key])) if key in table else None

    ksn = table.get("ksn")
    return TerminalKeys.from_options(
        table.get("security"),
        path("tmk_file"),
        path("ik_file"),
        None if ksn is None else str(ksn),
        where="[terminal] ",
    )


async def run_scenario(
    data: dict[str, Any],
    book: CardBook,
    host: str,
    port: int,
    *,
    verbose: bool = False,
    keys: TerminalKeys | None = None,
) -> ScenarioResult:
    """Play the steps on one connection. ``keys`` (else the scenario's ``[terminal]``) protect
    the requests; static keys start with a key change."""
    keys = keys if keys is not None else scenario_keys(data)
    defaults = data.get("defaults", {})
    passed = failed = 0
    lines: list[str] = [f"scenario: {data.get('name', 'unnamed')}"]
    sent: dict[int, dict[str, str]] = {}
    sealed: dict[int, Sealed] = {}
    batches = TerminalBatches()  # what the terminal counted since its last close-batch
    link = await open_link(host, port, keys)
    async with link.conn:
        if keys.static:
            lines.append(
                await link.key_change(
                    str(defaults.get("terminal", "T0000001")), str(defaults.get("store", "S0001"))
                )
            )
        for i, step in enumerate(data["step"], 1):
            s = {**defaults, **step}
            currency = str(s.get("currency", "978"))
            op = s["op"]
            overrides = {str(k): (str(v) or None) for k, v in s.get("fields", {}).items()}
            pin = check_pin(str(s["pin"]), f"scenario step {i}: pin") if "pin" in s else None
            if pin is not None and keys.profile == "none":
                raise SimError(f"scenario step {i}: a pin needs a [terminal] security profile")
            same_bytes = "resend" in s and not overrides and not s.get("as_repeat")
            if "resend" in s:
                previous = sent[int(s["resend"])]
                req = as_repeat(previous) if s.get("as_repeat") else dict(previous)
                for key, value in overrides.items():
                    if value is None:
                        req.pop(key, None)
                    else:
                        req[key] = value
            elif op == "close-batch":
                req = _close_batch_request(s, batches, currency, overrides, i)
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
            if same_bytes:
                ex = await link.resend(sealed[int(s["resend"])])
            else:
                ex = await link.send(req, pin)
            sealed[i] = ex.sealed
            if "resend" not in s:
                if op != "close-batch":
                    batches.record(req, ex.answer)
                elif ex.answer.get("39") in ("00", "95"):  # closed, in balance or not
                    batches.closed(req["41"], currency)
            problems = _check(s, ex.answer, currency)
            verdict = "PASS" if not problems else "FAIL " + "; ".join(problems)
            passed += not problems
            failed += bool(problems)
            lines.append(f"[{i}] {s.get('name', op)}: {verdict}")
            if req["t"][:3] == "050":
                lines.append(describe_close_batch(req, ex.answer, ex.elapsed_s, verbose))
            else:
                lines.append(describe_exchange(op, req, ex.answer, ex.elapsed_s, verbose))
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
