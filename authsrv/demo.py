"""``authsrv demo``: a store with demo data and a printed tour, then the host."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from api.access import add_key
from authsrv.admin import add_product, add_store, add_terminal, issue_cards
from authsrv.app import day_clock, init_store, open_keys
from authsrv.config import Config
from authsrv.model import ApiRole, Product, Store, Terminal
from authsrv.store import LedgerStore

__all__ = ["demo_banner", "provision_demo"]

DEMO_CARDS_FILE = "demo-cards.csv"
DEMO_CARD_COUNT = 10
DEMO_CAMPAIGN_FILE = "demo-campaign-cards.csv"
DEMO_CAMPAIGN_COUNT = 5
DEMO_API_KEYS_FILE = "demo-api-keys"  # role=token lines, mode 0600
DEMO_CHAIN = "DEMO"


def provision_demo(cfg: Config) -> Path:
    """Create the demo store once: a gift product, two stores, three terminals, ten cards."""
    data = cfg.data_path
    cards_file = data / DEMO_CARDS_FILE
    if (data / "data.mdb").exists():
        return cards_file
    store, generated = init_store(data, cfg.store.map_size_mib, day_clock(cfg))
    if generated:
        print(
            f"demo: generated a DEVELOPMENT key-encrypting key at {data}/master.kek "
            "(never use it for real cards)",
            file=sys.stderr,
        )
    try:
        add_product(
            store,
            Product(
                id="GIFT",
                chain=DEMO_CHAIN,
                kind="gift",
                currency="978",
                prefix="603628",
                pan_len=16,
                fixed_value_minor=0,
                load_min_minor=500,
                load_max_minor=50000,
                balance_max_minor=100000,
                redeem_min_minor=1,
                expiry_months=36,
                reloadable=True,
                cashout=True,
            ),
        )
        add_store(store, Store(id="S0001", name="Demo Store City", chain=DEMO_CHAIN))
        add_store(store, Store(id="S0002", name="Demo Store Mall", chain=DEMO_CHAIN))
        add_terminal(store, Terminal(id="T0000001", store_id="S0001"))
        add_terminal(store, Terminal(id="T0000002", store_id="S0001"))
        add_terminal(store, Terminal(id="T0000003", store_id="S0002"))
        keys = open_keys(store)
        issue_cards(store, keys, "GIFT", DEMO_CARD_COUNT, cards_file)
        add_product(store, _campaign_product())
        issue_cards(store, keys, "CAMP", DEMO_CAMPAIGN_COUNT, data / DEMO_CAMPAIGN_FILE)
        _write_api_keys(store, data / DEMO_API_KEYS_FILE)
    finally:
        store.close()
    return cards_file


def _campaign_product() -> Product:
    """30 % of a purchase of at least 100.00, at most 500.00, valid 90 days, activated online."""
    return Product(
        id="CAMP",
        chain=DEMO_CHAIN,
        kind="campaign",
        currency="978",
        prefix="603629",
        pan_len=16,
        fixed_value_minor=0,
        load_min_minor=0,
        load_max_minor=0,
        balance_max_minor=50_000,
        redeem_min_minor=1,
        expiry_months=36,
        reloadable=False,
        cashout=False,
        share_bp=3000,
        min_purchase_minor=10_000,
        max_value_minor=50_000,
        expiry_days=90,
        online_activation=True,
    )


def _write_api_keys(store: LedgerStore, path: Path) -> None:
    """A back-office and a self-service API key for the tour; their tokens (shown nowhere
    else) go to ``path``, readable by this user only."""
    now_ms = time.time_ns() // 1_000_000
    lines = []
    with store.write() as led:
        for role in (ApiRole.BACKOFFICE, ApiRole.SELFSERVICE):
            _key, token = add_key(
                led, name=f"demo {role.value}", role=role, store_id="", now_ms=now_ms, actor="demo"
            )
            lines.append(f"{role.value}={token}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(lines)


def _campaign_tour(cfg: Config, port_opt: str) -> list[str]:
    """The campaign card and HTTP API part of the tour (a store made by an older demo has
    neither its campaign cards nor its API keys: then it is left out)."""
    data = cfg.data_path
    camp, keys = data / DEMO_CAMPAIGN_FILE, data / DEMO_API_KEYS_FILE
    if not (camp.exists() and keys.exists() and cfg.api.enabled):
        return []
    url = f"http://{cfg.api.host}:{cfg.api.port}"
    bo = f"$(sed -n 's/^backoffice=//p' {keys})"
    ss = f"$(sed -n 's/^selfservice=//p' {keys})"
    cards = f"--cards {camp}"
    return [
        "",
        f"Campaign cards (product CAMP: 30 % of the purchase), numbers in {camp}; HTTP API on "
        f"{url} (keys in {keys}, docs/api.md):",
        f"  .venv/bin/authsrv simulate issue --card @1 --amount 1000.00 {cards}{port_opt}"
        "   # prints the activation code",
        f"  .venv/bin/authsrv simulate redeem --card @1 --amount 10.00 {cards}{port_opt}"
        "   # 78: not activated yet",
        f'  curl -s -H "Authorization: Bearer {ss}" -d \'{{"card_number": "\'$(sed -n '
        f'\'2p\' {camp} | cut -d, -f1)\'", "activation_code": "CODE", "mobile": '
        f'"+4791234567", "consents": {{"terms": true}}}}\' {url}/v1/self/activate',
        f'  curl -s -H "Authorization: Bearer {bo}" {url}/v1/stores',
    ]


def demo_banner(cfg: Config, cards_file: Path, port: int, metrics_port: int | None) -> None:
    port_opt = "" if port == 8583 else f" --port {port}"
    lines = [
        "",
        f"authsrv demo: ISO 8583 host on {cfg.server.host}:{port}"
        + (
            f", metrics on http://{cfg.metrics.host}:{metrics_port}/metrics" if metrics_port else ""
        ),
        f"  store {cfg.data_path}/, chain {DEMO_CHAIN}: stores S0001 (terminals T0000001, "
        "T0000002) and S0002 (T0000003)",
        f"  {DEMO_CARD_COUNT} gift cards (product GIFT, EUR), numbers in {cards_file}: "
        "refer to them as @1 .. @10",
        "",
        "Try, in another terminal:",
        f"  .venv/bin/authsrv simulate activate --card @1 --amount 500.00{port_opt}",
        f"  .venv/bin/authsrv simulate redeem --card @1 --amount 120.00{port_opt}",
        f"  .venv/bin/authsrv simulate balance --card @1{port_opt}",
        f"  .venv/bin/authsrv simulate redeem --card @1 --amount 400.00 --partial{port_opt}",
        f"  .venv/bin/authsrv simulate run scenarios/giftcard-demo.toml{port_opt}",
        f"  .venv/bin/authsrv cards show --card @1 --cards {cards_file} --data {cfg.data_path}",
        f"  .venv/bin/authsrv check --data {cfg.data_path}",
        *_campaign_tour(cfg, port_opt),
        "Stop with Ctrl-C (the host drains and exits).",
        "",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)
