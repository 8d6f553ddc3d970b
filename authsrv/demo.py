"""``authsrv demo``: a store with demo data and a printed tour, then the host."""

from __future__ import annotations

import sys
from pathlib import Path

from authsrv.admin import add_product, add_store, add_terminal, issue_cards
from authsrv.app import day_clock, init_store, open_keys
from authsrv.config import Config
from authsrv.model import Product, Store, Terminal

__all__ = ["demo_banner", "provision_demo"]

DEMO_CARDS_FILE = "demo-cards.csv"
DEMO_CARD_COUNT = 10
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
        issue_cards(store, open_keys(store), "GIFT", DEMO_CARD_COUNT, cards_file)
    finally:
        store.close()
    return cards_file


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
        "Stop with Ctrl-C (the host drains and exits).",
        "",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)
