"""The issue's end-to-end goal over real TCP and real HTTP, against ``authsrv serve`` with the
API enabled (one process, as operators run it): a campaign card issued at store S for a
1000.00 purchase at 30 % gets 300.00 and is refused with 78; it is activated online; it is
redeemed at store T; the day's net settlement shows S owing 300.00 to the campaign account
and T owed the redeemed amount. Beside it, the web shop (store W) sells and loads a gift card
over HTTP, exactly once per payment reference.

Stores S0001 (S), S0002 (T) and W0001 (the web shop) of chain ACME; product CAMP is 30 % of
the purchase, at most 500.00 per issue (tests/helpers.py ``campaign_product``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import httpx

from authsrv.admin import add_product, add_store, issue_cards
from authsrv.app import open_keys, open_store
from authsrv.model import Store
from protocol.tlv import decode_tlv
from simulators.terminal import build_request
from tests.helpers import (
    CHAIN,
    Provisioned,
    RawClient,
    campaign_product,
    read_pans,
    run_cli,
    running_host,
    scan_for,
)

API_ON = {"AUTHSRV_API_ENABLED": "true", "AUTHSRV_API_PORT": "0"}
S = ("T0000001", "S0001")  # (terminal, store)
T = ("T0000003", "S0002")
WEB_STORE, WEB_TERMINAL = "W0001", "W0000001"
MOBILE = "+4791234567"
HTTP_TIMEOUT_S = 10.0


def _setup(provisioned: Provisioned, root: Path) -> list[str]:
    """Product CAMP, the web shop's store (no terminal yet), campaign cards; their numbers."""
    store = open_store(provisioned.data, 64)
    try:
        add_product(store, campaign_product())
        add_store(store, Store(id=WEB_STORE, name="Web shop", chain=CHAIN))
        issue_cards(store, open_keys(store), "CAMP", 2, root / "camp.csv")
    finally:
        store.close()
    return read_pans(root / "camp.csv")


def _token(data: Path, *args: str) -> str:
    made = run_cli("api-keys", "add", "--data", str(data), *args)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def _api_port(log: Path) -> int:
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    (listening,) = [e for e in lines if e.get("event") == "api_listening"]
    return int(listening["port"])


def _request(
    op: str,
    at: tuple[str, str],
    pan: str,
    amount_minor: int | None = None,
    overrides: dict[str, str | None] | None = None,
) -> dict[str, str]:
    return build_request(
        op, terminal=at[0], store=at[1], pan=pan, amount_minor=amount_minor, overrides=overrides
    )


def _tags(answer: dict[str, str]) -> dict[str, str]:
    return dict(decode_tlv(answer["63"], 63))


