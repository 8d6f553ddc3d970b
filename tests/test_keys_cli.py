"""The key ceremony and key administration through the CLI: components in, check values out,
never a key on the screen."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from keys import kek_check_value, load_kek
from keys.mac import kcv
from tests.helpers import provision, run_cli


def _write(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return path


def test_kek_from_components_and_named_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    kek_file = tmp_path / "kek"
    env = {"AUTHSRV_KEK_FILE": str(kek_file)}
    c1, c2, c3 = (secrets.token_bytes(32) for _ in range(3))
    result = run_cli(
        "keys",
        "init",
        "--data",
        str(data),
        "--components",
        "3",
        env=env,
        input_text=f"{c1.hex()}\n{c2.hex()}\n{c3.hex()}\n",
    )
    assert result.returncode == 0, result.stderr
    kek = bytes(a ^ b ^ c for a, b, c in zip(c1, c2, c3, strict=True))
    assert load_kek(kek_file) == kek
    assert oct(kek_file.stat().st_mode & 0o777) == "0o600"
    for i, c in enumerate((c1, c2, c3), 1):
        assert f"component {i} check value {kek_check_value(c)}" in result.stdout
    assert f"check value {kek_check_value(kek)}" in result.stdout
    # A second init would orphan every key: refused.
    again = run_cli("keys", "init", "--data", str(data), "--dev", env=env)
    assert again.returncode == 2 and "exists" in again.stderr
    # Equal components are refused (each custodian brings their own).
    same = run_cli(
        "keys",
        "init",
        "--data",
        str(tmp_path / "d2"),
        env={"AUTHSRV_KEK_FILE": str(tmp_path / "k2")},
        input_text=f"{c1.hex()}\n{c1.hex()}\n",
    )
    assert same.returncode == 2 and "equal" in same.stderr
    assert run_cli("init", "--data", str(data), env=env).returncode == 0

    bdk1, bdk2 = secrets.token_bytes(16), secrets.token_bytes(16)
    f1, f2 = _write(tmp_path / "b1", bdk1.hex()), _write(tmp_path / "b2", bdk2.hex())
    added = run_cli(
        "keys",
        "add",
        "bdk/2026",
        "--algorithm",
        "T",
        "--component-file",
        str(f1),
        "--component-file",
        str(f2),
        "--data",
        str(data),
        env=env,
    )
    assert added.returncode == 0, added.stderr
    bdk = bytes(a ^ b for a, b in zip(bdk1, bdk2, strict=True))
    assert f"check value {kcv(bdk, 'tdes')}" in added.stdout
    listing = run_cli("keys", "list", "--data", str(data), env=env)
    assert listing.returncode == 0
    assert "bdk/2026" in listing.stdout and kcv(bdk, "tdes") in listing.stdout
    shown = listing.stdout + listing.stderr + added.stdout + added.stderr + result.stdout
    for secret in (kek, bdk, c1, c2, c3, bdk1, bdk2):
        assert secret.hex() not in shown.lower()

    rotated = run_cli("keys", "rotate-kek", "--dev", "--data", str(data), env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "DEVELOPMENT" in rotated.stderr
    assert "bdk/2026" in rotated.stdout and kcv(bdk, "tdes") in rotated.stdout
    assert load_kek(kek_file) != kek
    after = run_cli("keys", "list", "--data", str(data), env=env)
    assert kcv(bdk, "tdes") in after.stdout


def test_terminal_profile_pin_and_pan_versions(tmp_path: Path) -> None:
    prov = provision(tmp_path)
    d = ("--data", str(prov.data))
    tmk = _write(tmp_path / "tmk", secrets.token_bytes(16).hex())
    tmk2 = _write(tmp_path / "tmk2", secrets.token_bytes(16).hex())
    r = run_cli(
        "keys",
        "add",
        "tmk/T0000001",
        "--algorithm",
        "A",
        "--component-file",
        str(tmk),
        "--component-file",
        str(tmk2),
        *d,
    )
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "terminals",
        "security",
        "--id",
        "T0000001",
        "--profile",
        "mac-aes",
        "--tmk",
        "tmk/T0000001",
        *d,
    )
    assert r.returncode == 0, r.stderr
    assert "mac-aes" in run_cli("terminals", "list", *d).stdout
    bad = run_cli(
        "terminals",
        "security",
        "--id",
        "T0000002",
        "--profile",
        "dukpt-aes",
        "--bdk",
        "bdk/none",
        "--ksn-prefix",
        "12",
        *d,
    )
    assert bad.returncode == 2 and "--bdk" in bad.stderr
    pin = run_cli(
        "cards", "set-pin", "--card", "@1", "--cards", str(prov.cards_file), *d, input_text="4321\n"
    )
    assert pin.returncode == 0, pin.stderr
    short = run_cli(
        "cards", "set-pin", "--card", "@2", "--cards", str(prov.cards_file), *d, input_text="12\n"
    )
    assert short.returncode == 2 and "4 to 12 digits" in short.stderr
    assert "4321" not in pin.stdout + pin.stderr

    versions = run_cli("keys", "pan-versions", *d)
    assert "pan-hash/1" in versions.stdout and "current" in versions.stdout
    assert run_cli("keys", "rotate-pan-hash", *d).returncode == 0
    rows = run_cli("keys", "pan-versions", *d).stdout.splitlines()
    assert rows[0].split()[:2] == ["pan-hash/1", str(len(prov.all_pans()))]
    assert "in use" in rows[0] and "current" in rows[1]
    refused = run_cli("keys", "retire-pan-hash", "--version", "1", *d)
    assert refused.returncode == 2 and "still indexes cards" in refused.stderr
    refused = run_cli("keys", "retire-pan-hash", "--version", "2", *d)
    assert refused.returncode == 2 and "current" in refused.stderr


def test_import_and_export_tr31_blocks(tmp_path: Path) -> None:
    from psec import tr31

    from authsrv import keyadmin
    from authsrv.app import kek_path, open_store
    from keys import KeyStoreError

    prov = provision(tmp_path)
    store = open_store(prov.data, 64)
    try:
        kek = load_kek(kek_path(prov.data))
        kif, tmk = secrets.token_bytes(16), secrets.token_bytes(16)
        keyadmin.add_named_key(store, kek, "kek/kif", kif, "A", exportable=False)
        keyadmin.add_named_key(store, kek, "tmk/A", tmk, "A", exportable=True)
        keyadmin.add_named_key(store, kek, "tmk/N", tmk, "A", exportable=False)
        block = keyadmin.export_key(store, kek, "tmk/A", "kek/kif")
        header, key = tr31.unwrap(kif, block)  # the receiver's side
        assert (bytes(key), header.key_usage, header.exportability) == (tmk, "K0", "N")
        assert header.version_id == "D"  # an AES key-exchange key binds with version D
        assert keyadmin.import_key(store, kek, "tmk/B", block, "kek/kif") == kcv(tmk, "aes")
        with pytest.raises(KeyStoreError, match="not exportable"):
            keyadmin.export_key(store, kek, "tmk/N", "kek/kif")
        with pytest.raises(KeyStoreError, match="no key-exchange key"):
            keyadmin.export_key(store, kek, "tmk/A", "tmk/N")
        pin_key = tr31.wrap(kif, "D0000P0AE00N0000", secrets.token_bytes(16))
        with pytest.raises(KeyStoreError, match="usage P0, expected K0"):
            keyadmin.import_key(store, kek, "tmk/C", pin_key, "kek/kif")
        tampered = block[:-1] + ("0" if block[-1] != "0" else "1")
        with pytest.raises(KeyStoreError, match="does not unwrap"):
            keyadmin.import_key(store, kek, "tmk/D", tampered, "kek/kif")
        names = [k.name for k in keyadmin.list_keys(store, kek)[0]]
        assert "tmk/B" in names and "tmk/C" not in names and "tmk/D" not in names
    finally:
        store.close()
