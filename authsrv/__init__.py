"""authsrv: a real-time card authorization host for stored-value and loyalty programmes.

The server (``authsrv.server``) reads ISO 8583 frames, the processor (``authsrv.processor``)
validates them and hands them to one writer that decides each request with the pure engine
(``authsrv.engine``) inside an LMDB write transaction (``authsrv.store``) and answers after the
commit. ``authsrv.cli`` is the command line.
"""

from authsrv.config import Config, ConfigError, load_config
from authsrv.engine import CardContext, Context, Decision, decide
from authsrv.model import Card, CardState, Posting, Product, Store, Terminal, Transfer

__all__ = [
    "Card",
    "CardContext",
    "CardState",
    "Config",
    "ConfigError",
    "Context",
    "Decision",
    "Posting",
    "Product",
    "Store",
    "Terminal",
    "Transfer",
    "decide",
    "load_config",
]