def test_campaign_card_issue_activate_redeem_and_net_settlement(
    provisioned: Provisioned, tmp_path: Path
) -> None:
    camp = _setup(provisioned, tmp_path)
    pan, gift = camp[0], provisioned.cards[0]
    data = provisioned.data
    backoffice = _token(data, "--role", "backoffice", "--name", "back office")
    web = _token(data, "--role", "store", "--store", WEB_STORE, "--name", "web shop")
    holder = _token(data, "--role", "selfservice", "--name", "self-service")
    log = tmp_path / "host.log"
    with running_host(data, log, env=API_ON) as host, RawClient(host.port) as terminal:
        api = httpx.Client(base_url=f"http://127.0.0.1:{_api_port(log)}", timeout=HTTP_TIMEOUT_S)

        def call(method: str, path: str, token: str, body: object = None) -> httpx.Response:
            return api.request(
                method, path, json=body, headers={"Authorization": f"Bearer {token}"}
            )

        # Issued at S for a 1000.00 purchase at 30 %: 300.00, awaiting online activation.
        issued = terminal.exchange(
            _request("activate", S, pan=pan, amount_minor=100_000, overrides={"3": "920000"})
        )
        assert issued["39"] == "00", issued
        assert issued["54"] == "6001978C0000000300006002978C000000030000"
        tags = _tags(issued)
        assert tags["RT"] == "CAMPAIGN CARD LOADED 300.00 EUR, ACTIVATE ONLINE WITH CODE"
        code = tags["AC"]
        refused = terminal.exchange(_request("redeem", T, pan=pan, amount_minor=12_000))
        assert refused["39"] == "78"

        # Activated online with the receipt's code and a mobile.
        activation = {
            "card_number": pan,
            "activation_code": code.lower()[:4] + "-" + code.lower()[4:],
            "mobile": "+47 912 34 567",
            "email": "kari@example.com",
            "consents": {"terms": True, "marketing": True},
            "interests": ["sport", "books"],
        }
        r = call("POST", "/v1/self/activate", holder, activation)
        assert r.status_code == 200, r.text
        activated = r.json()
        card_token = activated.pop("token")
        assert card_token.startswith("ct_")
        assert activated == {
            "card": pan[:6] + "******" + pan[-4:],
            "state": "active",
            "currency": "978",
            "balance_minor": 30_000,
            "available_minor": 30_000,
            "expiry": activated["expiry"],  # the card's month (YYMM), checked below
            "value_expiry": tags["EX"],
        }
        assert re.fullmatch(r"[0-9]{2}(0[1-9]|1[0-2])", activated["expiry"])
        assert pan not in r.text and code not in r.text

        # Redeemed at T.
        redeemed = terminal.exchange(_request("redeem", T, pan=pan, amount_minor=12_000))
        assert redeemed["39"] == "00", redeemed
        assert _tags(redeemed)["RT"] == "BALANCE 180.00 EUR"
        r = call("POST", "/v1/self/card", holder, {"token": card_token})
        assert r.status_code == 200, r.text
        seen = r.json()
        assert (seen["balance_minor"], seen["state"]) == (18_000, "active")
        assert [(h["op"], h["amount_minor"], h["store_id"]) for h in seen["history"]] == [
            ("issue", 30_000, "S0001"),
            ("redeem", -12_000, "S0002"),
        ]

        # The web shop: it needs a terminal of its own store first.
        sale = {
            "payment_ref": "order-1001",
            "terminal_id": WEB_TERMINAL,
            "operation": "activate",
            "card_number": gift,
            "amount_minor": 5_000,
            "currency": "978",
        }
        r = call("POST", "/v1/shop/loads", web, sale)
        assert (r.status_code, r.json()["error"]["field"]) == (409, "terminal_id"), r.text
        r = call("POST", "/v1/terminals", web, {"id": WEB_TERMINAL, "store_id": WEB_STORE})
        assert r.status_code == 201, r.text
        first = call("POST", "/v1/shop/loads", web, sale)
        assert first.status_code == 200, first.text
        sold = first.json()
        assert (sold["rc"], sold["amount_minor"], sold["balance_minor"]) == ("00", 5_000, 5_000)
        assert (sold["card"], sold["replayed"]) == (gift[:6] + "******" + gift[-4:], False)
        # The same payment again: the first answer, nothing moves; another body: 409.
        again = call("POST", "/v1/shop/loads", web, sale)
        assert again.status_code == 200, again.text
        assert again.json() == {**sold, "replayed": True}
        other = call("POST", "/v1/shop/loads", web, {**sale, "amount_minor": 6_000})
        assert (other.status_code, other.json()["error"]["field"]) == (409, "payment_ref")
        load = {**sale, "payment_ref": "order-1002", "operation": "load", "amount_minor": 2_000}
        r = call("POST", "/v1/shop/loads", web, load)
        assert (r.status_code, r.json()["balance_minor"]) == (200, 7_000), r.text
        assert call("POST", "/v1/shop/loads", web, load).json()["replayed"] is True
        balance = terminal.exchange(_request("balance", S, pan=gift))
        assert (balance["39"], balance["54"][-12:]) == ("00", "000000007000")

        # The day's net settlement, after a cut-over by hand.
        cut = run_cli("settle", "cutover", "--data", str(data))
        assert cut.returncode == 0, cut.stderr
        found = re.search(r"closed business day (\d{8})", cut.stdout)
        assert found is not None, cut.stdout
        day = found.group(1)
        net = call("GET", f"/v1/reports/net/{day}", backoffice)
        assert net.status_code == 200, net.text
        rows = list(csv.DictReader(io.StringIO(net.text)))
        stores = [
            (row["store_id"], row["funding_account"], int(row["net_minor"]))
            for row in rows
            if row["section"] == "store"
        ]
        funding = [
            (row["funding_account"], int(row["net_minor"]))
            for row in rows
            if row["section"] == "funding"
        ]
        api.close()
    assert sorted(stores) == [
        ("S0001", "campaign:ACME", -30_000),  # S owes 300.00 to the campaign account
        ("S0002", "campaign:ACME", 12_000),  # T is owed the 120.00 redeemed
        ("W0001", "float", -7_000),  # the web shop owes what it sold and loaded to the float
    ]
    assert sorted(funding) == [("campaign:ACME", 18_000), ("float", 7_000)]
    # No card number, code or token in the store, the log or the settlement files.
    needles = [*camp, *provisioned.cards, code, card_token]
    assert (tmp_path / "settlement").is_dir()
    assert scan_for([data, log, tmp_path / "settlement"], needles) == []
