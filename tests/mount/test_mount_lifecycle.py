"""The seed's problem, end to end: mounts, binds and rbinds of one device hold heartbeat
together, and the last one going — through put_super and ``ocfs2_hb_ctl -K`` — stops it.

Each test is one emulated node: a fakecfs daemon started inside a private IPC namespace,
so that the helper it runs at put_super and every hbctl/ocfs2_hb_ctl command the test runs
(``nsenter --ipc``) share the node's semaphores, and nothing is left on the host. No
wrapper and no write to ``hb_ctl_path``: the kernel's helper reaches this fakecfs and finds
the device by itself (fakecfs runs it in the node's view of the emulated kernel). The
``node`` fixture boots with ``--hb-ctl-path`` naming our ``ocfs2_hb_ctl`` (the sysctl's
value at boot); the scenarios at the end use the default, Debian's ``/sbin/ocfs2_hb_ctl``.
Images are real mkfs.ocfs2 volumes.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakecfs import daemon
from tests.compat.ctools import cluster_conf
from tests.fakecfs_fixtures import (
    FAKECFS,
    VENV_BIN,
    read_attr,
    require_fuse,
    wait_for,
    write_attr,
)
from tests.ipcns import IpcNamespace, ipc_namespace
from tests.nodes import Region, configure, mkfs

HBCTL = str(VENV_BIN / "hbctl")
PY_HB_CTL = str(VENV_BIN / "ocfs2_hb_ctl")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Node:
    ns: IpcNamespace
    sysroot: Path
    image: Path
    uuid: str
    env: dict[str, str]
    tmp: Path
    helper: str = "ours"  # what hb_ctl_path runs at put_super: "ours" or "debian"

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.ns.run(*argv, env=self.env)

    def hbctl(self, *args: str) -> str:
        p = self.run(HBCTL, *args)
        assert p.returncode == 0, p.stderr
        return p.stdout

    def hbctl_fails(self, *args: str) -> str:
        p = self.run(HBCTL, *args)
        assert p.returncode == 1, p.stdout
        return p.stderr

    def hb_ctl(self, *args: str) -> str:
        p = self.run(PY_HB_CTL, *args)
        assert p.returncode == 0, p.stderr
        return p.stdout

    def region(self) -> dict[str, Any] | None:
        data = json.loads(self.hbctl("status", "--json"))
        regions = [r for c in data["clusters"] for r in c["regions"] if r["uuid"] == self.uuid]
        return regions[0] if regions else None

    def state(self) -> dict[str, Any]:
        """refs, flag, mounts, whether it heartbeats, and how many sets the node has."""
        r = self.region()
        return {
            "running": r is not None and bool(r["live_nodes"]),
            "refs": None if r is None else r["refs"],
            "flag": None if r is None else r["mounted"],
            "mounts": None if r is None else r["mounts"],
            "sets": len(self.ns.semaphore_sets()),
        }

    @property
    def region_dir(self) -> Path:
        return self.sysroot / "sys/kernel/config/cluster/demo/heartbeat" / self.uuid

    def pinned(self) -> str:
        return read_attr(self.sysroot / "sys/kernel/debug/o2hb" / self.uuid / "pinned")

    def active_stack(self) -> str:
        return read_attr(self.sysroot / "sys/fs/ocfs2/active_cluster_plugin")

    def set_hb_ctl_path(self, path: Path | str) -> None:
        fd = os.open(self.sysroot / "proc/sys/fs/ocfs2/nm/hb_ctl_path", os.O_WRONLY)
        try:
            os.write(fd, f"{path}\n".encode())
        finally:
            os.close(fd)

    def control(self, line: str) -> None:
        fd = os.open(self.sysroot / "fakecfs/mounts", os.O_WRONLY)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def log(self) -> str:
        return Path(daemon.log_file(str(self.sysroot))).read_text()


GONE = {"running": False, "refs": None, "flag": None, "mounts": None, "sets": 0}


def assert_gone(node: Node) -> None:
    """No region, no refcount set, no flag set: heartbeat stopped and nothing left."""
    state = node.state()
    assert state == GONE, (node.ns.semaphore_sets(), node.log()[-3000:])


def _ipc_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/ipc")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    require_fuse()
    image = mkfs(tmp_path / "vol.img")
    sysroot = tmp_path / "sysroot"
    sysroot.mkdir()
    env = dict(os.environ, HBCTL_SYSROOT=str(sysroot), HBCTL_DEVICES=str(image))
    with ipc_namespace() as ns:
        # The holder may not have unshared yet: nsenter would then enter the host's IPC
        # namespace, and the daemon (with the helpers it runs) would live there.
        wait_for(lambda: _ipc_ns(ns.holder.pid) != _ipc_ns(os.getpid()), timeout=10,
                 what="the namespace holder to unshare")
        started = ns.run(FAKECFS, "mount", "--background", "--hb-interval-ms", "50",
                         "--hb-ctl-path", PY_HB_CTL, str(sysroot), env=env)
        assert started.returncode == 0, started.stderr
        pid = daemon.daemon_pid(str(sysroot))
        assert pid is not None and _ipc_ns(pid) == _ipc_ns(ns.holder.pid)
        try:
            configure(sysroot, "demo", nodes=2, local=0)
            yield Node(ns, sysroot, image, Region.of(image).uuid, env, tmp_path)
        finally:
            ns.run(FAKECFS, "umount", str(sysroot), env=env)


# -- the must-show scenarios ------------------------------------------------------------------


def test_bind_then_umount_of_the_original_keeps_heartbeat_until_the_bind_goes(
        node: Node) -> None:
    out = node.hbctl("mount", str(node.image), "/mnt/a")
    assert "took the mount reference, 1 refs" in out
    assert node.state() == {"running": True, "refs": 1, "flag": True, "mounts": ["/mnt/a"],
                            "sets": 2}
    assert node.pinned() == "1\n"
    assert node.active_stack() == "o2cb\n"
    # As the real kernel answers (the lane's mount task): another label is EBUSY while
    # a volume holds the stack, the running one is taken.
    with pytest.raises(OSError) as busy:
        write_attr(node.sysroot / "sys/fs/ocfs2/cluster_stack", "pcmk")
    assert busy.value.errno == errno.EBUSY
    write_attr(node.sysroot / "sys/fs/ocfs2/cluster_stack", "o2cb\n")
    node.hbctl("mount", "--bind", "/mnt/a", "/mnt/b")
    assert node.state()["mounts"] == ["/mnt/a", "/mnt/b"]
    assert node.state()["refs"] == 1

    node.hbctl("umount", "/mnt/a")
    assert node.state() == {"running": True, "refs": 1, "flag": True, "mounts": ["/mnt/b"],
                            "sets": 2}
    assert node.pinned() == "1\n"

    node.hbctl("umount", "/mnt/b")
    assert_gone(node)
    assert not node.region_dir.exists()
    assert node.active_stack() == ""


def test_two_mounts_of_one_device_share_one_reference_and_the_last_umount_stops(
        node: Node) -> None:
    node.hbctl("mount", str(node.image), "/mnt/a")
    out = node.hbctl("mount", str(node.image), "/mnt/b")
    assert "already mounted: no new reference, 1 refs" in out
    mounts = json.loads(node.hbctl("status", "--json"))["mounts"]
    assert [m["dir"] for m in mounts] == ["/mnt/a", "/mnt/b"]
    assert mounts[0]["superblock"] == mounts[1]["superblock"]  # one superblock

    node.hbctl("umount", "/mnt/b")
    assert node.state() == {"running": True, "refs": 1, "flag": True, "mounts": ["/mnt/a"],
                            "sets": 2}
    node.hbctl("umount", "/mnt/a")
    assert_gone(node)


def test_upstream_counting_every_mount_plus_one_leaks_a_reference(node: Node) -> None:
    """What mount.ocfs2 does (+1 per mount, no flag): the one put_super leaves 1 behind."""
    for d in ("/mnt/a", "/mnt/b"):
        node.hb_ctl("-S", "-d", str(node.image), "ocfs2")  # o2cb_begin_group_join, r_persist
        node.control(f"mount {node.image} {d} heartbeat=local")  # then mount(2)
    assert node.state()["refs"] == 2
    node.hbctl("umount", "/mnt/a")
    node.hbctl("umount", "/mnt/b")  # put_super: our ocfs2_hb_ctl -K drops one
    leaked = node.state()
    assert leaked == {"running": True, "refs": 1, "flag": False, "mounts": [], "sets": 1}
    assert node.pinned() == "0\n"  # nothing is mounted, heartbeat just never stops
    node.hb_ctl("-K", "-u", node.uuid)  # what o2cb's clean_heartbeat has to do
    assert_gone(node)


def test_a_tool_reference_taken_by_hand_survives_the_umount_until_the_tool_lets_go(
        node: Node) -> None:
    node.hbctl("mount", str(node.image), "/mnt/a")
    node.hb_ctl("-S", "-u", node.uuid, "fsck")  # a tool: always its own reference
    assert node.state()["refs"] == 2
    node.hbctl("umount", "/mnt/a")
    assert node.state() == {"running": True, "refs": 1, "flag": False, "mounts": [],
                            "sets": 1}
    node.hb_ctl("-K", "-u", node.uuid, "fsck")
    assert_gone(node)


TOOL = """
import os, signal, sys, time
from hbctl import regions
from hbctl.devices import read_volume_with_sector
from hbctl.sysroot import from_env
image = os.environ["HBCTL_DEVICES"]
vol, desc = read_volume_with_sector(image)
root = from_env()
# fsck/tunefs: ocfs2_initialize_dlm -> group join with a SEM_UNDO reference
regions.begin_group_join(root, "o2cb", vol, vol.uuid, image, desc, persist=False)
def leave(*_):
    regions.group_leave(root, "o2cb", vol, vol.uuid, persist=False)  # ocfs2_shutdown_dlm
    sys.exit(0)
