"""Debian's C tools on user stacks, mixed with ours, and a differential at the socket.

One node per test (tests/usernode.py): fakecfs with ``--cluster-stack pcmk|cman``, the real
ocfs2_controld (hbctl.controld) behind a recording proxy. The C tools run under ``fakecfs
run`` (the statfs shim, mount(2) routed to the emulated VFS, /dev/misc and /proc/misc for
the pcmk DLM probe). The volume is on a loop device, because the C ``-u`` (and the kernel's
put_super helper, ``-K -u UUID``) finds devices only through /proc/partitions.

The differential drives one sequence (spec user-stacks.md §4: b1-b6, j1/j2, c2/c3/c6)
with the C tools, then with ours, against the same daemon, and requires the same records
on the wire, connection for connection, and the same exit codes and messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.ctools import C_HB_CTL, loop_device, require_ctools
from tests.fakecfs_fixtures import require_fuse
from tests.mount.test_user_stack import CLUSTER, mkfs, uuid_of
from tests.usernode import HBCTL, PY_HB_CTL, UserNode, user_node

MOUNT_OCFS2 = "/sbin/mount.ocfs2"
DEBUGFS = "debugfs.ocfs2"


@pytest.fixture(params=["cman", "pcmk"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[UserNode, str]]:
    require_fuse()
    require_ctools()
    image = mkfs(tmp_path / f"{request.param}.img", request.param)
    with loop_device(image) as dev, \
            user_node(tmp_path, request.param, Path(dev), CLUSTER, helper=C_HB_CTL) as n:
        yield n, uuid_of(image)


def c_sequence(node: UserNode, uuid: str) -> list[tuple[int, str]]:
    dev, d = str(node.image), node.workdir / "m"
    node.use_helper(C_HB_CTL)
    steps = [
        [C_HB_CTL, "-S", "-d", dev, "svc"],  # b1
        [C_HB_CTL, "-S", "-d", dev, "svc"],  # b2: EBUSY
        [C_HB_CTL, "-S", "-u", uuid, "svc2"],  # b3 by UUID (j1): EALREADY
        [C_HB_CTL, "-K", "-d", dev, "svc"],  # b4
        [C_HB_CTL, "-K", "-u", uuid, "svc2"],  # b5: the last service leaves
        [C_HB_CTL, "-K", "-d", dev, "svc"],  # b6: ENOENT
        [MOUNT_OCFS2, dev, f"{d}/a"],  # c2
        [MOUNT_OCFS2, dev, f"{d}/b"],  # c3: the additional mount
        ["umount", f"{d}/b"],
        ["umount", f"{d}/a"],  # put_super: the kernel's -K -u UUID (c6)
    ]
    return [(r.rc, r.err) for r in (node.ctool(*argv) for argv in steps)]


def our_sequence(node: UserNode, uuid: str) -> list[tuple[int, str]]:
    dev, d = str(node.image), node.workdir / "m"
    node.use_helper("python")
    steps = [
        [PY_HB_CTL, "-S", "-d", dev, "svc"],
        [PY_HB_CTL, "-S", "-d", dev, "svc"],
        [PY_HB_CTL, "-S", "-u", uuid, "svc2"],
        [PY_HB_CTL, "-K", "-d", dev, "svc"],
        [PY_HB_CTL, "-K", "-u", uuid, "svc2"],
        [PY_HB_CTL, "-K", "-d", dev, "svc"],
        [HBCTL, "mount", dev, f"{d}/a"],
        [HBCTL, "mount", dev, f"{d}/b"],
        [HBCTL, "umount", f"{d}/b"],
        [HBCTL, "umount", f"{d}/a"],
    ]
    out = []
    for argv in steps:
        r = node.run(*argv)
        # hbctl's own words differ from mount.ocfs2's; ocfs2_hb_ctl's must not.
        out.append((r.rc, r.err if argv[0] == PY_HB_CTL else ""))
    return out


def test_c_tools_and_ours_put_the_same_records_on_the_wire(
        node: tuple[UserNode, str]) -> None:
    n, uuid = node
    (n.workdir / "m/a").mkdir(parents=True)
    (n.workdir / "m/b").mkdir()
    c_results = c_sequence(n, uuid)
    c_wire = n.wire_since(0)
    assert n.mounts() == ""
    start = len(n.wire_records())
    ours = our_sequence(n, uuid)
    assert n.mounts() == ""
    assert n.wire_since(start) == c_wire
    assert ours == [(rc, err if i < 6 else "") for i, (rc, err) in enumerate(c_results)]
    assert [rc for rc, _ in ours] == [0, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    # One "ocfs2" service for two mounts, and one UNMOUNT for it, from the kernel's helper.
    sent = [t for _, way, t in c_wire if way == "C>D"]
    assert sent[-1] == f"UNMOUNT ocfs2 {uuid} ocfs2"
    assert sum(t.startswith("UNMOUNT") and t.endswith(" ocfs2") for t in sent) == 1


def test_c_and_python_tools_mixed_on_one_daemon(node: tuple[UserNode, str]) -> None:
    n, uuid = node
    dev = str(n.image)
    assert n.ctool(C_HB_CTL, "-S", "-d", dev, "fsck.ocfs2").rc == 0
    dup = n.run(PY_HB_CTL, "-S", "-d", dev, "fsck.ocfs2")  # the C tool's service: EBUSY
    assert (dup.rc, dup.err) == (1, "ocfs2_hb_ctl: Configuration error discovered while "
                                    "starting heartbeat\n")
    assert n.run(PY_HB_CTL, "-S", "-u", uuid, "tunefs.ocfs2").rc == 0
    (n.workdir / "m/a").mkdir(parents=True)
    assert n.ctool(MOUNT_OCFS2, dev, str(n.workdir / "m/a")).rc == 0  # 114 and a mount
    assert n.run(HBCTL, "mount", "--bind", str(n.workdir / "m/a"), "/virtual/bind").rc == 0
    assert n.ctool(C_HB_CTL, "-K", "-u", uuid, "tunefs.ocfs2").rc == 0
    assert n.run(PY_HB_CTL, "-K", "-d", dev, "fsck.ocfs2").rc == 0
    n.use_helper("python")
    assert n.run(HBCTL, "umount", "/virtual/bind").rc == 0
    assert n.ctool("umount", str(n.workdir / "m/a")).rc == 0  # our helper's -K -u
    sent = [t for _, way, t in n.wire_since(0) if way == "C>D"]
    assert sent[-1] == f"UNMOUNT ocfs2 {uuid} ocfs2"
    gone = n.run(PY_HB_CTL, "-K", "-u", uuid)  # nothing left: the group is gone
    assert gone.rc == 1


def test_debugfs_controld_dump_reads_the_daemons_log(node: tuple[UserNode, str]) -> None:
    n, uuid = node
    assert n.run(PY_HB_CTL, "-S", "-d", str(n.image), "svc").rc == 0
    r = n.ctool(DEBUGFS, "-R", "controld dump")
    assert r.rc == 0
    assert f'Adding service "svc" to device "{n.image}" uuid "{uuid}"' in r.out
    dump = [t for _, _, t in n.wire_since(0)]
    assert "DUMP" in dump and dump[-1] == "STATUS 0 OK"


def test_c_tools_without_a_daemon_fail_as_upstream(node: tuple[UserNode, str]) -> None:
    n, _ = node
    n._procs[0].kill()  # the daemon: the proxy now hangs up on every client
    n._procs[0].wait()
    r = n.ctool(C_HB_CTL, "-S", "-d", str(n.image), "svc")
    ours = n.run(PY_HB_CTL, "-S", "-d", str(n.image), "svc")
    assert r.rc == ours.rc == 1
    # Through the proxy the connect succeeds and then EOF comes: an I/O error for both.
    assert r.err == ours.err == "ocfs2_hb_ctl: I/O error on channel while starting heartbeat\n"
