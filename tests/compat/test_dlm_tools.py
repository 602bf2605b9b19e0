"""fsck.ocfs2 repair and tunefs.ocfs2 changes, Debian's binaries unmodified, on the emulation.

Both join the heartbeat through libo2cb (a SEM_UNDO reference, the region started and
stopped) and take the volume's cluster locks through ``/dlm`` (libo2dlm: the domain named
by the UUID, the super lock EX by trylock, each journal's lock). We check what they print,
what they change on the image (``debugfs.ocfs2 -R stats``), that they left nothing behind
(no region, no semaphore set, no domain), and that a second node holding the super lock
keeps them out until that node dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakecfs import daemon
from tests.compat.ctools import (
    C_HB_CTL,
    O2CB,
    NodeShell,
    cluster_conf,
    node_shell,
    require_ctools,
    trace_lines,
)
from tests.fakecfs_fixtures import fakecfs_mount, require_fuse, wait_for
from tests.nodes import Region, mkfs

pytestmark = pytest.mark.usefixtures("ctools")
FSCK = "fsck.ocfs2"
TUNEFS = "tunefs.ocfs2"


@pytest.fixture
def ctools() -> None:
    require_ctools()
    require_fuse()


def super_lock_name() -> str:
    """libocfs2's name for the superblock lock: type 'S', pad, block 2, generation 0."""
    return "S" + "000000" + f"{2:016x}" + f"{0:08x}"


def label(image: Path) -> str:
    out = subprocess.run(["debugfs.ocfs2", "-R", "stats", str(image)], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("Label:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(out)


def registered_node(sh: NodeShell, conf: Path) -> None:
    """The cluster registered and ocfs2_dlmfs mounted at /dlm, as o2cb's ``online`` does
    (the emulated kernel keeps the mount on record for the node's later runs)."""
    sh.ok(O2CB, f"--config-file={conf}", "register-cluster", "demo")
    sh.ok("mkdir", "-p", "/dlm")
    sh.ok("mount", "-t", "ocfs2_dlmfs", "ocfs2_dlmfs", "/dlm")


def left_nothing(sh: NodeShell, sysroot: Path, uuid: str) -> None:
    for cluster in sh.status()["clusters"]:
        assert cluster["regions"] == [], cluster
    assert sh.sem(uuid) is None
    assert list((sysroot / "dlm").iterdir()) == []
    assert not (sysroot / "sys/kernel/config/cluster/demo/heartbeat" / uuid).exists()


def test_fsck_repair_and_tunefs_label(tmp_path: Path) -> None:
    image = mkfs(tmp_path / "vol.img")
    uuid = Region.of(image).uuid
    conf = cluster_conf(tmp_path / "cluster.conf")
    trace = tmp_path / "trace.jsonl"
    with fakecfs_mount(tmp_path / "sysroot", "--hb-interval-ms", "50",
                       "--dlm-dir", str(tmp_path / "dlm"), "--trace", str(trace)) as sysroot, \
            node_shell(sysroot, "n1") as sh:
        registered_node(sh, conf)
        fsck = sh.run(FSCK, "-fy", str(image))
        assert fsck.rc == 0, fsck.out + fsck.err  # 0: no errors found
        assert f"Checking OCFS2 filesystem in {image}" in fsck.out
        assert "Pass 4" in fsck.out  # the full (forced) check ran, read-write
        left_nothing(sh, sysroot, uuid)

        tune = sh.run(TUNEFS, "-L", "relabelled", str(image))
        assert tune.rc == 0, tune.out + tune.err
        assert label(image) == "relabelled"
        left_nothing(sh, sysroot, uuid)

    # Each tool joined the domain named by the UUID (after its heartbeat was steady) and
    # left it again.
    ops = [(str(t["op"]), str(t["path"]), t["result"]) for t in trace_lines(trace)]
    domain = f"/dlm/{uuid}"
    assert ops.count(("mkdir", domain, 0)) == 2
    assert ops.count(("rmdir", domain, 0)) == 2
    starts = [i for i, op in enumerate(ops) if op[0] == "write" and op[1].endswith("/dev")]
    joins = [i for i, op in enumerate(ops) if op == ("mkdir", domain, 0)]
    assert len(starts) == 2 and all(s < j for s, j in zip(starts, joins, strict=True))


@contextlib.contextmanager
def super_lock_held(sysroot: Path, uuid: str) -> Iterator[int]:
    """Hold the volume's super lock EX on this node, as a mounted ocfs2 or a tool would."""
    domain = sysroot / "dlm" / uuid
    domain.mkdir()
    fd = os.open(domain / super_lock_name(), os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o600)
    try:
        yield fd
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def test_the_super_lock_on_another_node_keeps_tunefs_out_until_it_dies(
        tmp_path: Path) -> None:
    image = mkfs(tmp_path / "vol.img")
    uuid = Region.of(image).uuid
    conf = cluster_conf(tmp_path / "cluster.conf")
    dlm = str(tmp_path / "dlm")
    with fakecfs_mount(tmp_path / "node1", "--hb-interval-ms", "50", "--dlm-dir", dlm) as r1, \
            fakecfs_mount(tmp_path / "node2", "--hb-interval-ms", "50", "--dlm-dir", dlm) as r2, \
            node_shell(r1, "n1") as n1, node_shell(r2, "n2") as n2:
        registered_node(n1, conf)
        registered_node(n2, conf)
        n1.ok(C_HB_CTL, "-S", "-d", str(image), "ocfs2")  # node1 heartbeats, like a mount
        with super_lock_held(r1, uuid):
            tune = n2.run(TUNEFS, "-L", "blocked", str(image))
            assert tune.rc != 0
            # libo2dlm's O2DLM_ET_TRYLOCK_FAILED, from open(2)'s ETXTBSY on the lock file.
            assert f'Trylock failed while opening device "{image}"' in tune.err, tune.err
            assert label(image) == "tests"
            left_nothing(n2, r2, uuid)  # the refused tool stopped its heartbeat again

            pid = daemon.daemon_pid(str(r1))
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # node1 dies holding the lock
            wait_for(lambda: not _alive(pid), what="node1's daemon to exit")
            tune = n2.run(TUNEFS, "-L", "after-death", str(image))
            assert tune.rc == 0, tune.out + tune.err
            assert label(image) == "after-death"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().split()[2] != "Z"
