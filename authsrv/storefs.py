"""Which filesystem holds the store, and whether a sync there reaches a disk.

Every answer leaves only after its batch has committed with sync (DESIGN §2). On a memory
filesystem (tmpfs, ramfs) a sync returns at once and nothing is kept across a power loss or a
reboot. The host serves from such a store (tests and benchmarks may want it), but it says so:
in its log at start-up, and in every bench report whose figures it affects, since a commit
there costs no disk time (docs/performance.md, "The disk's share").

Error handling: where the kernel's mount table cannot be read (not Linux), the filesystem is
unknown (None) and nothing is said.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MEMORY_FILESYSTEMS", "Filesystem", "durability", "filesystem_of"]

MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystems whose pages live only in memory: a sync writes nothing to a disk.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
SYNCED = "sync (each commit on disk before its answers)"


@dataclass(frozen=True, slots=True)
class Filesystem:
    """The mount that holds a path: its filesystem type and where it is mounted."""

    type: str
    mount_point: str

    @property
    def in_memory(self) -> bool:
        return self.type in MEMORY_FILESYSTEMS


def _unescape(field: str) -> str:
    r"""A mount point as the kernel writes it, with ``\040`` for a space (and ``\011``,
    ``\012``, ``\134`` for tab, newline and backslash), back to the path."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Filesystem]:
    """The mounts of a ``/proc/<pid>/mountinfo`` text, in its order (a later mount on the
    same point hides an earlier one).

    >>> parse_mountinfo("22 1 0:21 / /dev/shm rw,nosuid shared:3 - tmpfs tmpfs rw\\n")
    [Filesystem(type='tmpfs', mount_point='/dev/shm')]
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        # mount id, parent id, major:minor, root, mount point, options, [optional...], "-",
        # filesystem type, source, super options
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if sep + 1 >= len(fields):
            continue
        mounts.append(Filesystem(type=fields[sep + 1], mount_point=_unescape(fields[4])))
    return mounts


def _under(path: str, mount_point: str) -> bool:
    if mount_point == "/":
        return True
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def filesystem_of(path: Path, mountinfo: str | None = None) -> Filesystem | None:
    """The filesystem of the mount that holds ``path`` (which need not exist yet): the longest
    mount point above its real path, the last one mounted there. ``mountinfo`` is the mount
    table's text (read from the kernel when not given); None when there is none."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    real = os.path.realpath(path)
    best: Filesystem | None = None
    for mount in parse_mountinfo(mountinfo):
        if _under(real, mount.mount_point) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def durability(fs: Filesystem | None) -> str:
    """What a commit's sync means for a store on ``fs``, in a report's words."""
    if fs is not None and fs.in_memory:
        return (
            f"sync, but the store is on {fs.type} at {fs.mount_point} (memory): "
            "a sync reaches no disk and a power loss loses the store"
        )
    return SYNCED
