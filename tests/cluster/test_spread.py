"""The rendezvous spread and the shared-storage check: pure functions, checked without a cluster."""

from __future__ import annotations

from pathlib import Path

from gateway.cluster.spread import owner, share
from gateway.detect.fstype import filesystem_type, uses_inotify

GROUPS = 64


def test_every_group_has_one_owner_and_the_load_is_even() -> None:
    nodes = ["a", "b", "c"]
    shares = {n: share(n, GROUPS, nodes) for n in nodes}
    assert sorted(g for s in shares.values() for g in s) == list(range(GROUPS))
    assert all(12 <= len(s) <= 32 for s in shares.values()), {n: len(s) for n, s in shares.items()}
    assert owner(5, []) is None


def test_a_joining_node_takes_only_its_own_groups_and_a_leaving_one_gives_only_its_own() -> None:
    before = {g: owner(g, ["a", "b"]) for g in range(GROUPS)}
    after = {g: owner(g, ["a", "b", "c"]) for g in range(GROUPS)}
    moved = [g for g in range(GROUPS) if before[g] != after[g]]
    assert moved and all(after[g] == "c" for g in moved)  # nothing moves between a and b
    gone = {g: owner(g, ["a", "c"]) for g in range(GROUPS)}
    assert all(gone[g] == after[g] for g in range(GROUPS) if after[g] != "b")


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /srv/spool rw,relatime shared:20 - nfs4 filer:/export/spool rw,vers=4.2
41 40 0:41 / /srv/spool/local\\040disk rw - xfs /dev/sdb1 rw
42 22 0:42 / /mnt/ceph rw - fuse.ceph-fuse ceph-fuse rw
"""


def test_the_spool_s_filesystem_decides_whether_inotify_is_used() -> None:
    assert filesystem_type(Path("/srv/spool/k1237"), MOUNTINFO) == "nfs4"
    assert filesystem_type(Path("/srv/spool/local disk/x"), MOUNTINFO) == "xfs"
    assert filesystem_type(Path("/srv/spoolish"), MOUNTINFO) == "ext4"
    assert not uses_inotify("auto", Path("/srv/spool"), MOUNTINFO)
    assert not uses_inotify("auto", Path("/mnt/ceph/spool"), MOUNTINFO)
    assert uses_inotify("auto", Path("/var/spool"), MOUNTINFO)
    assert uses_inotify("inotify", Path("/srv/spool"), MOUNTINFO)
    assert not uses_inotify("scan", Path("/var/spool"), MOUNTINFO)
