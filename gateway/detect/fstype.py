"""Whether inotify can see the spool's new files: not on shared storage, where other hosts write.

inotify reports changes made through this kernel only; on NFS, CephFS, SMB or a cluster filesystem a
file another node (or the institution's host) renames in is never announced here, so detection there is
by the reconcile scan alone (stat evidence settles files as in scan-only mode). ``detection: auto`` reads
the filesystem type of the spool's mount from ``/proc/self/mountinfo``; ``inotify`` or ``scan`` force it.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED = frozenset(
    {"nfs", "nfs4", "ceph", "cifs", "smb3", "smbfs", "glusterfs", "gfs2", "ocfs2", "lustre", "beegfs", "9p"}
)
"""Filesystem types other hosts write to: inotify does not see their changes."""

MOUNTINFO = Path("/proc/self/mountinfo")


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem ``path`` is on (the longest mount point containing it), or None."""
    try:
        text = MOUNTINFO.read_text() if mountinfo is None else mountinfo
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in text.splitlines():
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        mount_point = _unescape(fields[4])
        fs_type = line.split(" - ", 1)[1].split(" ")[0]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > best[0]):
            best = (len(mount_point), fs_type)
    return best[1] if best else None


def is_shared(fs_type: str | None) -> bool:
    return fs_type is not None and (fs_type in SHARED or fs_type.startswith("fuse."))


def uses_inotify(detection: str, spool_root: Path, mountinfo: str | None = None) -> bool:
    """``detection`` is the config's ``auto``, ``inotify`` or ``scan``."""
    if detection != "auto":
        return detection == "inotify"
    return not is_shared(filesystem_type(spool_root, mountinfo))


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field
