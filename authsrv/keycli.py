"""``authsrv keys ...``, ``authsrv terminals security`` and ``authsrv cards set-pin``.

Secrets (key components, PINs) are never taken from the command line, where shell history and
``ps`` would keep them: they come from files (``--component-file``), from a prompt without echo
on a terminal, or one per line on standard input.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authsrv import keyadmin
from authsrv.app import kek_path, open_keys
from authsrv.cli import EXIT_OK, UsageError, _load_cfg, _store
from authsrv.model import SecurityProfile
from keys import KeyStoreError, combine_components, kek_check_value, load_kek
from keys.keystore import KEK_LEN, WORKING_KEY_LEN

__all__ = ["add_card_pin_parser", "add_keys_commands", "add_terminal_security_parser"]

Add = Callable[..., argparse.ArgumentParser]


def _read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    line = sys.stdin.readline()
    if not line:
        raise UsageError(f"standard input ended before: {prompt.strip()}")
    return line.strip()


def _components(args: argparse.Namespace, length: int, algorithm: str) -> bytes:
    """Read 2 or 3 hex components (files, prompt or stdin), print each check value, combine."""
    files: list[Path] = args.component_file or []
    count = len(files) if files else args.components
    raw: list[str] = []
    for i in range(count):
        if files:
            try:
                raw.append(files[i].read_text().strip())
            except OSError as exc:
                raise UsageError(f"cannot read {files[i]}: {exc.strerror}") from None
        else:
            raw.append(_read_secret(f"component {i + 1} of {count} (hex): "))
    parts: list[bytes] = []
    for i, text in enumerate(raw, 1):
        try:
            part = bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"component {i} is not hex") from None
        if len(part) != length:
            raise UsageError(f"component {i} must be {2 * length} hex digits")
        print(f"component {i} check value {kek_check_value(part, algorithm)}")
        parts.append(part)
    return combine_components(parts, length)


def _component_args(p: argparse.ArgumentParser, dev: bool) -> None:
    p.add_argument(
        "--component-file",
        type=Path,
        action="append",
        metavar="FILE",
        help="a file holding one component in hex (give it 2 or 3 times)",
    )
    p.add_argument(
        "--components",
        type=int,
        choices=(2, 3),
        default=2,
        help="how many components to read from the prompt or stdin (default 2)",
    )
    if dev:
        p.add_argument(
            "--dev",
            action="store_true",
            help="generate a random key instead (development and demos only)",
        )


def _kek(args: argparse.Namespace) -> bytes:
    if getattr(args, "dev", False):
        print(
            "WARNING: DEVELOPMENT key-encrypting key generated at random; no custodian holds "
            "its components. Never use it for live cards.",
            file=sys.stderr,
        )
        return secrets.token_bytes(KEK_LEN)
    return _components(args, KEK_LEN, "A")


# -- keys --------------------------------------------------------------------------------------
def cmd_keys_init(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    path = kek_path(cfg.data_path)
    kek = _kek(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise KeyStoreError(f"{path} exists; replace a key-encrypting key with `keys rotate-kek`")
    from keys import write_kek_file

    write_kek_file(path, kek)
    print(f"key-encrypting key written to {path} (mode 0600), check value {kek_check_value(kek)}")
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store:
        kek = load_kek(kek_path(store.path))
        named, working = keyadmin.list_keys(store, kek)
    print(f"key-encrypting key check value {kek_check_value(kek)}")
    for k in named:
        print(
            f"{k.name:<22} TR-31 usage {k.usage} algorithm {k.algorithm} mode {k.mode_of_use} "
            f"export {k.exportability}  check value {k.check_value}"
        )
    for tid, mac_kcv, pin_kcv in working:
        print(f"terminal {tid:<13} MAC key check value {mac_kcv}  PIN key check value {pin_kcv}")
    return EXIT_OK


def cmd_keys_add(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    key = _components(args, WORKING_KEY_LEN, args.algorithm)
    with _store(cfg) as store:
        kek = load_kek(kek_path(store.path))
        kcv = keyadmin.add_named_key(
            store, kek, args.name, key, args.algorithm, exportable=args.exportable
        )
    print(f"added {args.name}, check value {kcv}")
    return EXIT_OK


def cmd_keys_import(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg) as store:
        kek = load_kek(kek_path(store.path))
        kcv = keyadmin.import_key(store, kek, args.name, args.block, args.under)
    print(f"imported {args.name} from under {args.under}, check value {kcv}")
    return EXIT_OK


def cmd_keys_export(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store:
        kek = load_kek(kek_path(store.path))
        print(keyadmin.export_key(store, kek, args.name, args.under))
    return EXIT_OK


def cmd_keys_rotate_kek(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    new_kek = _kek(args)
    with _store(cfg) as store:
        result = keyadmin.rotate_kek(store, kek_path(store.path), new_kek)
    for name, kcv in sorted(result.check_values.items()):
        print(f"{name:<34} check value {kcv}  unchanged")
    print(
        f"re-wrapped {len(result.check_values)} keys; new key-encrypting key check value "
        f"{result.new_kek_check_value}"
    )
    return EXIT_OK


def cmd_keys_rotate_pan_hash(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg) as store:
        version = keyadmin.rotate_pan_hash(store, load_kek(kek_path(store.path)))
    print(
        f"card-number hash version {version} added: new cards use it, and each card moves to "
        "it on its next use once the host restarts"
    )
    return EXIT_OK


def cmd_keys_pan_versions(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg, readonly=True) as store:
        versions = keyadmin.pan_hash_versions(store)
    current = max(versions)
    for version, count in sorted(versions.items()):
        note = "current" if version == current else ("retire it" if count == 0 else "in use")
        print(f"pan-hash/{version:<4} {count:>12} cards  ({note})")
    return EXIT_OK


def cmd_keys_retire_pan_hash(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg) as store:
        keyadmin.retire_pan_hash(store, args.version)
    print(f"card-number hash version {args.version} retired")
    return EXIT_OK


def add_keys_commands(ksub: Any, add: Add) -> None:
    p = add(
        ksub,
        "init",
        "create the key-encrypting key from 2 or 3 components (each custodian enters one)",
        [
            "authsrv keys init --data /var/lib/authsrv            # prompts for 2 components",
            "authsrv keys init --component-file c1 --component-file c2 --component-file c3",
            "authsrv keys init --dev --data demo-data             # random; demos only",
        ],
        cmd_keys_init,
    )
    _component_args(p, dev=True)
    add(
        ksub,
        "list",
        "list keys: names, TR-31 usage, algorithm, mode, check values (never the keys)",
        ["authsrv keys list --data /var/lib/authsrv"],
        cmd_keys_list,
    )
    p = add(
        ksub,
        "add",
        "enter a key from components: bdk/NAME (DUKPT), tmk/NAME (terminal master key), "
        "kek/NAME (key exchange)",
        [
            "authsrv keys add bdk/2026 --algorithm A --component-file c1 --component-file c2",
            "authsrv keys add tmk/T0000001 --algorithm A",
            "authsrv keys add kek/kif --algorithm A --exportable",
        ],
        cmd_keys_add,
    )
    p.add_argument("name", help="bdk/..., tmk/... or kek/...")
    p.add_argument("--algorithm", choices=("A", "T"), required=True, help="A: AES-128, T: TDES")
    p.add_argument("--exportable", action="store_true", help="may be exported (keys export)")
    _component_args(p, dev=False)
    p = add(
        ksub,
        "import",
        "import a key received as a TR-31 block under a key-exchange key",
        ["authsrv keys import tmk/T0000001 --block D0112K0AB00N0000... --under kek/kif"],
        cmd_keys_import,
    )
    p.add_argument("name", help="name to store it under (bdk/..., tmk/..., kek/...)")
    p.add_argument("--block", required=True, help="the TR-31 key block")
    p.add_argument("--under", required=True, help="the key-exchange key it is wrapped under")
    p = add(
        ksub,
        "export",
        "export an exportable key as a TR-31 block under a key-exchange key",
        ["authsrv keys export tmk/T0000001 --under kek/kif"],
        cmd_keys_export,
    )
    p.add_argument("name")
    p.add_argument("--under", required=True, help="key-exchange key (kek/...)")
    p = add(
        ksub,
        "rotate-kek",
        "re-wrap every key under a new key-encrypting key and prove the check values "
        "unchanged (stop the host first)",
        [
            "authsrv keys rotate-kek --component-file c1 --component-file c2",
            "authsrv keys rotate-kek --dev --data demo-data",
        ],
        cmd_keys_rotate_kek,
    )
    _component_args(p, dev=True)
    add(
        ksub,
        "rotate-pan-hash",
        "start a new card-number hash key version",
        ["authsrv keys rotate-pan-hash --data /var/lib/authsrv"],
        cmd_keys_rotate_pan_hash,
    )
    add(
        ksub,
        "pan-versions",
        "how many cards each card-number hash key version still holds",
        ["authsrv keys pan-versions"],
        cmd_keys_pan_versions,
    )
    p = add(
        ksub,
        "retire-pan-hash",
        "delete an old card-number hash key version once no card uses it",
        ["authsrv keys retire-pan-hash --version 1"],
        cmd_keys_retire_pan_hash,
    )
    p.add_argument("--version", type=int, required=True)


# -- terminals security, cards set-pin ---------------------------------------------------------
def cmd_terminals_security(args: argparse.Namespace) -> int:
    cfg = _load_cfg(args)
    with _store(cfg) as store:
        t = keyadmin.set_terminal_security(
            store,
            args.id,
            SecurityProfile(args.profile),
            tmk=args.tmk or "",
            bdk=args.bdk or "",
            ksn_prefix=args.ksn_prefix or "",
        )
    extra = ""
    if t.security.static:
        extra = f"; master key {t.tmk}, working keys at its first key change (0800 70=101)"
    elif t.security.dukpt:
        extra = f"; BDK {t.bdk}, device KSN {t.ksn_prefix}"
    print(f"terminal {t.id}: security profile {t.security}{extra}")
    return EXIT_OK


def add_terminal_security_parser(tsub: Any, add: Add) -> None:
    p = add(
        tsub,
        "security",
        "set a terminal's security profile: none (demo mode only), mac-tdes, mac-aes, "
        "dukpt-tdes, dukpt-aes",
        [
            "authsrv terminals security --id T0000001 --profile mac-aes --tmk tmk/T0000001",
            "authsrv terminals security --id T0000002 --profile dukpt-aes --bdk bdk/2026 "
            "--ksn-prefix 1234567890123456",
        ],
        cmd_terminals_security,
    )
    p.add_argument("--id", required=True, help="terminal id (field 41)")
    p.add_argument("--profile", required=True, choices=[s.value for s in SecurityProfile])
    p.add_argument("--tmk", default=None, help="static profiles: terminal master key name")
    p.add_argument("--bdk", default=None, help="DUKPT profiles: base derivation key name")
    p.add_argument(
        "--ksn-prefix",
        default=None,
        help="DUKPT: the device's KSN without its counter (AES 16 hex, TDES 20 hex)",
    )


def cmd_cards_set_pin(args: argparse.Namespace) -> int:
    from simulators.terminal import CardBook

    cfg = _load_cfg(args)
    book = CardBook()
    if args.cards is not None:
        book.add_file("default", args.cards)
    pan = book.resolve(args.card) if args.card else _read_secret("card number: ")
    pin = _read_secret("PIN: ")
    with _store(cfg) as store:
        keys = open_keys(store)
        card_id = keyadmin.set_card_pin(store, keys, pan, pin)
    print(f"PIN set on card id {card_id}; wrong tries reset")
    return EXIT_OK


def add_card_pin_parser(csub: Any, add: Add) -> None:
    p = add(
        csub,
        "set-pin",
        "set a card's PIN (read from the prompt or stdin; stored as a keyed verification value)",
        [
            "authsrv cards set-pin --card @1 --cards demo-data/demo-cards.csv",
            "printf '%s\\n' 1234 | authsrv cards set-pin --card @1 --cards cards.csv",
        ],
        cmd_cards_set_pin,
    )
    p.add_argument("--card", default=None, help="card number or @N with --cards (else stdin)")
    p.add_argument("--cards", type=Path, default=None, help="card-issue file for @N")
