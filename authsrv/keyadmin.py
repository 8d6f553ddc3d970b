"""Key administration on the store: the KEK ceremony and rotation, named keys, TR-31 import and
export, card-number hash versions, terminal security profiles and card PINs.

Each change runs in one write transaction (LMDB serialises it with a running host's writer).
Clear keys pass through here only as function arguments on their way into ``keys/``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import msgspec
from psec import tr31

from authsrv.model import SecurityProfile, Terminal
from authsrv.store import LedgerStore
from keys import KeyStore, KeyStoreError, combine_components, kek_check_value, load_kek
from keys.keystore import (
    HMAC_HEADER,
    HMAC_KEY_LEN,
    KEK_PENDING_SUFFIX,
    PAN_HASH_PREFIX,
    KeyInfo,
    describe_blocks,
    export_block,
    import_block,
    named_key_block,
    rewrap_blocks,
    write_kek_file,
)
from protocol.cards import luhn_valid

__all__ = [
    "KekRotation",
    "add_named_key",
    "export_key",
    "import_key",
    "init_kek",
    "list_keys",
    "pan_hash_versions",
    "retire_pan_hash",
    "rotate_kek",
    "rotate_pan_hash",
    "set_card_pin",
    "set_terminal_security",
]


def init_kek(path: Path, components: list[bytes]) -> tuple[list[str], str]:
    """Combine KEK components into the KEK file (0600). Returns the components' check values
    and the KEK's. Refuses to overwrite an existing KEK (it would orphan every key)."""
    if path.exists():
        raise KeyStoreError(f"{path} exists; a key-encrypting key is replaced by `keys rotate-kek`")
    kek = combine_components(components)
    write_kek_file(path, kek)
    return [kek_check_value(c) for c in components], kek_check_value(kek)


def list_keys(store: LedgerStore, kek: bytes) -> tuple[list[KeyInfo], list[tuple[str, str, str]]]:
    """Named keys, and per terminal with working keys: (terminal, MAC key KCV, PIN key KCV)."""
    with store.read() as led:
        blocks = led.key_blocks()
        terminals = list(led.terminals())
    keys = KeyStore(kek, blocks)
    working = []
    for t in terminals:
        if t.mac_key:
            mac_kcv, pin_kcv = keys.working_key_check_values(t)
            working.append((t.id, mac_kcv, pin_kcv))
    return describe_blocks(kek, blocks), working


def add_named_key(
    store: LedgerStore, kek: bytes, name: str, key: bytes, algorithm: str, *, exportable: bool
) -> str:
    """Store an operator-entered key (``bdk/``, ``tmk/``, ``kek/``); returns its check value."""
    block = named_key_block(kek, name, key, algorithm, exportable=exportable)
    with store.write() as led:
        if name in led.key_blocks():
            raise KeyStoreError(f"key {name} exists already")
        led.put_key_block(name, block)
    return describe_blocks(kek, {name: block})[0].check_value


def import_key(store: LedgerStore, kek: bytes, name: str, block: str, under: str) -> str:
    with store.write() as led:
        blocks = led.key_blocks()
        if name in blocks:
            raise KeyStoreError(f"key {name} exists already")
        stored = import_block(kek, blocks, name, block, under)
        led.put_key_block(name, stored)
    return describe_blocks(kek, {name: stored})[0].check_value


def export_key(store: LedgerStore, kek: bytes, name: str, under: str) -> str:
    with store.read() as led:
        blocks = led.key_blocks()
    return export_block(kek, blocks, name, under)


@dataclass(frozen=True, slots=True)
class KekRotation:
    check_values: dict[str, str]  # every key, the same before and after
    new_kek_check_value: str


def rotate_kek(store: LedgerStore, kek_file: Path, new_kek: bytes) -> KekRotation:
    """Re-wrap every key (named keys and terminals' working keys) under a new KEK.

    The host must be stopped. Order, so that a crash leaves a store that opens: the new KEK is
    written beside the old one (``.new``); the re-wrapped blocks commit in one transaction; the
    new KEK file replaces the old. If the run stops between the last two steps, ``load`` finds
    the blocks under ``.new`` (see :func:`authsrv.app.open_keys`).

    Error handling: :class:`KeyStoreError` if a key does not unwrap or a check value would
    change; nothing is written then.
    """
    old_kek = load_kek(kek_file)
    if new_kek == old_kek:
        raise KeyStoreError("the new key-encrypting key equals the old one")
    pending = kek_file.with_name(kek_file.name + KEK_PENDING_SUFFIX)
    write_kek_file(pending, new_kek)
    with store.write() as led:
        blocks = led.key_blocks()
        new_blocks, kcvs = rewrap_blocks(old_kek, new_kek, blocks)
        for name, block in new_blocks.items():
            led.put_key_block(name, block)
        for t in list(led.terminals()):
            working = {
                f"terminal {t.id} mac": t.mac_key,
                f"terminal {t.id} pin": t.pin_key,
            }
            for i, r in enumerate(t.retired_keys):
                working[f"terminal {t.id} retired {i} mac"] = r.mac_key
                working[f"terminal {t.id} retired {i} pin"] = r.pin_key
            working = {k: v for k, v in working.items() if v}
            if not working:
                continue
            rewrapped, wkcvs = rewrap_blocks(old_kek, new_kek, working)
            kcvs.update(wkcvs)
            retired = tuple(
                msgspec.structs.replace(
                    r,
                    mac_key=rewrapped[f"terminal {t.id} retired {i} mac"],
                    pin_key=rewrapped[f"terminal {t.id} retired {i} pin"],
                )
                for i, r in enumerate(t.retired_keys)
            )
            led.put_terminal(
                msgspec.structs.replace(
                    t,
                    mac_key=rewrapped[f"terminal {t.id} mac"],
                    pin_key=rewrapped[f"terminal {t.id} pin"],
                    retired_keys=retired,
                )
            )
    os.replace(pending, kek_file)
    # Proof: every key unwraps under the new KEK to the same check value.
    after = list_keys(store, new_kek)
    by_name = {k.name: k.check_value for k in after[0]}
    for tid, mac_kcv, pin_kcv in after[1]:
        by_name[f"terminal {tid} mac"] = mac_kcv
        by_name[f"terminal {tid} pin"] = pin_kcv
    for name, kcv in kcvs.items():
        if name in by_name and by_name[name] != kcv:
            raise KeyStoreError(f"key {name} has a different check value after the rotation")
    return KekRotation(kcvs, kek_check_value(new_kek))


