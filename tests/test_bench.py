"""``authsrv bench``: its wire shortcuts agree with pyiso8583, its card numbers are valid and
stay in memory, and a short run on a small store answers sensibly and leaves a store that
passes ``authsrv check`` (a smoke test: no timing is asserted)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import iso8583
import pytest
from psec import tr31

from authsrv.logs import configure_logging
from bench.commands import _parse_mix
from bench.generator import REDEEM_AMOUNTS
from bench.host import parse_writer_sample, writer_figures, writer_sample
from bench.provision import BENCH_PIN, PAN_LEN, PREFIX, BenchError, CardNumbers
from bench.report import parse_slo, render_text, warnings_for
from bench.security import KEYS_FILE, KeyChangeError, Sealer, TerminalKeyset
from bench.wire import (
    HEADER_LEN,
    OPS,
    TIME_FIELDS_LEN,
    Template,
    answer_stan_rc,
    build_template,
)
from keys import dukpt, mac, pinblock
from protocol.cards import luhn_valid
from protocol.dialect import HOUSE_ASCII
from protocol.messages import encode_message
from protocol.tlv import decode_tlv, encode_tlv
from simulators.security import TerminalSecurity
from tests.helpers import run_cli, scan_for

SMOKE_CARDS = 2000
SMOKE_TERMINALS = 8
SEED = 1
SENSIBLE_RCS = {"00", "10", "51"}
DIGIT_RUN = re.compile(rb"(?<![0-9])[0-9]{13,19}(?![0-9])")

ANSWERS: list[dict[str, str]] = [
    {"t": "0210", "2": "6999900375198778", "3": "000000", "11": "000042", "39": "51"},
    {
        "t": "0210",
        "2": "6999900375198778",
        "3": "000000",
        "4": "000000001000",
        "7": "1122103000",
        "11": "123456",
        "12": "103000",
        "13": "1122",
        "37": "612345000001",
        "38": "000001",
        "39": "00",
        "41": "BT000001",
        "42": "B0001".ljust(15),
        "49": "978",
        "54": "6001978C000000001000" * 2,
        "63": "RT012BALANCE 10.00",
    },
    {  # a reversal's answer: secondary bitmap (field 90), field 32 before 39
        "t": "0410",
        "2": "6999900375198778",
        "3": "000000",
        "4": "000000000150",
        "7": "1122103000",
        "11": "000007",
        "32": "12345",
        "39": "00",
        "41": "BT000001",
        "90": "020000000611221029590000000000000000000000",
    },
    {"t": "0810", "7": "1122103000", "11": "999999", "39": "12", "70": "301"},
]


@pytest.mark.parametrize("fields", ANSWERS, ids=[a["t"] + "/" + a["39"] for a in ANSWERS])
def test_answer_reader_agrees_with_pyiso8583(fields: dict[str, str]) -> None:
    payload = encode_message(fields)
    decoded, _ = iso8583.decode(payload, HOUSE_ASCII)
    assert answer_stan_rc(payload) == (decoded["11"].encode(), decoded["39"].encode())


def test_answer_reader_without_field_39_gives_empty_rc() -> None:
    payload = encode_message({"t": "0200", "3": "300000", "11": "000001", "41": "BT000001"})
    assert answer_stan_rc(payload) == (b"000001", b"")


@pytest.mark.parametrize("op", OPS)
def test_patched_template_decodes_to_the_patched_values(op: str) -> None:
    template = build_template(op, "BT000003", "B0002")
    numbers = CardNumbers(SEED, 10)
    frame = bytearray(template.frame)
    times = b"1122103000" + b"000777" + b"113000" + b"1122"
    frame[template.time_at : template.time_at + TIME_FIELDS_LEN] = times
    frame[template.pan_at : template.pan_at + PAN_LEN] = numbers.slice(3)
    if template.amount_at >= 0:
        frame[template.amount_at : template.amount_at + 12] = REDEEM_AMOUNTS[2]
    if template.original_at >= 0:
        frame[template.original_at : template.original_at + 20] = b"0200000555" + b"1122102959"
    decoded, _ = iso8583.decode(bytes(frame[HEADER_LEN:]), HOUSE_ASCII)
    assert int.from_bytes(frame[:HEADER_LEN], "big") == len(frame) - HEADER_LEN
    assert (decoded["7"], decoded["11"], decoded["12"], decoded["13"]) == (
        "1122103000",
        "000777",
        "113000",
        "1122",
    )
    assert decoded["2"] == numbers.slice(3).decode()
    assert decoded["41"] == "BT000003"
    assert decoded["42"].strip() == "B0002"
    assert decoded.get("4") == (REDEEM_AMOUNTS[2].decode() if op != "balance" else None)
    if op == "reversal":
        assert decoded["t"] == "0400"
        assert decoded["90"][:20] == "02000005551122102959"


def _patched(op: str, security: str, pin: bool = False) -> tuple[bytearray, Template]:
    """A redeem or reversal frame of terminal BT000003 with every placeholder filled."""
    template = build_template(op, "BT000003", "B0002", security=security, pin=pin)
    frame = bytearray(template.frame)
    frame[template.time_at : template.time_at + TIME_FIELDS_LEN] = (
        b"1122103000000777113000" + b"1122"
    )
    frame[template.pan_at : template.pan_at + PAN_LEN] = CardNumbers(SEED, 10).slice(3)
    frame[template.amount_at : template.amount_at + 12] = REDEEM_AMOUNTS[2]
    if template.original_at >= 0:
        frame[template.original_at : template.original_at + 20] = b"0200000555" + b"1122102959"
    return frame, template


def _unsealed(frame: bytes | bytearray) -> dict[str, str]:
    """The frame's fields without what sealing adds (field 48 KS and PB, 52, the MAC)."""
    decoded, _ = iso8583.decode(bytes(frame[HEADER_LEN:]), HOUSE_ASCII)
    return {k: v for k, v in decoded.items() if k not in ("p", "s", "1", "48", "52", "64", "128")}