signal.signal(signal.SIGTERM, leave)
print("joined", flush=True)
while True:
    time.sleep(1)
"""


def _start_tool(node: Node) -> subprocess.Popen[str]:
    tool = subprocess.Popen(
        ["nsenter", "--ipc", "--target", str(node.ns.holder.pid), sys.executable, "-c", TOOL],
        env={**node.env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert tool.stdout is not None
    assert tool.stdout.readline() == "joined\n"
    return tool


def test_a_sem_undo_tool_reference_survives_the_umount_until_the_tool_leaves(
        node: Node) -> None:
    node.hbctl("mount", str(node.image), "/mnt/a")
    tool = _start_tool(node)
    try:
        assert node.state()["refs"] == 2
        node.hbctl("umount", "/mnt/a")
        assert node.state() == {"running": True, "refs": 1, "flag": False, "mounts": [],
                                "sets": 1}
        tool.send_signal(signal.SIGTERM)
        assert tool.wait(timeout=60) == 0
    finally:
        tool.kill()
        tool.wait()
    assert_gone(node)


def test_a_tool_killed_with_sigkill_releases_its_sem_undo_reference(node: Node) -> None:
    node.hbctl("mount", str(node.image), "/mnt/a")
    tool = _start_tool(node)
    tool.kill()
    tool.wait()
    # The kernel undid the tool's +1; the mount's reference is all that is left.
    assert node.state() == {"running": True, "refs": 1, "flag": True, "mounts": ["/mnt/a"],
                            "sets": 2}
    node.hbctl("umount", "/mnt/a")
    assert_gone(node)


RECORDER = """#!/bin/sh
# The helper's argv, its environment exactly as execve gave it, its cwd, and what it sees
# where the C tool looks: configfs, /proc/partitions and the /dev entry it names.
{{ printf '%s\\n' "$0" "$@"; echo --env; tr '\\0' '\\n' < /proc/$$/environ; echo --cwd; pwd;
   echo --configfs; ls /sys/kernel/config/cluster; echo --partitions; tail -n 1 /proc/partitions;
   echo --dev; od -A n -j 8192 -N 8 -c /dev/$(tail -n 1 /proc/partitions | awk '{{print $4}}')
}} > {record}
{then}
"""


def _record(path: Path) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {"argv": []}
    current = "argv"
    for line in path.read_text().splitlines():
        if line.startswith("--") and line[2:] in ("env", "cwd", "configfs", "partitions", "dev"):
            current = line[2:]
            sections[current] = []
        else:
            sections[current].append(line)
    return sections


def test_put_super_runs_what_hb_ctl_path_names_with_the_kernels_argv_and_env(
        node: Node) -> None:
    record = node.tmp / "record"
    recorder = node.tmp / "recorder"
    recorder.write_text(RECORDER.format(record=record, then="exit 0"))
    recorder.chmod(0o755)
    node.set_hb_ctl_path(recorder)
    node.hbctl("mount", str(node.image), "/mnt/a")
    # mount.ocfs2's io-priority call, made by hbctl mount (in its own environment)
    assert _record(record)["argv"] == [str(recorder), "-P", "-d", str(node.image)]
    record.unlink()
    node.hbctl("mount", "--bind", "/mnt/a", "/mnt/b")
    node.hbctl("umount", "/mnt/a")
    assert not record.exists()  # not the last mount: no put_super
    node.hbctl("umount", "/mnt/b")  # returns after the helper exited (UMH_WAIT_PROC)
    seen = _record(record)
    assert seen["argv"] == [str(recorder), "-K", "-u", node.uuid]
    # The kernel's two variables, plus the shim's (documented in the README).
    env = dict(line.split("=", 1) for line in seen["env"])
    assert env.pop("HOME") == "/" and env.pop("PATH") == "/sbin:/bin:/usr/sbin:/usr/bin"
    assert sorted(env) == ["FAKECFS_CONFIGFS_PATHS", "FAKECFS_SYSROOT", "LD_PRELOAD"]
    assert env["FAKECFS_SYSROOT"] == str(node.sysroot)
    assert seen["cwd"] == ["/"]
    # This emulated kernel at the real path, and the image findable as the C tool scans.
    assert seen["configfs"] == ["demo"]
    major, _minor, blocks, name = seen["partitions"][0].split()
    assert (major, int(blocks), name) == ("259", 64 * 1024, "vol.img")
    assert seen["dev"][0].split() == [*"OCFSV2", "\\0", "\\0"]  # the superblock
    # This helper did not stop anything: the mount's reference and flag are still there,
    # but the region is no longer pinned, so a stop by hand can end it.
    assert node.state() == {"running": True, "refs": 1, "flag": True, "mounts": [],
                            "sets": 2}
    assert node.pinned() == "0\n"
    # Nothing of the helper's namespace is left on the host.
    assert "vol.img" not in Path("/proc/partitions").read_text()
    assert not Path("/dev/vol.img").exists()
    node.hb_ctl("-K", "-u", node.uuid)
    assert_gone(node)


def test_put_super_with_our_ocfs2_hb_ctl_behind_a_recorder_stops_heartbeat(
        node: Node) -> None:
    record = node.tmp / "record"
    recorder = node.tmp / "recorder"
    recorder.write_text(RECORDER.format(record=record,
                                        then=f'exec {PY_HB_CTL} "$@"'))
    recorder.chmod(0o755)
    node.set_hb_ctl_path(recorder)
    node.hbctl("mount", str(node.image), "/mnt/a")
    node.hbctl("umount", "/mnt/a")
    assert record.read_text().splitlines()[:4] == [str(recorder), "-K", "-u", node.uuid]
    assert_gone(node)


def test_a_helper_that_cannot_run_is_logged_like_the_kernel_and_umount_succeeds(
        node: Node) -> None:
    node.set_hb_ctl_path("/nonexistent/ocfs2_hb_ctl")
    node.hbctl("mount", str(node.image), "/mnt/a")
    node.hbctl("umount", "/mnt/a")
    wait_for(lambda: "ocfs2: Error -2 running user helper "
             f'"/nonexistent/ocfs2_hb_ctl -K -u {node.uuid}"' in node.log(),
             timeout=5, what="the kernel's helper error in the log")
    assert node.state()["refs"] == 1  # nobody dropped the mount's reference
    node.hb_ctl("-K", "-u", node.uuid)
    assert_gone(node)


def test_rbind_of_a_tree_holding_a_mount_keeps_heartbeat_until_the_last_copy_goes(
        node: Node) -> None:
    node.hbctl("mount", str(node.image), "/srv/data")
    node.hbctl("mount", "--rbind", "/srv", "/jail/srv")
    assert node.state()["mounts"] == ["/srv/data", "/jail/srv/data"]
    node.hbctl("umount", "/srv/data")
    assert node.state() == {"running": True, "refs": 1, "flag": True,
                            "mounts": ["/jail/srv/data"], "sets": 2}
    node.hbctl("umount", "/jail/srv/data")
    assert_gone(node)


# -- what mount refuses, and what a mount holds ------------------------------------------------


def test_a_mounted_region_cannot_be_removed_by_hand(node: Node) -> None:
    node.hbctl("mount", str(node.image), "/mnt/a")
    with pytest.raises(OSError) as e:
        node.region_dir.rmdir()
    assert e.value.errno == 16  # EBUSY: o2dlm's pin
    # a tool stop that takes the count to 0 fails the same way and leaves the sets
    p = node.run(PY_HB_CTL, "-K", "-u", node.uuid, "fsck")
    assert p.returncode == 1
    assert node.state() == {"running": True, "refs": 0, "flag": True, "mounts": ["/mnt/a"],
                            "sets": 2}
    node.hbctl("umount", "/mnt/a")
    assert_gone(node)


def test_mount_refuses_what_mount_ocfs2_refuses(node: Node) -> None:
    junk = node.tmp / "junk.img"
    junk.write_bytes(b"\0" * (1 << 20))
    assert "is not an ocfs2 volume" in node.hbctl_fails("mount", str(junk), "/mnt/x")
    other = mkfs(node.tmp / "other.img", "64M", "--cluster-name=other")
    err = node.hbctl_fails("mount", str(other), "/mnt/x")
    assert "cluster 'other'" in err and "registered: 'demo'" in err
    assert node.state()["sets"] == 0
    # the bind of something that is not mounted, and the umount of nothing
    assert "Invalid argument" in node.hbctl_fails("mount", "--bind", "/nowhere", "/mnt/y")
    assert "Invalid argument" in node.hbctl_fails("umount", "/mnt/x")


def test_a_local_mount_volume_mounts_without_heartbeat(node: Node) -> None:
    local = node.tmp / "local.img"
    subprocess.run(["truncate", "-s", "64M", str(local)], check=True)
    subprocess.run(["mkfs.ocfs2", "-q", "-F", "-b", "4096", "-C", "4096", "-N", "1", "-J",
                    "size=4M", "-M", "local", str(local)], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    out = node.hbctl("mount", str(local), "/mnt/l")
    assert "heartbeat=none" in out
    data = json.loads(node.hbctl("status", "--json"))
    assert [(m["dir"], m["options"]) for m in data["mounts"]] == [("/mnt/l", "rw,heartbeat=none")]
    assert data["clusters"][0]["regions"] == []
    assert node.active_stack() == ""
    node.hbctl("umount", "/mnt/l")
    assert node.ns.semaphore_sets() == []


def test_status_shows_the_flag_and_the_mounts_holding_the_device(node: Node) -> None:
    node.hbctl("mount", str(node.image), "/mnt/a")
    node.hbctl("mount", "--bind", "/mnt/a", "/mnt/b")
    text = node.hbctl("status")
    row = next(line for line in text.splitlines() if line.startswith(node.uuid))
    assert row.split()[2:6] == ["1", "yes", "/mnt/a", "/mnt/b"]
    assert "/mnt/b  " + str(node.image) in text
    node.hbctl("umount", "/mnt/b")
    node.hbctl("umount", "/mnt/a")


def test_shutting_the_kernel_down_unmounts_and_leaves_no_semaphores(node: Node) -> None:
    node.hbctl("mount", str(node.image), "/mnt/a")
    node.hbctl("mount", "--rbind", "/mnt", "/copy")
    p = node.ns.run(FAKECFS, "umount", str(node.sysroot), env=node.env)
    assert p.returncode == 0, p.stderr
    assert node.ns.semaphore_sets() == []


# -- the C tools on the same region, in any order ------------------------------------------------


def _c_hb_ctl(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's ocfs2_hb_ctl on this node (fakecfs run: the surfaces at their real paths)."""
    from tests.compat.ctools import C_HB_CTL, require_ctools

    require_ctools()
    return node.run(FAKECFS, "run", str(node.sysroot), "--", C_HB_CTL, *args)