def rotate_pan_hash(store: LedgerStore, kek: bytes) -> int:
    """Add a card-number hash key version; new cards use it, and cards found under an older
    version move to it on their next use (a running host picks it up at its next start)."""
    with store.write() as led:
        blocks = led.key_blocks()
        versions = [int(n[len(PAN_HASH_PREFIX) :]) for n in blocks if n.startswith(PAN_HASH_PREFIX)]
        version = max(versions) + 1
        if version > 255:
            raise KeyStoreError("no card-number hash version left (255 used)")
        key = secrets.token_bytes(HMAC_KEY_LEN)
        led.put_key_block(f"{PAN_HASH_PREFIX}{version}", tr31.wrap(kek, HMAC_HEADER, key))
    return version


def pan_hash_versions(store: LedgerStore) -> dict[int, int]:
    """Every live version with the number of cards it still indexes (0 for none)."""
    with store.read() as led:
        names = [n for n in led.key_blocks() if n.startswith(PAN_HASH_PREFIX)]
        counts = led.cards_per_hash_version()
    return {
        int(n[len(PAN_HASH_PREFIX) :]): counts.get(int(n[len(PAN_HASH_PREFIX) :]), 0) for n in names
    }


def retire_pan_hash(store: LedgerStore, version: int) -> None:
    """Delete an old hash key version that no card uses any more."""
    name = f"{PAN_HASH_PREFIX}{version}"
    with store.write() as led:
        names = [n for n in led.key_blocks() if n.startswith(PAN_HASH_PREFIX)]
        if name not in names:
            raise KeyStoreError(f"no card-number hash version {version}")
        current = max(int(n[len(PAN_HASH_PREFIX) :]) for n in names)
        if version == current:
            raise KeyStoreError(f"version {version} is the current one; rotate first")
        if led.hash_version_used(version):
            raise KeyStoreError(
                f"version {version} still indexes cards; they move on their next use"
            )
        led.delete_key_block(name)


def set_terminal_security(
    store: LedgerStore,
    terminal_id: str,
    profile: SecurityProfile,
    *,
    tmk: str = "",
    bdk: str = "",
    ksn_prefix: str = "",
) -> Terminal:
    """Give a terminal its security profile. Static profiles need a terminal master key
    (``tmk/...``, entered with ``keys add``); the working keys come with the terminal's first
    key change. DUKPT profiles need a BDK and the device's KSN without its counter."""
    with store.write() as led:
        t = led.terminal(terminal_id)
        if t is None:
            raise KeyStoreError(f"terminal {terminal_id} does not exist")
        blocks = led.key_blocks()
        if profile.static:
            if not tmk.startswith("tmk/") or tmk not in blocks:
                raise KeyStoreError("--tmk must name a terminal master key (tmk/...) in the store")
            bdk, ksn_prefix = "", ""
        elif profile.dukpt:
            if not bdk.startswith("bdk/") or bdk not in blocks:
                raise KeyStoreError("--bdk must name a base derivation key (bdk/...) in the store")
            want = 16 if profile is SecurityProfile.DUKPT_AES else 20
            if len(ksn_prefix) != want or any(
                c not in "0123456789ABCDEFabcdef" for c in ksn_prefix
            ):
                raise KeyStoreError(
                    f"--ksn-prefix must be {want} hex digits (the KSN without its counter)"
                )
            if profile is SecurityProfile.DUKPT_TDES and int(ksn_prefix, 16) & 0x1FFFFF:
                raise KeyStoreError("--ksn-prefix must have the 21 counter bits at zero")
            tmk = ""
        else:
            tmk = bdk = ksn_prefix = ""
        # Setting a profile (again) starts the terminal over: its next key change is the
        # first (unMACed), e.g. after a terminal lost its working keys.
        changed = True
        record = msgspec.structs.replace(
            t,
            security=profile,
            tmk=tmk,
            bdk=bdk,
            ksn_prefix=ksn_prefix.upper(),
            ksn_counter=0 if ksn_prefix.upper() != t.ksn_prefix else t.ksn_counter,
            mac_key="" if changed else t.mac_key,
            pin_key="" if changed else t.pin_key,
            retired_keys=() if changed else t.retired_keys,
        )
        led.put_terminal(record)
    return record


def set_card_pin(store: LedgerStore, keys: KeyStore, pan: str, pin: str) -> int:
    """Store the keyed verification value of a card's PIN and reset its wrong tries."""
    if not luhn_valid(pan):
        raise KeyStoreError("card number has a bad check digit")
    pvv = keys.pvv(pan, pin)
    with store.write() as led:
        card = led.card_by_hashes(keys.pan_hashes(pan))
        if card is None:
            raise KeyStoreError("no such card")
        led.put_card(msgspec.structs.replace(card, pvv=pvv, pin_tries=0))
    return card.id