DUKPT_CASES = [
    ("dukpt-aes", "redeem", False),
    ("dukpt-aes", "reversal", False),
    ("dukpt-tdes", "redeem", False),
    ("dukpt-tdes", "reversal", False),
    ("dukpt-tdes", "redeem", True),  # format 0 is deterministic: the same bytes
]


@pytest.mark.parametrize(("profile", "op", "pin"), DUKPT_CASES)
def test_in_place_dukpt_sealing_matches_the_simulator(profile: str, op: str, pin: bool) -> None:
    bdk = bytes(range(16))
    if profile == "dukpt-aes":
        ksn = bytes.fromhex("BE7C000000000003" + "00000009")
        ik = dukpt.aes_initial_key(bdk, ksn[:8])
    else:
        ksn = bytes.fromhex("BE7C0000000000600009")
        ik = dukpt.tdes_ipek(bdk, ksn)
    keyset = TerminalKeyset(profile, initial_key=ik, ksn=ksn)
    sealer = Sealer(keyset)
    simulator = TerminalSecurity(profile, initial_key=ik, ksn=ksn)
    for _ in range(3):  # the counter steps the same way on both sides
        frame, template = _patched(op, profile, pin)
        response_key = sealer.seal(frame, template)
        expected = simulator.seal(_unsealed(frame), BENCH_PIN if pin else None)
        assert bytes(frame[HEADER_LEN:]) == expected.payload
        assert response_key == expected.response_key
    assert "initial_key" not in repr(keyset) and ik.hex() not in repr(keyset).lower()