def test_c_tool_refs_interleave_with_flagged_mounts(node: Node) -> None:
    img = str(node.image)
    assert _c_hb_ctl(node, "-S", "-d", img, "fsck").returncode == 0  # C makes the 2-sem set
    node.hbctl("mount", img, "/mnt/a")
    node.hbctl("mount", img, "/mnt/b")
    assert _c_hb_ctl(node, "-I", "-d", img).stdout == f"{node.uuid}: 2 refs\n"
    assert node.state() == {"running": True, "refs": 2, "flag": True,
                            "mounts": ["/mnt/a", "/mnt/b"], "sets": 2}
    assert _c_hb_ctl(node, "-K", "-d", img, "fsck").returncode == 0
    assert node.state()["refs"] == 1
    node.hbctl("umount", "/mnt/a")
    node.hbctl("umount", "/mnt/b")
    assert_gone(node)


def test_a_c_tool_stop_after_the_last_umount_removes_everything(node: Node) -> None:
    img = str(node.image)
    node.hbctl("mount", img, "/mnt/a")
    assert _c_hb_ctl(node, "-S", "-d", img, "fsck").returncode == 0
    node.hbctl("umount", "/mnt/a")
    assert node.state() == {"running": True, "refs": 1, "flag": False, "mounts": [],
                            "sets": 1}
    assert _c_hb_ctl(node, "-K", "-d", img, "fsck").returncode == 0  # C: rmdir, IPC_RMID
    assert_gone(node)


