"""The heartbeat refcount shared by the C ``ocfs2_hb_ctl`` and ours, in both directions.

Both keep the reference count in the same SysV semaphore set (key = CRC-32 of the region
name), so a region started by one must be counted, and stopped, by the other. Each scenario
runs in one ``fakecfs run --node`` (its own IPC namespace: the host's semaphores are never
touched), and after every step both tools must print the same ``UUID: N refs``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.ctools import (
    C_HB_CTL,
    HBCTL,
    O2CB,
    PY_HB_CTL,
    NodeShell,
    cluster_conf,
    daemon_node,
    loop_device,
    node_shell,
    require_ctools,
    sem_key,
)
from tests.nodes import Region, mkfs

TOOLS = {"C": C_HB_CTL, "Py": PY_HB_CTL}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_ctools()
    return mkfs(tmp_path_factory.mktemp("img") / "vol.img")


@pytest.fixture
def shell(sysroot: Path, tmp_path: Path) -> Iterator[NodeShell]:
    """Node n1 of cluster 'demo' (registered by the C o2cb), one IPC namespace throughout."""
    require_ctools()
    conf = cluster_conf(tmp_path / "cluster.conf")
    with node_shell(sysroot, "n1") as sh:
        sh.ok(O2CB, f"--config-file={conf}", "register-cluster", "demo")
        yield sh
        sh.ok(O2CB, f"--config-file={conf}", "unregister-cluster", "demo")


def heartbeat_dir(sysroot: Path) -> Path:
    return sysroot / "sys/kernel/config/cluster/demo/heartbeat"


def both_refs(sh: NodeShell, target: list[str]) -> str:
    """``-I`` by both tools; they must agree byte for byte."""
    c = sh.ok(C_HB_CTL, "-I", *target)
    py = sh.ok(PY_HB_CTL, "-I", *target)
    assert c == py
    return c


def run_mixed(sh: NodeShell, sysroot: Path, uuid: str, target: list[str],
              first: str, second: str) -> None:
    """first -S, second -I, second -S, first -I, first -K, second -K."""
    steps = [
        (first, "-S", 1), (second, "-I", 1), (second, "-S", 2),
        (first, "-I", 2), (first, "-K", 1), (second, "-K", 0),
    ]
    for who, action, refs in steps:
        service = ["ocfs2"] if action in ("-S", "-K") else []
        out = sh.ok(TOOLS[who], action, *target, *service)
        if action == "-I":
            assert out == f"{uuid}: {refs} refs\n", (who, action)
        if refs:
            assert sh.sem(uuid) == (0, refs), (who, action)
            assert [p.name for p in heartbeat_dir(sysroot).iterdir() if p.is_dir()] == [uuid]
            assert both_refs(sh, target) == f"{uuid}: {refs} refs\n"
    # The last stop removed the region and destroyed the set (before any -I re-creates it).
    assert [p.name for p in heartbeat_dir(sysroot).iterdir() if p.is_dir()] == []
    assert not (sysroot / "sys/kernel/debug/o2hb" / uuid).exists()
    assert sem_key(uuid) not in sh.sem_keys()
    assert sh.sem_keys() == []
    # -I on a stopped region creates an empty set, as upstream does; both say 0.
    assert both_refs(sh, target) == f"{uuid}: 0 refs\n"


@pytest.mark.parametrize(("first", "second"), [("C", "Py"), ("Py", "C")])
def test_mixed_sequence_by_device(shell: NodeShell, sysroot: Path, image: Path,
                                  first: str, second: str) -> None:
    uuid = Region.of(image).uuid
    run_mixed(shell, sysroot, uuid, ["-d", str(image)], first, second)


@pytest.mark.parametrize(("first", "second"), [("C", "Py"), ("Py", "C")])
def test_mixed_sequence_by_uuid(shell: NodeShell, sysroot: Path, image: Path,
                                first: str, second: str) -> None:
    uuid = Region.of(image).uuid
    with loop_device(image):  # -u finds the device through /proc/partitions
        run_mixed(shell, sysroot, uuid, ["-u", uuid], first, second)


# -- mounts: upstream's two-mount leak with upstream's binaries, and the mounted flag --------


def test_two_mounts_leak_upstream_and_not_with_hbctl(tmp_path: Path, image: Path) -> None:
    """mount.ocfs2 (unmodified; the shim routes its mount(2) of type ocfs2 to fakecfs's
    emulated VFS) takes a reference per mount, but the kernel runs ``-K`` once, at
    put_super: two mounts leave one reference and heartbeat running. ``hbctl mount`` with
    the mounted flag leaves nothing."""
    uuid = Region.of(image).uuid
    mnt = tmp_path / "node"
    conf = cluster_conf(tmp_path / "cluster.conf")
    dirs = [tmp_path / d for d in ("a", "b", "c")]
    for d in dirs:
        d.mkdir()
    a, b, c = (str(d) for d in dirs)
    hb = mnt / "sys/kernel/config/cluster/demo/heartbeat"
    # The kernel's default hb_ctl_path, Debian's /sbin/ocfs2_hb_ctl: no wrapper.
    with loop_device(image) as dev, daemon_node(mnt, "n1", "--hb-interval-ms", "50") as sh:
        sh.ok(O2CB, f"--config-file={conf}", "register-cluster", "demo")

        def refs() -> str:
            return both_refs(sh, ["-u", uuid])

        def mounts() -> list[list[str]]:
            return [line.split() for line in (mnt / "fakecfs/mounts").read_text().splitlines()]

        # Upstream: one persistent reference per mount.ocfs2, one -K at put_super.
        sh.ok("mount.ocfs2", dev, a)
        sh.ok("mount.ocfs2", dev, b)
        assert [(m[0], m[1], m[3], m[5]) for m in mounts()] == [
            (dev, a, "rw,heartbeat=local", uuid), (dev, b, "rw,heartbeat=local", uuid)]
        assert mounts()[0][4] == mounts()[1][4]  # one superblock for both
        assert refs() == f"{uuid}: 2 refs\n"
        sh.ok("umount", a)
        assert refs() == f"{uuid}: 2 refs\n"  # not the last mount: no put_super
        sh.ok("umount", b)  # put_super: the kernel runs the helper, C ocfs2_hb_ctl -K -u
        assert mounts() == []
        assert refs() == f"{uuid}: 1 refs\n"  # the leak
        assert [p.name for p in hb.iterdir() if p.is_dir()] == [uuid]  # still heartbeating
        sh.ok(C_HB_CTL, "-K", "-u", uuid)  # what an admin (or the init script) must do
        assert [p.name for p in hb.iterdir() if p.is_dir()] == []

        # Ours: the first mount takes the reference and sets the mounted flag, later
        # mounts and binds share it, and put_super's -K (our ocfs2_hb_ctl, the user's own
        # hb_ctl_path: honoured) drops it.
        sh.ok("sh", "-c", f"echo {PY_HB_CTL} > /proc/sys/fs/ocfs2/nm/hb_ctl_path")
        sh.ok(HBCTL, "mount", dev, a)
        sh.ok(HBCTL, "mount", dev, b)
        sh.ok("mount", "--bind", a, c)  # util-linux mount(8): MS_BIND, routed by the shim
        assert [m[1] for m in mounts()] == [a, b, c]
        assert refs() == f"{uuid}: 1 refs\n"
        (region,) = sh.status()["clusters"][0]["regions"]
        assert region["mounted"] is True and region["refs"] == 1
        sh.ok("umount", a)
        sh.ok("umount", c)
        assert [p.name for p in hb.iterdir() if p.is_dir()] == [uuid]
        sh.ok("umount", b)  # the last mount: put_super runs our -K
        assert [p.name for p in hb.iterdir() if p.is_dir()] == []
        assert sh.sem_keys() == []
        sh.ok(O2CB, f"--config-file={conf}", "unregister-cluster", "demo")


def test_mount_ocfs2_and_umount_of_an_image_leave_nothing_with_no_wrapper(
        tmp_path: Path) -> None:
    """Out of the box: an image file (no loop device), ``fakecfs run --device`` so the C
    tools find it by UUID, the kernel's default helper (Debian's ``/sbin/ocfs2_hb_ctl``,
    nothing written to ``hb_ctl_path``). mount.ocfs2, a bind, a tool's reference, and the
    umounts in any order: the last one stops heartbeat and leaves no semaphore set."""
    image = mkfs(tmp_path / "shared.img")
    uuid = Region.of(image).uuid
    mnt = tmp_path / "node"
    conf = cluster_conf(tmp_path / "cluster.conf")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    hb = mnt / "sys/kernel/config/cluster/demo/heartbeat"

    def regions() -> list[str]:
        return [p.name for p in hb.iterdir() if p.is_dir()]

    with daemon_node(mnt, "n1", "--hb-interval-ms", "50",
                     run_args=["--device", str(image)]) as sh:
        sh.ok(O2CB, f"--config-file={conf}", "register-cluster", "demo")
        assert (mnt / "proc/sys/fs/ocfs2/nm/hb_ctl_path").read_text() == "/sbin/ocfs2_hb_ctl\n"
        sh.ok(C_HB_CTL, "-S", "-u", uuid, "fsck")  # a tool's reference, found by UUID
        sh.ok("mount.ocfs2", str(image), str(a))
        sh.ok("mount", "--bind", str(a), str(b))
        assert both_refs(sh, ["-u", uuid]) == f"{uuid}: 2 refs\n"
        # what the tools read as the mount table (mtab is /proc/mounts): the ocfs2 mounts
        proc_mounts = [m.split() for m in sh.ok("cat", "/etc/mtab").splitlines()]
        assert [str(image), str(a), "ocfs2", "rw,heartbeat=local", "0", "0"] in proc_mounts
        assert [str(image), str(b), "ocfs2", "rw,heartbeat=local", "0", "0"] in proc_mounts
        # MS_REMOUNT: no group join, no reference; both mounts of the superblock go ro
        sh.ok("mount.ocfs2", "-o", "remount,ro", str(image), str(a))
        assert both_refs(sh, ["-u", uuid]) == f"{uuid}: 2 refs\n"
        assert {line.split()[3] for line in (mnt / "fakecfs/mounts").read_text().splitlines()} \
            == {"ro,heartbeat=local"}
        sh.ok("umount", str(a))
        sh.ok(C_HB_CTL, "-K", "-u", uuid, "fsck")
        assert regions() == [uuid]  # the bind still holds the superblock
        sh.ok("umount", str(b))  # put_super: /sbin/ocfs2_hb_ctl -K -u UUID finds shared.img
        assert regions() == []
        assert sh.sem_keys() == []
        sh.ok(O2CB, f"--config-file={conf}", "unregister-cluster", "demo")