def test_in_place_aes_pin_block_is_the_cards_pin_under_the_hosts_key() -> None:
    """Format 4 has random fill: the host's own derivation from the BDK reads the PIN back."""
    bdk = bytes(range(16))
    ksn = bytes.fromhex("BE7C000000000003" + "00000009")
    sealer = Sealer(
        TerminalKeyset("dukpt-aes", initial_key=dukpt.aes_initial_key(bdk, ksn[:8]), ksn=ksn)
    )
    frame, template = _patched("redeem", "dukpt-aes", pin=True)
    sealer.seal(frame, template)
    fields = iso8583.decode(bytes(frame[HEADER_LEN:]), HOUSE_ASCII)[0]
    tags = decode_tlv(fields["48"], 48)
    host = dukpt.aes_keys_from_bdk(bdk, bytes.fromhex(tags["KS"]))
    block = bytes.fromhex(tags["PB"])
    assert pinblock.decrypt_pin(block, fields["2"], host.pin, formats_allowed=frozenset({4})) == (
        BENCH_PIN
    )
    data = bytes(frame[HEADER_LEN:-16])
    assert mac.cmac(host.mac_request, data, algorithm="aes")[:8].hex().upper() == fields["64"]


def _key_change_answer(
    tmk: bytes, aes: bool, mac_key: bytes, pin_key: bytes, kcvs: str | None = None
) -> bytes:
    version, alg, usage = ("D", "A", "M6") if aes else ("B", "T", "M3")
    blocks = tr31.wrap(tmk, f"{version}0000{usage}{alg}C00N0000", mac_key) + tr31.wrap(
        tmk, f"{version}0000P0{alg}E00N0000", pin_key
    )
    kind: mac.CipherName = "aes" if aes else "tdes"
    kcvs = kcvs or mac.kcv(mac_key, kind) + mac.kcv(pin_key, kind)
    fields = {"t": "0810", "7": "1122103000", "11": "000001", "39": "00", "41": "BT000003"}
    return encode_message(fields | {"63": encode_tlv({"KB": blocks, "KC": kcvs}), "70": "101"})


@pytest.mark.parametrize("profile", ["mac-aes", "mac-tdes"])
def test_in_place_static_key_sealing_matches_the_simulator(profile: str) -> None:
    tmk, mac_key, pin_key = bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48))
    aes = profile == "mac-aes"
    answer = _key_change_answer(tmk, aes, mac_key, pin_key)
    sealer = Sealer(TerminalKeyset(profile, tmk=tmk))
    assert not sealer.ready
    sealed = sealer.key_change_request("BT000003", "B0002", "000001")
    sealer.take_key_change(sealed, answer)
    assert sealer.ready
    simulator = TerminalSecurity(profile, tmk=tmk)
    simulator.accept_key_change(iso8583.decode(answer, HOUSE_ASCII)[0])
    frame, template = _patched("redeem", profile, pin=not aes)
    assert template.ksn_at == -1
    response_key = sealer.seal(frame, template)
    pin = None if aes else BENCH_PIN
    assert bytes(frame[HEADER_LEN:]) == simulator.seal(_unsealed(frame), pin).payload
    assert response_key == mac_key
    # An answer MACed under the key verifies; one byte changed does not; 63 carries no MAC.
    answer_fields = {"t": "0210", "11": "000777", "39": "00", "41": "BT000003", "64": "0" * 16}
    payload = encode_message(answer_fields)
    data = payload[:-16]
    tag = mac.cmac(mac_key, data, algorithm="aes")[:8] if aes else mac.retail_mac(mac_key, data)
    good = data + tag.hex().upper().encode()
    assert sealer.answer_ok(good, b"00", response_key)
    assert not sealer.answer_ok(good.replace(b"0210", b"0230", 1), b"00", response_key)
    assert sealer.answer_ok(b"anything", b"63", response_key)


def test_key_change_with_wrong_check_values_is_refused() -> None:
    tmk = bytes(range(16))
    answer = _key_change_answer(tmk, True, bytes(16), bytes(range(16)), kcvs="0" * 12)
    sealer = Sealer(TerminalKeyset("mac-aes", tmk=tmk))
    sealed = sealer.key_change_request("BT000003", "B0002", "000001")
    with pytest.raises(KeyChangeError, match="check values do not match KC"):
        sealer.take_key_change(sealed, answer)
    assert not sealer.ready


