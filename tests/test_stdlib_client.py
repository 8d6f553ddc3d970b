"""examples/stdlib_client.py: standard library only, and it works against a real host.

The example is written from docs/dialect.md alone; these tests hold it to that: it imports
nothing outside the standard library, its encoder agrees with the host's codec, and its terminal
signs on, activates, redeems with partial approval and asks the balance on a host served in
process (fixed clock, 127.0.0.1). The blocking client runs in a worker thread so that the host
keeps running in the test's trio loop.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from authsrv.admin import add_terminal
from authsrv.app import open_store
from authsrv.model import Terminal
from protocol.messages import encode_message
from simulators.terminal import build_request
from tests.helpers import Provisioned, decode, serve_in_process

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "examples" / "stdlib_client.py"
MODULE_NAME = "stdlib_client"

NOW = datetime(2026, 11, 22, 10, 30, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
SIGNON_TERMINAL = "T0000005"  # added here with sign-on required
STORE = "S0001"
MAP_SIZE_MIB = 64
TIMEOUT_S = 10.0
CLIENT_SOCKET_TIMEOUT_S = 5.0
ACTIVATION_MINOR = 1000
REDEEM_MINOR = 2500  # more than the card holds


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example, imported from its path (it is not part of any package)."""
    spec = importlib.util.spec_from_file_location(MODULE_NAME, CLIENT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class is created.
    monkeypatch.setitem(sys.modules, MODULE_NAME, module)
    spec.loader.exec_module(module)
    return module


def test_imports_only_the_standard_library() -> None:
    tree = ast.parse(CLIENT.read_text(), str(CLIENT))
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import on line {node.lineno}"
            assert node.module is not None
            imported.append(node.module)
    assert imported, "no imports found: the check would prove nothing"
    outside = sorted(
        {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    )
    assert outside == []


# Messages on which the example's encoder must agree with the host's codec byte for byte.
CODEC_CASES = [
    {
        "t": "0200",
        "2": "6036280012345677",
        "3": "000000",
        "4": "000000001200",
        "7": "1122103000",
        "11": "000123",
        "12": "113000",
        "13": "1122",
        "41": "T0000001",
        "42": "S0001          ",
        "48": "PA0011",
        "49": "978",
    },
    # Field 70 needs the secondary bitmap.
    {
        "t": "0800",
        "7": "1122103000",
        "11": "000001",
        "12": "113000",
        "13": "1122",
        "41": "T0000001",
        "70": "001",
    },
    # Both bitmaps full of letters, LLVAR and LLLVAR fields of several lengths.
    {
        "t": "0810",
        "7": "1122103000",
        "11": "000001",
        "12": "113000",
        "13": "1122",
        "32": "12345",
        "39": "30",
        "41": "T0000001",
        "44": "004 not numeric",
        "54": "6001978C0000000010006002978C000000001000",
        "63": "RT017BALANCE 10.00 EUR",
        "90": "0" * 42,
        "95": "0" * 42,
        "128": "0123456789ABCDEF",
    },
]


@pytest.mark.parametrize("fields", CODEC_CASES, ids=lambda f: f["t"])
def test_encoder_and_decoder_agree_with_the_host_codec(
    client: ModuleType, fields: dict[str, str]
) -> None:
    numbered = {int(k): v for k, v in fields.items() if k != "t"}
    payload = client.encode_message(fields["t"], numbered)
    assert payload == encode_message(fields)
    host_view = decode(payload)
    assert client.bitmap(numbered) == host_view["p"] + host_view.get("1", "")
    message = client.decode_message(payload)
    assert (message.mti, message.fields) == (fields["t"], numbered)


def provision_signon_terminal(data: Path) -> None:
    store = open_store(data, MAP_SIZE_MIB)
    try:
        add_terminal(store, Terminal(id=SIGNON_TERMINAL, store_id=STORE, signon_required=True))
    finally:
        store.close()


async def test_session_with_partial_approval(client: ModuleType, provisioned: Provisioned) -> None:
    pan = provisioned.cards[0]
    provision_signon_terminal(provisioned.data)

    def session(port: int) -> dict[str, Any]:
        answers: dict[str, Any] = {}
        with client.Terminal(
            "127.0.0.1",
            port,
            SIGNON_TERMINAL,
            STORE,
            timeout_s=CLIENT_SOCKET_TIMEOUT_S,
            clock=lambda: NOW,
        ) as terminal:
            answers["before_signon"] = terminal.balance(pan)
            answers["signon"] = terminal.sign_on()
            answers["activate"] = terminal.activate(pan, ACTIVATION_MINOR)
            answers["redeem"] = terminal.redeem(pan, REDEEM_MINOR)
            answers["balance"] = terminal.balance(pan)
        return answers

    async with serve_in_process(provisioned.data, clock_ms=lambda: NOW_MS) as host:
        with trio.fail_after(TIMEOUT_S):
            answers = await trio.to_thread.run_sync(session, host.port, abandon_on_cancel=True)

    assert answers["before_signon"].rc == "91"
    signon = answers["signon"]
    assert (signon.mti, signon.rc, signon.fields[70]) == ("0810", "00", "001")
    assert answers["activate"].rc == "00"

    redeem = answers["redeem"]
    assert (redeem.mti, redeem.rc) == ("0210", "10")
    assert redeem.fields[4] == f"{ACTIVATION_MINOR:012d}"  # the approved amount: the balance
    balances = client.decode_balances(redeem.fields[54])
    assert [(b.amount_type, b.amount_minor) for b in balances] == [("01", 0), ("02", 0)]

    balance = answers["balance"]
    assert (balance.mti, balance.rc) == ("0210", "00")
    assert [b.amount_minor for b in client.decode_balances(balance.fields[54])] == [0, 0]
    assert client.decode_tlv(balance.fields[63])["RT"] == "BALANCE 0.00 EUR"


async def test_main_prints_the_session(
    client: ModuleType, provisioned: Provisioned, capsys: pytest.CaptureFixture[str]
) -> None:
    pan = provisioned.cards[1]
    # The host's real clock: main() stamps field 7 with the time of the machine.
    async with serve_in_process(provisioned.data) as host:
        with trio.fail_after(TIMEOUT_S):
            async with await host.connect() as conn:
                activation = build_request(
                    "activate",
                    terminal="T0000001",
                    store=STORE,
                    pan=pan,
                    amount_minor=ACTIVATION_MINOR,
                )
                assert (await conn.exchange(activation))["39"] == "00"
            argv = ["--port", str(host.port), "--terminal", "T0000001", "--store", STORE]
            argv += ["--card", pan, "--amount", "25.00"]
            status = await trio.to_thread.run_sync(client.main, argv, abandon_on_cancel=True)
    out = capsys.readouterr().out
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0] == "sign-on: 0810 rc 00 approved"
    assert lines[1].startswith(f"redeem 25.00 with card {pan[:6]}******{pan[-4:]}: 0210 rc 10")
    assert "amount 10.00, available 0.00, receipt 'BALANCE 0.00 EUR'" in lines[1]
    assert lines[2].startswith("balance: 0210 rc 00 approved")
    assert pan not in out