def test_a_c_stop_to_zero_while_mounted_is_refused_and_put_super_still_ends_it(
        node: Node) -> None:
    img = str(node.image)
    node.hbctl("mount", img, "/mnt/a")
    c = _c_hb_ctl(node, "-K", "-d", img, "fsck")  # takes the mount's reference away...
    assert c.returncode == 1  # ...and its rmdir meets the pin (EBUSY)
    assert node.state() == {"running": True, "refs": 0, "flag": True, "mounts": ["/mnt/a"],
                            "sets": 2}
    node.hbctl("umount", "/mnt/a")
    assert_gone(node)


# -- out of the box: a fresh fakecfs mount, nothing written to hb_ctl_path, no wrapper --------


C_HB_CTL = "/sbin/ocfs2_hb_ctl"


@pytest.fixture(params=["debian", "ours"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    """A node as a new user makes it: ``fakecfs mount`` with no helper option (Debian's
    ``/sbin/ocfs2_hb_ctl``), or booted with ours; ``hbctl cluster register``."""
    require_fuse()
    helper = request.param
    if helper == "debian" and not os.access(C_HB_CTL, os.X_OK):
        pytest.skip(f"{C_HB_CTL} not installed (make setup installs Debian's ocfs2-tools)")
    image = mkfs(tmp_path / "vol.img")
    sysroot = tmp_path / "sysroot"
    sysroot.mkdir()
    # No HBCTL_DEVICES: the helper finds the device by itself; hbctl is given paths.
    env = dict(os.environ, HBCTL_SYSROOT=str(sysroot))
    env.pop("HBCTL_DEVICES", None)
    boot = [] if helper == "debian" else ["--hb-ctl-path", PY_HB_CTL]
    with ipc_namespace() as ns:
        wait_for(lambda: _ipc_ns(ns.holder.pid) != _ipc_ns(os.getpid()), timeout=10,
                 what="the namespace holder to unshare")
        started = ns.run(FAKECFS, "mount", "--background", "--hb-interval-ms", "50", *boot,
                         str(sysroot), env=env)
        assert started.returncode == 0, started.stderr
        try:
            node = Node(ns, sysroot, image, Region.of(image).uuid, env, tmp_path, helper)
            cluster_conf(tmp_path / "cluster.conf", nodes=("n0", "n1"))
            node.hbctl("cluster", "register", "--config", str(tmp_path / "cluster.conf"),
                       "--node", "n0", "demo")
            expected = C_HB_CTL if helper == "debian" else PY_HB_CTL
            assert read_attr(sysroot / "proc/sys/fs/ocfs2/nm/hb_ctl_path") == expected + "\n"
            yield node
        finally:
            ns.run(FAKECFS, "umount", str(sysroot), env=env)


def assert_stopped(node: Node, by_put_super: bool = True) -> None:
    """No region, no refcount set. When Debian's helper made the last stop, our flag set
    (which it never heard of) is left: it reads as clear, and the next stop at zero by
    hbctl or our ocfs2_hb_ctl removes it."""
    state = node.state()
    leftover = 1 if by_put_super and node.helper == "debian" else 0
    assert state == {**GONE, "sets": leftover}, (node.ns.semaphore_sets(), node.log()[-3000:])
    for line in node.ns.semaphore_sets():
        assert line.split()[3] == "3", line  # only a flag set (3 semaphores) may be left
    assert not node.region_dir.exists()


def test_the_users_scenario_ends_with_no_reference_and_no_region(fresh: Node) -> None:
    """The issue's scenario, verbatim: register, mount, bind, umount A, umount B."""
    fresh.hbctl("mount", str(fresh.image), "/mnt/a")
    fresh.hbctl("mount", "--bind", "/mnt/a", "/mnt/b")
    fresh.hbctl("umount", "/mnt/a")
    assert fresh.state() == {"running": True, "refs": 1, "flag": True, "mounts": ["/mnt/b"],
                             "sets": 2}
    fresh.hbctl("umount", "/mnt/b")
    assert_stopped(fresh)
    # and again: a stale flag set left by Debian's helper must not confuse the next mount
    out = fresh.hbctl("mount", str(fresh.image), "/mnt/a")
    assert "took the mount reference, 1 refs" in out
    fresh.hbctl("umount", "/mnt/a")
    assert_stopped(fresh)


ORDERS = {
    # second mount of the device, a bind of it, and a tool's reference taken in between
    "mount-mount-bind": (["mount A", "mount B", "bind B C"], ["umount B", "umount A",
                                                              "umount C"]),
    "tool-first": (["tool", "mount A", "bind A B"], ["umount A", "untool", "umount B"]),
    "tool-outlives": (["mount A", "tool", "bind A B"], ["umount B", "umount A", "untool"]),
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_every_order_of_mounts_binds_and_tool_references_ends_clean(
        fresh: Node, order: str) -> None:
    ups, downs = ORDERS[order]
    for step in [*ups, *downs]:
        verb, *args = step.split()
        dirs = [f"/mnt/{a.lower()}" for a in args]
        if verb == "mount":
            fresh.hbctl("mount", str(fresh.image), *dirs)
        elif verb == "bind":
            fresh.hbctl("mount", "--bind", *dirs)
        elif verb == "umount":
            fresh.hbctl("umount", *dirs)
        elif verb == "tool":  # fsck/tunefs's reference, with the device (our tool, -d)
            fresh.hb_ctl("-S", "-d", str(fresh.image), "fsck")
        else:
            fresh.hb_ctl("-K", "-d", str(fresh.image), "fsck")
        if step != downs[-1]:
            assert fresh.state()["running"], step
    assert_stopped(fresh, by_put_super=downs[-1].startswith("umount"))


def test_a_device_removed_before_put_super_is_not_found_and_logged(fresh: Node) -> None:
    fresh.hbctl("mount", str(fresh.image), "/mnt/a")
    fresh.image.unlink()  # the disk went away while mounted
    fresh.hbctl("umount", "/mnt/a")  # umount itself succeeds, as on a kernel
    log = fresh.log()
    assert f"{fresh.image} was removed; the helper cannot find UUID {fresh.uuid}" in log
    assert "exited with wait status 256" in log  # the helper's own failure, by fakecfs
    # Nothing was dropped: what the kernel leaves when its helper fails.
    assert fresh.state() == {"running": True, "refs": 1, "flag": True, "mounts": [],
                             "sets": 2}


def test_mount_gives_the_heartbeat_real_time_io_priority_as_mount_ocfs2(node: Node) -> None:
    """mount.ocfs2 runs ``hb_ctl_path -P -d DEV`` after a local-heartbeat mount; so does
    hbctl mount (our ocfs2_hb_ctl -P ionices the heartbeat, here the daemon's pid)."""
    pid = daemon.daemon_pid(str(node.sysroot))
    assert pid is not None
    before = subprocess.run(["ionice", "-p", str(pid)], capture_output=True, text=True)
    assert not before.stdout.startswith("realtime"), before.stdout
    node.hbctl("mount", str(node.image), "/mnt/a")
    after = subprocess.run(["ionice", "-p", str(pid)], capture_output=True, text=True)
    assert after.stdout.strip() == "realtime: prio 0"
    node.hbctl("umount", "/mnt/a")
    assert_gone(node)


def test_remount_changes_options_and_takes_no_reference(node: Node) -> None:
    node.hbctl("mount", str(node.image), "/mnt/a")
    node.hbctl("mount", "--bind", "/mnt/a", "/mnt/b")
    out = node.hbctl("mount", "-o", "remount,ro", str(node.image), "/mnt/a")
    assert "remounted /mnt/a (ro, no new reference)" in out
    data = json.loads(node.hbctl("status", "--json"))
    assert [(m["dir"], m["options"]) for m in data["mounts"]] == [
        ("/mnt/a", "ro,heartbeat=local"), ("/mnt/b", "ro,heartbeat=local")]
    assert node.state()["refs"] == 1
    err = node.hbctl_fails("mount", "-o", "remount,heartbeat=global", str(node.image), "/mnt/a")
    assert "Invalid argument" in err
    assert "Cannot change heartbeat mode on remount" in node.log()
    node.hbctl("mount", "-o", "remount,rw", str(node.image), "/mnt/b")
    assert json.loads(node.hbctl("status", "--json"))["mounts"][0]["options"] == \
        "rw,heartbeat=local"
    node.hbctl("umount", "/mnt/b")
    node.hbctl("umount", "/mnt/a")
    assert_gone(node)