def test_card_numbers_are_valid_distinct_in_range_and_reproducible() -> None:
    numbers = CardNumbers(SEED, 5000)
    pans = [numbers.slice(i).decode() for i in range(numbers.count)]
    assert len(set(pans)) == len(pans)
    assert all(p.startswith(PREFIX) and len(p) == PAN_LEN and luhn_valid(p) for p in pans)
    assert [CardNumbers(SEED, 5000).slice(i) for i in (0, 4999)] == [
        numbers.slice(0),
        numbers.slice(4999),
    ]
    assert CardNumbers(SEED + 1, 1).slice(0) != numbers.slice(0)
    assert pans[0] not in repr(numbers)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redeem=70,balance=15,load=10,reversal=5", {"redeem": 0.7, "balance": 0.15}),
        ("redeem=1", {"redeem": 1.0}),
        ("redeem=1,load=0", {"redeem": 1.0}),
    ],
)
def test_mix(text: str, expected: dict[str, float]) -> None:
    mix = _parse_mix(text)
    assert abs(sum(mix.values()) - 1) < 1e-9
    for op, share in expected.items():
        assert mix[op] == pytest.approx(share)


@pytest.mark.parametrize("text", ["refund=10", "redeem", "redeem=x", "redeem=-1", "redeem=0"])
def test_bad_mix(text: str) -> None:
    with pytest.raises(BenchError):
        _parse_mix(text)


def _result(p99_ms: float, rate: float, errors: int) -> dict[str, Any]:
    latency = {"p50": 1.0, "p90": 2.0, "p99": p99_ms, "p99.9": p99_ms, "max": p99_ms}
    return {"latency_ms": latency, "achieved_rate_per_s": rate, "errors": errors, "timeouts": 0}


@pytest.mark.parametrize(
    ("slo", "result", "violated"),
    [
        ("p99_ms=10", _result(9.9, 100, 0), []),
        ("p99_ms=10", _result(10.1, 100, 0), ["p99_ms"]),
        ("p99_ms=10,min_rate=5000", _result(5, 4999, 0), ["min_rate"]),
        ("max_errors=0,p99_ms=1", _result(5, 1, 3), ["max_errors", "p99_ms"]),
    ],
)
def test_slo(slo: str, result: dict[str, Any], violated: list[str]) -> None:
    lines = parse_slo(slo).check(result)
    assert [line.split("=")[0] for line in lines] == violated


@pytest.mark.parametrize("text", ["p98_ms=1", "p99_ms", "p99_ms=fast"])
def test_bad_slo(text: str) -> None:
    with pytest.raises(ValueError):
        parse_slo(text)


def _luhn_runs(blob: bytes) -> list[bytes]:
    return [m for m in DIGIT_RUN.findall(blob) if luhn_valid(m.decode())]


def _run_section(rc: dict[str, int]) -> dict[str, Any]:
    """A main-run section of a report as the bench writes it, quiet in every other way."""
    return {
        "generator": {"per_client": [{"client": 0, "cpu_cores": 0.2}], "cpu_cores": 0.2},
        "server_cpu_cores": 0.8,
        "machine": {"other_cores": 0.0, "steal_cores": 0.0, "busiest_others": []},
        "target_rate_per_s": 1000.0,
        "offered_rate_per_s": 1000.0,
        "sent": sum(rc.values()),
        "errors": 0,
        "timeouts": 0,
        "client_failures": [],
        "replays_differing": 0,
        "rc": rc,
    }


@pytest.mark.parametrize(
    ("rc", "warned"),
    [
        ({"00": 950, "51": 50}, False),
        ({"00": 900, "10": 20, "51": 80}, False),
        ({"63": 1000}, True),
        ({"00": 500, "14": 500}, True),
    ],
)
def test_a_run_mostly_of_declines_is_flagged(rc: dict[str, int], warned: bool) -> None:
    """A host answering the bench's terminals 63 (not in demo mode, no keys) is fast because it
    does no ledger work: the report says so instead of passing it off as authorizations."""
    # The echo baseline's answers are the requests sent back: never flagged.
    echo = _run_section({"echo": 1000})
    report = {"machine": {"cores": 2}, "result": _run_section(rc), "echo": echo}
    flagged = [w for w in warnings_for(report) if "of the answers approved" in w]
    assert len(flagged) == int(warned)
    assert all(w.startswith("main run: only") for w in flagged)


