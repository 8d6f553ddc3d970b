"""A small software security module: it holds keys and answers questions, never hands a key out.

Keys at rest are TR-31 key blocks (version D, AES) wrapped under a key-encrypting key (KEK);
the KEK itself comes from a file readable only by the service user (DESIGN §6). Working keys:

- ``pan-hash``: HMAC-SHA256 key for the keyed card-number hash, versioned (v1, v2, ...);
- ``dup-content``: HMAC-SHA256 key for the content digest of duplicate detection (DESIGN §5).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from psec import tr31

__all__ = ["KeyStore", "KeyStoreError", "generate_kek_file", "load_kek", "new_key_blocks"]

KEK_LEN = 32  # AES-256
HMAC_KEY_LEN = 32
# TR-31 header: version D (AES key block), usage M7 (HMAC), algorithm H (HMAC), mode C
# (generate and verify), key version 00, exportability N (never exported), no optional blocks.
HMAC_HEADER = "D0000M7HC00N0000"
PAN_HASH_PREFIX = "pan-hash/"
DUP_CONTENT = "dup-content/1"


class KeyStoreError(Exception):
    """A key cannot be loaded or used; the message never contains key material."""


def generate_kek_file(path: Path) -> None:
    """Write a fresh random KEK (hex) readable only by its owner. For development and demos."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(KEK_LEN) + "\n")


def load_kek(path: Path) -> bytes:
    """Read the KEK file; refuse one that others can read.

    Error handling: :class:`KeyStoreError` naming the file and what to do.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyStoreError(
            f"key-encrypting key file {path} not found; run `authsrv init`"
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(f"key-encrypting key file {path} is readable by others; chmod 600 it")
    text = path.read_text().strip()
    try:
        kek = bytes.fromhex(text)
    except ValueError:
        raise KeyStoreError(f"key-encrypting key file {path} is not hex") from None
    if len(kek) != KEK_LEN:
        raise KeyStoreError(f"key-encrypting key file {path} must hold {KEK_LEN} bytes as hex")
    return kek


def new_key_blocks(kek: bytes) -> dict[str, str]:
    """Fresh working keys for a new store, as TR-31 blocks under ``kek``."""
    return {
        PAN_HASH_PREFIX + "1": tr31.wrap(kek, HMAC_HEADER, secrets.token_bytes(HMAC_KEY_LEN)),
        DUP_CONTENT: tr31.wrap(kek, HMAC_HEADER, secrets.token_bytes(HMAC_KEY_LEN)),
    }


def _unwrap_hmac(kek: bytes, name: str, block: str) -> bytes:
    try:
        header, key = tr31.unwrap(kek, block)
    except Exception:
        raise KeyStoreError(f"key {name} does not unwrap under this key-encrypting key") from None
    if (header.key_usage, header.algorithm, header.mode_of_use) != ("M7", "H", "C"):
        raise KeyStoreError(f"key {name} is not an HMAC generate/verify key")
    if len(key) != HMAC_KEY_LEN:
        raise KeyStoreError(f"key {name} has the wrong length")
    return bytes(key)


def check_value(key: bytes) -> str:
    """A key check value for listings: first 6 hex digits of HMAC(key, 16 zero bytes)."""
    return hmac.new(key, bytes(16), hashlib.sha256).hexdigest()[:6].upper()


class KeyStore:
    """Working keys unwrapped in memory; callers get digests and check values only."""

    def __init__(self, kek: bytes, blocks: Mapping[str, str]) -> None:
        self._pan_keys: dict[int, bytes] = {}
        self._check_values: dict[str, str] = {}
        for name, block in blocks.items():
            key = _unwrap_hmac(kek, name, block)
            self._check_values[name] = check_value(key)
            if name.startswith(PAN_HASH_PREFIX):
                self._pan_keys[int(name[len(PAN_HASH_PREFIX) :])] = key
            elif name == DUP_CONTENT:
                self._content_key = key
        if not self._pan_keys:
            raise KeyStoreError("no pan-hash key in the store")
        if not hasattr(self, "_content_key"):
            raise KeyStoreError("no dup-content key in the store")
        self.pan_version_current = max(self._pan_keys)

    def __repr__(self) -> str:
        return f"KeyStore(keys={sorted(self._check_values)})"

    def check_values(self) -> dict[str, str]:
        return dict(self._check_values)

    def pan_hash(self, pan: str, version: int | None = None) -> bytes:
        """The keyed hash of a card number under one key version (the current by default).

        The index key is the version byte followed by HMAC-SHA256, so that lookups under every
        live version never collide.
        """
        v = self.pan_version_current if version is None else version
        digest = hmac.new(self._pan_keys[v], pan.encode("ascii"), hashlib.sha256).digest()
        return bytes([v]) + digest

    def pan_hashes(self, pan: str) -> list[bytes]:
        """Hashes under every live version, newest first (DESIGN §6 look-up)."""
        return [self.pan_hash(pan, v) for v in sorted(self._pan_keys, reverse=True)]

    def content_mac(self, data: bytes) -> bytes:
        return hmac.new(self._content_key, data, hashlib.sha256).digest()
