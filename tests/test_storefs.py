"""Which filesystem holds the store, and what the host and the bench say when it is memory."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import authsrv.storefs as storefs
from authsrv.app import open_host
from authsrv.config import load_config
from authsrv.logs import configure_logging
from authsrv.storefs import Filesystem, durability, filesystem_of, parse_mountinfo
from bench.report import warnings_for
from tests.helpers import provision

MOUNTS = "\n".join(
    [
        "21 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard",
        "22 21 0:21 / /run/ram rw,nosuid,nodev shared:3 - tmpfs tmpfs rw,size=24G",
        "23 21 0:22 / /var/lib/authsrv rw,noatime - xfs /dev/vdb1 rw",
        "24 23 0:23 / /var/lib/authsrv/ram rw master:4 - ramfs ramfs rw",
        r"25 21 0:24 / /srv/store\040one rw - tmpfs tmpfs rw",
        # a second mount on the same point hides the first
        "26 21 0:25 / /mnt rw - tmpfs tmpfs rw",
        "27 21 0:26 / /mnt rw - ext4 /dev/vdc rw",
        "not a mount line",
        "",
    ]
)


@pytest.mark.parametrize(
    ("path", "fs_type", "mount_point"),
    [
        ("/var/lib/authsrv/store", "xfs", "/var/lib/authsrv"),
        ("/var/lib/authsrv", "xfs", "/var/lib/authsrv"),
        ("/var/lib/authsrv/ram/store", "ramfs", "/var/lib/authsrv/ram"),
        ("/var/lib/authsrv/rambo", "xfs", "/var/lib/authsrv"),  # a prefix, not the directory
        ("/run/ram/bench/store", "tmpfs", "/run/ram"),
        ("/srv/store one/data", "tmpfs", "/srv/store one"),
        ("/srv/store", "ext4", "/"),
        ("/mnt/store", "ext4", "/mnt"),
        ("/home/ops/store", "ext4", "/"),
    ],
)
def test_the_longest_mount_point_above_the_path_names_its_filesystem(
    path: str, fs_type: str, mount_point: str
) -> None:
    assert filesystem_of(Path(path), MOUNTS) == Filesystem(fs_type, mount_point)


def test_only_memory_filesystems_are_in_memory() -> None:
    kinds = {m.type: m.in_memory for m in parse_mountinfo(MOUNTS)}
    assert kinds == {"ext4": False, "tmpfs": True, "xfs": False, "ramfs": True}


def test_without_a_mount_table_the_filesystem_is_unknown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert filesystem_of(tmp_path, "") is None
    monkeypatch.setattr(storefs, "MOUNTINFO", tmp_path / "no-such-table")
    assert filesystem_of(tmp_path) is None
    assert durability(None) == storefs.SYNCED


def test_the_kernels_own_table_is_read(tmp_path: Path) -> None:
    fs = filesystem_of(tmp_path / "not-yet")
    assert fs is not None
    assert tmp_path.resolve().as_posix().startswith(fs.mount_point)


def test_durability_names_a_memory_store() -> None:
    assert durability(Filesystem("ext4", "/")) == "sync (each commit on disk before its answers)"
    text = durability(Filesystem("tmpfs", "/run/ram"))
    assert text.startswith("sync, but the store is on tmpfs at /run/ram (memory)")
    assert "power loss" in text


def _host_log(
    tmp_path: Path, fs_type: str, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    prov = provision(tmp_path / "p")
    table = tmp_path / "mountinfo"
    table.write_text(
        "21 1 254:0 / / rw - ext4 /dev/vda rw\n"
        f"22 21 0:21 / {prov.data.resolve()} rw - {fs_type} {fs_type} rw\n"
    )
    monkeypatch.setattr(storefs, "MOUNTINFO", table)
    cfg = load_config(None, {}, {"store.path": str(prov.data), "metrics.enabled": False})
    stream = io.StringIO()
    configure_logging("info", stream)
    host = open_host(cfg)
    host.store.close()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(("fs_type", "warned"), [("tmpfs", True), ("ext4", False)])
def test_the_host_warns_at_start_when_its_store_is_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fs_type: str, warned: bool
) -> None:
    lines = [
        e for e in _host_log(tmp_path, fs_type, monkeypatch) if e["event"] == "store_in_memory"
    ]
    assert len(lines) == int(warned)
    if warned:
        assert lines[0]["level"] == "warning"
        assert lines[0]["filesystem"] == "tmpfs"
        assert "power loss" in lines[0]["detail"]


@pytest.mark.parametrize(("fs_type", "warned"), [("tmpfs", True), ("ramfs", True), ("xfs", False)])
def test_a_bench_report_on_a_memory_store_says_its_figures_are_not_durable(
    fs_type: str, warned: bool
) -> None:
    report = {
        "machine": {"cores": 2},
        "host": {"store_filesystem": {"type": fs_type, "mount_point": "/x"}},
    }
    notes = [w for w in warnings_for(report) if "(memory)" in w]
    assert len(notes) == int(warned)
    if warned:
        assert notes[0].startswith(f"the store is on {fs_type} at /x (memory)")