def test_writer_figures_come_from_the_hosts_own_metrics() -> None:
    """The window's writer figures are differences of the host's histograms, under the names
    the host exports them by."""
    from prometheus_client import generate_latest

    from authsrv.metrics import Metrics
    from authsrv.store import LockTimes

    metrics = Metrics()
    before = parse_writer_sample(generate_latest(metrics.registry).decode())
    for size, wait_s, held_s in ((10, 0.001, 0.002), (30, 0.003, 0.004)):
        metrics.batch_size.observe(size)
        metrics.commit_duration.observe(wait_s + held_s + 0.0005)
        metrics.lock_times(LockTimes(wait_s, held_s))
    after = parse_writer_sample(generate_latest(metrics.registry).decode())
    assert writer_figures(before, after, wall_s=0.5) == {
        "commits_per_s": 4.0,
        "requests_per_commit": 20.0,
        "batch_ms": 5.5,
        "lock_wait_ms": 2.0,
        "lock_held_share": 0.012,
    }
    assert writer_figures(after, after, wall_s=0.5) is None  # no commit in the window
    assert writer_figures(None, after, wall_s=0.5) is None  # the host's metrics unread
    older = "\n".join(
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if "write_lock" not in line
    )
    assert parse_writer_sample(older) is None  # a host without the lock's histograms
    assert writer_sample("http://example.org/metrics") is None  # only the host's own address


def test_smoke_run_on_a_small_store(tmp_path: Path) -> None:
    data = tmp_path / "bench-store"
    out = run_cli(
        "bench",
        "--cards",
        str(SMOKE_CARDS),
        "--closed",
        str(SMOKE_TERMINALS),
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
        "--seed",
        str(SEED),
        "--data",
        str(data),
        "--json",
        "--slo",
        "max_errors=0,max_timeouts=0",
        timeout=90,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["bench"]["mode"] == "closed"
    assert report["bench"]["terminals"] == SMOKE_TERMINALS
    assert report["provisioning"]["created"] is True
    assert report["provisioning"]["cards"] == SMOKE_CARDS
    host = report["host"]
    assert host["started_by_bench"] is True
    assert host["exit_code"] == 0
    assert host["log_requests"] is True and host["writer_nice"] == 0
    result = report["result"]
    assert result["answered"] > 0
    assert result["errors"] == 0 and result["timeouts"] == 0
    assert set(result["rc"]) <= SENSIBLE_RCS, result["rc"]
    assert set(result["rc_by_op"].get("reversal", {})) <= {"00"}, "reversals must find originals"
    assert result["replays_differing"] == 0
    latency = result["latency_ms"]
    assert latency["p50"] <= latency["p99"] <= latency["max"]
    assert result["server_cpu_us_per_request"] is not None
    assert result["generator"]["cpu_us_per_request"] is not None
    # The host's writers in the window, read from its own metrics.
    writer = result["writer"]
    assert writer["commits_per_s"] > 0 and writer["requests_per_commit"] >= 1
    assert 0 <= writer["lock_wait_ms"] < writer["batch_ms"]
    assert 0 < writer["lock_held_share"] <= 1.05
    assert report["check"]["passed"] is True
    assert report["slo"]["passed"] is True
    assert report["exit_code"] == 0
    assert report["echo"] is None and report["ratio_auth_per_echo"] is None

    check = run_cli("check", "--data", str(data))
    assert check.returncode == 0, check.stdout + check.stderr

    # No card number of the bench anywhere: not in its output, the host's log or the store.
    log = data / "host.log"
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "request" for e in events), "the host logged no request"
    for text in (out.stdout.encode(), out.stderr.encode(), log.read_bytes()):
        assert _luhn_runs(text) == []
    numbers = CardNumbers(SEED, SMOKE_CARDS)
    pans = [numbers.slice(i) for i in range(SMOKE_CARDS)]
    for path in data.iterdir():
        blob = path.read_bytes()
        assert not [p for p in pans if p in blob], f"a card number in {path.name}"


