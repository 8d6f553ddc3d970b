"""``authsrv simulate`` as a terminal with each security profile, against a real host that runs
without demo mode: key changes, MACs, PIN blocks, DUKPT counters kept between invocations, and
the options and key files it refuses."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authsrv import keyadmin
from authsrv.admin import add_terminal
from authsrv.app import kek_path, open_store
from authsrv.cli import main
from authsrv.model import SecurityProfile, Terminal
from keys import dukpt, load_kek
from tests.helpers import authsrv_cmd, provision, run_cli, running_host

NO_DEMO = {"AUTHSRV_SECURITY_DEMO_MODE": "false"}
AES_DEVICE = "1234567890123456"  # AES KSN without its counter (initial key ID)
TDES_DEVICE = "FFFF9876543210E00000"  # TDES KSN with the 21 counter bits at zero
PIN = "1234"


@dataclass(frozen=True)
class Profile:
    """A terminal of the test store with a profile, and the simulator options it needs."""

    profile: str
    terminal: str
    store: str
    options: tuple[str, ...]
    key_file: Path


@dataclass(frozen=True)
class Secured:
    port: int
    data: Path
    cards_file: Path
    cards: list[str]
    profiles: dict[str, Profile]
    root: Path


def _key_file(path: Path, key: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """One store and host for the module: T0000001 mac-aes, T0000004 mac-tdes (master keys
    entered with keyadmin), T0000002 dukpt-aes and T0000003 dukpt-tdes (one BDK each, the
    devices' initial keys derived here as a key-injection facility would)."""
    root = tmp_path_factory.mktemp("secured")
    p = provision(root, card_count=8)
    store = open_store(p.data, 64)
    profiles: dict[str, Profile] = {}
    try:
        add_terminal(store, Terminal(id="T0000004", store_id="S0002"))
        kek = load_kek(kek_path(store.path))
        for name, terminal, store_id, alg in (
            ("mac-aes", "T0000001", "S0001", "A"),
            ("mac-tdes", "T0000004", "S0002", "T"),
        ):
            tmk = secrets.token_bytes(16)
            keyadmin.add_named_key(store, kek, f"tmk/{terminal}", tmk, alg, exportable=False)
            keyadmin.set_terminal_security(
                store, terminal, SecurityProfile(name), tmk=f"tmk/{terminal}"
            )
            path = _key_file(root / f"{terminal}.tmk", tmk)
            options: tuple[str, ...] = ("--security", name, "--tmk-file", str(path))
            profiles[name] = Profile(name, terminal, store_id, options, path)
        aes_bdk, tdes_bdk = secrets.token_bytes(16), secrets.token_bytes(16)
        keyadmin.add_named_key(store, kek, "bdk/aes", aes_bdk, "A", exportable=False)
        keyadmin.add_named_key(store, kek, "bdk/tdes", tdes_bdk, "T", exportable=False)
        keyadmin.set_terminal_security(
            store, "T0000002", SecurityProfile.DUKPT_AES, bdk="bdk/aes", ksn_prefix=AES_DEVICE
        )
        keyadmin.set_terminal_security(
            store, "T0000003", SecurityProfile.DUKPT_TDES, bdk="bdk/tdes", ksn_prefix=TDES_DEVICE
        )
    finally:
        store.close()
    aes_ik = dukpt.aes_initial_key(aes_bdk, bytes.fromhex(AES_DEVICE))
    tdes_ik = dukpt.tdes_ipek(tdes_bdk, bytes.fromhex(TDES_DEVICE))
    for name, terminal, store_id, ik, ksn in (
        ("dukpt-aes", "T0000002", "S0001", aes_ik, AES_DEVICE + "00000000"),
        ("dukpt-tdes", "T0000003", "S0002", tdes_ik, TDES_DEVICE),
    ):
        path = _key_file(root / f"{terminal}.ik", ik)
        options = ("--security", name, "--ik-file", str(path), "--ksn", ksn)
        profiles[name] = Profile(name, terminal, store_id, options, path)
    with running_host(p.data, root / "host.log", env=NO_DEMO) as host:
        yield Secured(host.port, p.data, p.cards_file, p.cards, profiles, root)


def _simulate(s: Secured, prof: Profile | None, *args: str) -> subprocess.CompletedProcess[str]:
    where = ("--terminal", prof.terminal, "--store", prof.store) if prof else ()
    return run_cli(
        "simulate",
        *args,
        "--port",
        str(s.port),
        "--cards",
        str(s.cards_file),
        *where,
        *(prof.options if prof else ()),
    )


def _ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == ""
    return out.stdout


def _set_pin(s: Secured, card: str, pin: str) -> None:
    args = ["cards", "set-pin", "--data", str(s.data), "--card", card, "--cards", str(s.cards_file)]
    out = subprocess.run(
        [*authsrv_cmd(), *args],
        input=pin + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _no_secrets(s: Secured, *texts: str) -> None:
    keys = [prof.key_file.read_text().strip().upper() for prof in s.profiles.values()]
    for text in texts:
        assert not [k for k in keys if k in text.upper()], "a clear key in the output"
        assert not [pan for pan in s.cards if pan in text], "a card number in the output"


def test_mac_aes_key_change_activate_then_redeem(secured: Secured) -> None:
    prof = secured.profiles["mac-aes"]
    first = _ok(_simulate(secured, prof, "activate", "--card", "@1", "--amount", "50.00"))
    assert "key change T0000001 (mac-aes): MAC key check value" in first
    assert "rc 00 approved" in first and "balance 50.00" in first
    # A second invocation: its key change is MACed with the working keys the first one kept.
    kept = prof.key_file.with_name(prof.key_file.name + ".keys")
    assert kept.stat().st_mode & 0o777 == 0o600
    second = _ok(_simulate(secured, prof, "redeem", "--card", "@1", "--amount", "5.00"))
    assert "rc 00 approved" in second and "balance 45.00" in second
    kcv = [line for line in (first + second).splitlines() if line.startswith("key change")]
    assert len(kcv) == 2 and kcv[0] != kcv[1], "each connection gets new working keys"
    # The same redeem again, same bytes (same MAC): replayed, nothing moves.
    again = _ok(
        _simulate(secured, prof, "redeem", "--card", "@1", "--amount", "5.00", "--retransmit", "1")
    )
    assert again.count("rc 00 approved") == 2 and again.count("balance 40.00") == 2
    _no_secrets(secured, first, second, again)


def test_mac_aes_terminal_without_mac_is_refused(secured: Secured) -> None:
    prof = secured.profiles["mac-aes"]
    out = _ok(
        _simulate(
            secured,
            None,
            "balance",
            "--card",
            "@1",
            "--terminal",
            prof.terminal,
            "--store",
            prof.store,
        )
    )
    assert "rc 63 security violation" in out


@pytest.mark.parametrize("name", ["dukpt-aes", "dukpt-tdes", "mac-tdes"])
def test_pin_right_and_wrong(secured: Secured, name: str) -> None:
    prof = secured.profiles[name]
    card = {"dukpt-aes": "@2", "dukpt-tdes": "@3", "mac-tdes": "@4"}[name]
    _ok(_simulate(secured, prof, "activate", "--card", card, "--amount", "100.00"))
    _set_pin(secured, card, PIN)
    right = _ok(
        _simulate(secured, prof, "redeem", "--card", card, "--amount", "10.00", "--pin", PIN)
    )
    assert "rc 00 approved" in right and "balance 90.00" in right
    # A second invocation in a row: the counter continues from the state file.
    wrong = _ok(
        _simulate(secured, prof, "redeem", "--card", card, "--amount", "10.00", "--pin", "9999")
    )
    assert "rc 55 incorrect PIN" in wrong
    balance = _ok(_simulate(secured, prof, "balance", "--card", card))
    assert "rc 00 approved" in balance and "balance 90.00" in balance
    _no_secrets(secured, right, wrong, balance)


@pytest.mark.parametrize("name", ["mac-aes", "mac-tdes", "dukpt-aes", "dukpt-tdes"])
def test_close_batch_is_maced_both_ways(secured: Secured, name: str) -> None:
    """A 0500 goes MACed in field 128 (the totals need the secondary bitmap); the simulator
    checks the 0510's MAC. The first close takes whatever the batch holds; the second finds it
    empty: zeros are in balance."""
    prof = secured.profiles[name]
    first = _ok(_simulate(secured, prof, "close-batch", "--verbose"))
    assert "rc 00 IN BALANCE" in first or "rc 95 OUT OF BALANCE" in first
    assert "    128  " in first
    second = _ok(_simulate(secured, prof, "close-batch", "--batch", "000002"))
    assert "batch 000002" in second and "rc 00 IN BALANCE" in second
    _no_secrets(secured, first, second)


def test_dukpt_counter_kept_between_invocations(secured: Secured) -> None:
    prof = secured.profiles["dukpt-aes"]
    state = prof.key_file.with_name(prof.key_file.name + ".ksn")
    counters = []
    for _ in range(2):
        out = _ok(_simulate(secured, prof, "echo", "--verbose"))
        assert "rc 00 approved" in out
        ksn = state.read_text().strip()
        assert ksn.startswith(AES_DEVICE) and f"KSN  {ksn}" in out
        counters.append(int(ksn[16:], 16))
    assert counters[1] > counters[0] > 0
    assert state.stat().st_mode & 0o777 == 0o600


def test_scenario_with_terminal_table(secured: Secured) -> None:
    prof = secured.profiles["dukpt-aes"]
    scenario = secured.root / "dukpt.toml"
    scenario.write_text(
        f"""name = "DUKPT terminal"
[terminal]
security = "dukpt-aes"
ik_file = "{prof.key_file.name}"
ksn = "{AES_DEVICE}00000000"

[defaults]
terminal = "{prof.terminal}"
store = "{prof.store}"
card = "@5"

[[step]]
op = "activate"
amount = "20.00"
expect_rc = "00"

[[step]]
op = "redeem"
amount = "2.00"
expect_rc = "00"
expect_balance = "18.00"

[[step]]
name = "the same bytes again (same KSN): replayed"
op = "redeem"
resend = 2
expect_rc = "00"
expect_balance = "18.00"

[[step]]
name = "a PIN on a card without one"
op = "balance"
pin = "{PIN}"
expect_rc = "55"
"""
    )
    out = _ok(_simulate(secured, None, "run", str(scenario)))
    assert "4 passed, 0 failed" in out


def test_load_mac_shares_one_key_change_and_dukpt_runs_on_one_connection(
    secured: Secured,
) -> None:
    mac = secured.profiles["mac-aes"]
    _ok(_simulate(secured, mac, "activate", "--card", "@6", "--amount", "50.00"))
    cards = secured.root / "one-card.csv"
    cards.write_text("pan\n" + secured.cards[5] + "\n")
    out = _ok(
        run_cli(
            "simulate",
            "load",
            "--port",
            str(secured.port),
            "--cards",
            str(cards),
            "--terminal",
            mac.terminal,
            "--count",
            "12",
            "--connections",
            "4",
            *mac.options,
        )
    )
    assert out.count("key change T0000001") == 1
    assert "12 requests on 4 connections" in out and "response codes 00: 12" in out
    dev = secured.profiles["dukpt-aes"]
    out = _ok(
        run_cli(
            "simulate",
            "load",
            "--port",
            str(secured.port),
            "--cards",
            str(cards),
            "--terminal",
            dev.terminal,
            "--count",
            "5",
            *dev.options,
        )
    )
    assert "5 requests on 1 connections" in out and "response codes 00: 5" in out


def test_world_readable_key_file_is_refused(secured: Secured, tmp_path: Path) -> None:
    prof = secured.profiles["mac-aes"]
    loose = tmp_path / "loose.tmk"
    loose.write_text(prof.key_file.read_text())
    loose.chmod(0o644)
    out = run_cli(
        "simulate",
        "balance",
        "--card",
        "@1",
        "--cards",
        str(secured.cards_file),
        "--port",
        str(secured.port),
        "--security",
        "mac-aes",
        "--tmk-file",
        str(loose),
    )
    assert out.returncode == 2
    assert out.stderr == (
        f"authsrv simulate: error: terminal master key file {loose} is readable by others; "
        "chmod 600 it\n"
    )


BAD_OPTIONS = [
    (["--tmk-file", "x.tmk"], "--tmk-file goes with --security mac-tdes or mac-aes"),
    (["--security", "mac-aes"], "--security mac-aes needs --tmk-file FILE"),
    (["--security", "dukpt-aes"], "--security dukpt-aes needs --ik-file FILE"),
    (
        ["--security", "mac-tdes", "--ksn", "00"],
        "--ik-file and --ksn go with --security dukpt-tdes or dukpt-aes",
    ),
    (["--pin", "1234"], "--pin needs a security profile (--security): a PIN travels enciphered"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=[m for _, m in BAD_OPTIONS])
def test_bad_option_combinations(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "echo", "--port", "1", *options]) == 2
    assert capsys.readouterr().err == f"authsrv simulate: error: {message}\n"


def test_dukpt_needs_a_ksn_and_a_sound_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ik = _key_file(tmp_path / "dev.ik", bytes(16))
    short = _key_file(tmp_path / "short.ik", bytes(8))
    cases = [
        (
            ["--security", "dukpt-aes", "--ik-file", str(ik)],
            f"--security dukpt-aes needs --ksn HEX (the KSN to start from); no {ik}.ksn holds "
            "a later one yet",
        ),
        (
            ["--security", "dukpt-tdes", "--ik-file", str(ik), "--ksn", AES_DEVICE + "00000000"],
            "--ksn must be 20 hex digits for dukpt-tdes",
        ),
        (
            ["--security", "dukpt-aes", "--ik-file", str(short), "--ksn", "0" * 24],
            f"initial key file {short} must hold 16 bytes as 32 hex digits",
        ),
        (
            ["--security", "dukpt-aes", "--ik-file", str(tmp_path / "none.ik")],
            f"initial key file {tmp_path / 'none.ik'} not found",
        ),
    ]
    for options, message in cases:
        assert main(["simulate", "echo", "--port", "1", *options]) == 2
        assert capsys.readouterr().err == f"authsrv simulate: error: {message}\n"


def test_dukpt_load_on_several_connections_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ik = _key_file(tmp_path / "dev.ik", bytes(16))
    options = ["--security", "dukpt-aes", "--ik-file", str(ik), "--ksn", "0" * 24]
    assert main(["simulate", "load", "--port", "1", "--connections", "4", *options]) == 2
    assert capsys.readouterr().err == (
        "authsrv simulate: error: simulate load with dukpt-aes runs on one connection (one "
        "device, one counter); give --connections 1\n"
    )