@pytest.mark.parametrize("profile", ["mac-aes", "dukpt-tdes"])
def test_smoke_run_with_terminal_security(tmp_path: Path, profile: str) -> None:
    """A host without demo mode: MACed requests and answers, a key change per connection
    (static keys) or a counter per request (DUKPT), retransmissions with the same bytes, and
    PIN blocks on half the redeems (AES format 4 in 48 PB, TDES format 0 in 52)."""
    data = tmp_path / "bench-store"
    out = run_cli(
        "bench",
        "--cards",
        "500",
        "--closed",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--data",
        str(data),
        "--security",
        profile,
        "--retransmit-share",
        "0.1",
        "--pin-share",
        "0.5",
        "--writer-nice",
        "-5",
        "--json",
        "--slo",
        "max_errors=0,max_timeouts=0",
        timeout=90,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["bench"]["security"] == profile
    assert report["host"]["demo_mode"] is False
    text = render_text(report).splitlines()
    assert f"security: {profile}" in text[0]
    # The host was started with the writer's nice value (and said so when it began).
    assert report["host"]["writer_nice"] == -5 and ", writer nice -5, " in text[2]
    started = [
        json.loads(line)
        for line in (data / "host.log").read_text().splitlines()
        if '"event":"listening"' in line
    ]
    assert [e["writer_nice"] for e in started] == [-5]
    writer = report["result"]["writer"]
    assert [ln for ln in text if ln.startswith("writer ")] == [
        f"writer         {writer['commits_per_s']:,.0f} commits/s, "
        f"{writer['requests_per_commit']:.1f} requests per commit, {writer['batch_ms']:.2f} ms "
        f"per batch (lock wait {writer['lock_wait_ms']:.2f} ms of it), write lock held "
        f"{writer['lock_held_share']:.0%} of the time"
    ]
    result = report["result"]
    assert result["answered"] > 0 and result["retransmissions"] > 0
    assert result["errors"] == 0 and result["timeouts"] == 0, result["errors_by_kind"]
    assert set(result["rc"]) <= SENSIBLE_RCS, result["rc"]
    assert set(result["rc_by_op"].get("reversal", {})) <= {"00"}
    assert set(result["rc_by_op"]["redeem+pin"]) <= {"00", "10", "51"}, "the PIN was right"
    assert result["replays_differing"] == 0
    assert result["key_changes"] == (4 if profile.startswith("mac-") else 0)
    assert report["check"]["passed"] is True
    # The terminals' clear keys stay in the bench's own 0600 file, out of the store and logs.
    keys_file = data / KEYS_FILE
    assert keys_file.stat().st_mode & 0o777 == 0o600
    clear = json.loads(keys_file.read_text())
    assert clear, "no terminal key kept"
    events = (data / "host.log").read_text()
    assert "security_violation" not in events
    for path in [*data.iterdir(), None]:
        blob = out.stdout + out.stderr if path is None else path.read_bytes().decode("latin-1")
        if path != keys_file:
            assert not [n for n, k in clear.items() if k in blob.upper()], f"a clear key in {path}"
            assert not [n for n, k in clear.items() if bytes.fromhex(k).decode("latin-1") in blob]


def test_echo_only(tmp_path: Path) -> None:
    out = run_cli(
        "bench",
        "--echo-only",
        "--closed",
        "4",
        "--cards",
        "100",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--json",
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["result"] is None and report["host"] is None
    echo = report["echo"]
    assert echo["answered"] > 0
    assert echo["errors"] == 0 and echo["timeouts"] == 0
    assert set(echo["rc"]) == {"echo"}
    assert echo["server_cpu_us_per_request"] is not None
    assert echo["writer"] is None  # an echo server has no writer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--closed", "8", "--poisson"), "--poisson goes with --rate"),
        (("--writer-nice", "1"), "--writer-nice must be between -20 and 0"),
        (("--writer-nice", "-21"), "--writer-nice must be between -20 and 0"),
        (("--writer-nice", "-5", "--port", "9"), "--writer-nice sets the bench's own host"),
        (("--stages", "0"), "--stages must be between 1 and 10000000"),
        (("--stages", "10", "--batch-size", "0"), "--batch-size must be between 1 and 10000"),
        (("--stages", "10", "--port", "9"), "--stages runs the host's code in the bench"),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...], message: str) -> None:
    out = run_cli("bench", *args)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert message in out.stderr


def test_clearing_bench_writes_and_verifies_a_day(tmp_path: Path) -> None:
    data = tmp_path / "bench"
    out = run_cli(
        "bench", "--clearing", "3000", "--cards", "300", "--data", str(data), "--json", timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)["result"]
    assert result["records"] == 3000
    assert result["build_write_s"] > 0 and result["ipm_bytes"] > 0
    files = sorted(p.name for p in (data / "settlement").iterdir())
    assert len(files) == 4 and files[0].startswith("clearing-")
    ipm = next((data / "settlement").glob("*.ipm"))
    from settlement.clearing import read_clearing_file

    records = read_clearing_file(ipm).records
    ops = {r.op for r in records}
    assert {"activate", "redeem", "load", "refund"} <= ops
    reversals = [r for r in records if r.original is not None]
    assert reversals and all(r.dc == "C" and r.op == "redeem" for r in reversals)
    ids = {r.record_id for r in records}
    assert all(r.original is not None and r.original.record_id in ids for r in reversals)
    again = run_cli("bench", "--clearing", "3000", "--data", str(data), timeout=60)
    assert again.returncode == 2 and "new --data" in again.stderr


def test_stages_bench_sends_the_workload_through_each_stage(tmp_path: Path) -> None:
    """``--stages``: the workload's requests through the host's code in the bench process,
    each stage's CPU per request reported; the store is a valid ledger afterwards and the
    test's card numbers are nowhere in it."""
    data = tmp_path / "bench"
    out = run_cli(
        "bench", "--stages", "400", "--batch-size", "10", "--cards", "200", "--data", str(data),
        "--json", timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    result = report["result"]
    assert report["bench"]["mode"] == "stages"
    assert result["requests"] == 400 and result["batches"] == 40
    cpu = result["cpu_us_per_request"]
    for stage in ("prepare", "decide", "commit", "respond"):
        assert cpu[stage] > 0, stage
    assert cpu["total"] == pytest.approx(
        cpu["prepare"] + cpu["decide"] + cpu["commit"] + cpu["respond"], abs=0.2
    )
    assert result["commit_ms_per_batch"] > 0
    # Every measured request was answered, and the mix moved money: approvals throughout.
    assert sum(result["rc"].values()) == 400
    assert result["rc"].get("00", 0) >= 360
    check = run_cli("check", "--data", str(data), timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    numbers = CardNumbers(1, 200)
    assert scan_for([data], [numbers.slice(i).decode() for i in range(200)]) == []


def test_an_error_in_a_stages_run_is_logged_by_the_cli_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stages run logs to a sink of its own that closes when the run ends: an error from
    the run is still the one the CLI logs and raises (not a write to the closed sink)."""
    from authsrv.cli import main
    from bench import stages

    data = tmp_path / "bench"
    out = run_cli("bench", "--provision-only", "--cards", "200", "--data", str(data), timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]

    def broken(*_args: Any) -> None:
        raise RuntimeError("the stage broke")

    monkeypatch.setattr(stages, "_run", broken)
    try:
        with pytest.raises(RuntimeError, match="the stage broke"):
            main(["bench", "--stages", "10", "--cards", "200", "--data", str(data)])
        err = capsys.readouterr().err
        assert '"event":"unexpected_error"' in err and "RuntimeError: the stage broke" in err
    finally:
        configure_logging("info", io.StringIO())
