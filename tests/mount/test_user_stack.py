"""User stacks end to end with our tools: fakecfs's kernel side, hbctl's client, the real
ocfs2_controld (hbctl.controld), records checked at the socket.

Each test is one node (tests/usernode.py): fakecfs with ``--cluster-stack cman|pcmk`` and
the node's namespaces, the daemon behind a recording proxy. The rows are spec
user-stacks.md §4's (b1-b6, c2/c3/c6, a1/a4, f*_1), driven by our ``ocfs2_hb_ctl`` and
``hbctl``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakecfs.control import Events
from tests.fakecfs_fixtures import (
    fakecfs_mount,
    read_attr,
    require_fuse,
    wait_for,
    write_attr,
)
from tests.usernode import HBCTL, PY_HB_CTL, UserNode, user_node

CLUSTER = "uc"


def mkfs(path: Path, stack: str) -> Path:
    if shutil.which("mkfs.ocfs2") is None:
        pytest.skip("mkfs.ocfs2 (ocfs2-tools) is not installed")
    subprocess.run(["truncate", "-s", "64M", str(path)], check=True)
    subprocess.run(["mkfs.ocfs2", "-q", "-F", "-b", "4096", "-C", "4096", "-N", "2", "-J",
                    "size=4M", f"--cluster-stack={stack}", f"--cluster-name={CLUSTER}",
                    str(path)], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return path


def uuid_of(image: Path) -> str:
    from hbctl.devices import read_volume

    return read_volume(str(image)).uuid


@pytest.fixture
def cman(tmp_path: Path) -> Iterator[tuple[UserNode, str]]:
    require_fuse()
    image = mkfs(tmp_path / "cman.img", "cman")
    with user_node(tmp_path, "cman", image, CLUSTER) as node:
        yield node, uuid_of(image)


def test_hb_ctl_start_stop_services_as_upstream(cman: tuple[UserNode, str]) -> None:
    node, uuid = cman
    img = str(node.image)
    hb = PY_HB_CTL
    assert node.run(hb, "-S", "-d", img, "svc").rc == 0  # b1
    b2 = node.run(hb, "-S", "-d", img, "svc")
    assert (b2.rc, b2.err) == (1, "ocfs2_hb_ctl: Configuration error discovered while "
                                  "starting heartbeat\n")
    assert node.run(hb, "-S", "-u", uuid, "svc2").rc == 0  # b3 (by UUID)
    assert node.run(hb, "-K", "-d", img, "svc").rc == 0  # b4
    assert node.run(hb, "-K", "-u", uuid, "svc2").rc == 0  # b5: the last service
    b6 = node.run(hb, "-K", "-d", img, "svc")
    assert (b6.rc, b6.err) == (1, "ocfs2_hb_ctl: Configuration error discovered while "
                                  "stopping heartbeat\n")
    assert node.wire_since(0) == [
        (1, "C>D", f"MOUNT ocfs2 {uuid} {CLUSTER} {img} svc"),
        (1, "D>C", "STATUS 0 OK"),
        (1, "C>D", f"MRESULT ocfs2 {uuid} 0 svc"),
        (1, "D>C", "STATUS 0 OK"),
        (2, "C>D", f"MOUNT ocfs2 {uuid} {CLUSTER} {img} svc"),
        (2, "D>C", f"STATUS 16 Filesystem {uuid} is already mounted on svc"),
        (3, "C>D", f"MOUNT ocfs2 {uuid} {CLUSTER} {img} svc2"),
        (3, "D>C", "STATUS 114 Already mounted, go ahead"),
        (3, "C>D", f"MRESULT ocfs2 {uuid} 0 svc2"),
        (3, "D>C", "STATUS 0 OK"),
        (4, "C>D", f"UNMOUNT ocfs2 {uuid} svc"),
        (4, "D>C", "STATUS 0 OK"),
        (5, "C>D", f"UNMOUNT ocfs2 {uuid} svc2"),
        (5, "D>C", "STATUS 0 OK"),
        (6, "C>D", f"UNMOUNT ocfs2 {uuid} svc"),
        (6, "D>C", f"STATUS 2 Filesystem {uuid} is unknown or not mounted anywhere"),
    ]
    # The daemon's kernel side: one T01 handshake, still open.
    assert node.stack_user()["control_daemons"] == "1"


def test_two_mounts_and_a_bind_share_one_service_ended_by_the_kernels_stop(
        cman: tuple[UserNode, str]) -> None:
    node, uuid = cman
    img = str(node.image)
    for argv in (["mount", img, "/m/a"], ["mount", img, "/m/b"],
                 ["mount", "--bind", "/m/a", "/m/c"]):
        r = node.run(HBCTL, *argv)
        assert r.rc == 0, r.err
    assert read_attr(node.mnt / "sys/fs/ocfs2/active_cluster_plugin") == "user\n"
    status = json.loads(node.run(HBCTL, "status", "--json").out)
    assert status["stack"] == "cman"
    assert {m["dir"] for m in status["mounts"]} == {"/m/a", "/m/b", "/m/c"}
    assert uuid in node.stack_user()["live_connections"]
    assert [line.split()[3] for line in node.mounts().splitlines()] == \
        ["rw,cluster_stack=cman"] * 3
    for d in ("/m/c", "/m/b"):
        assert node.run(HBCTL, "umount", d).rc == 0
    start = len(node.wire_records())
    assert node.run(HBCTL, "umount", "/m/a").rc == 0  # put_super: the helper's -K -u
    assert node.wire_since(start) == [
        (1, "C>D", f"UNMOUNT ocfs2 {uuid} ocfs2"),
        (1, "D>C", "STATUS 0 OK"),
    ]
    assert node.mounts() == ""
    assert node.stack_user()["live_connections"] == "-"
    assert read_attr(node.mnt / "sys/fs/ocfs2/active_cluster_plugin") == ""
    first = node.wire_since(0)[:8]
    assert first == [
        (1, "C>D", f"MOUNT ocfs2 {uuid} {CLUSTER} {img} ocfs2"),
        (1, "D>C", "STATUS 0 OK"),
        (1, "C>D", f"MRESULT ocfs2 {uuid} 0 ocfs2"),
        (1, "D>C", "STATUS 0 OK"),
        (2, "C>D", f"MOUNT ocfs2 {uuid} {CLUSTER} {img} ocfs2"),
        (2, "D>C", "STATUS 114 Already mounted, go ahead"),
        (2, "C>D", f"MRESULT ocfs2 {uuid} 0 ocfs2"),
        (2, "D>C", "STATUS 0 OK"),
    ]


def test_a_refused_mount_reports_its_errno_and_the_service_goes(
        cman: tuple[UserNode, str]) -> None:
    node, uuid = cman
    img = str(node.image)
    # o2cb heartbeat options on a user stack: the kernel refuses (EINVAL)
    r = node.run(HBCTL, "mount", "-o", "heartbeat=local", img, "/m/a")
    assert r.rc == 1
    assert node.wire_since(0)[2] == (1, "C>D", f"MRESULT ocfs2 {uuid} {errno.EINVAL} ocfs2")
    # The failed first mount left nothing: the next -K finds no filesystem.
    assert node.run(PY_HB_CTL, "-K", "-u", uuid).rc == 1


def test_the_last_daemon_close_with_mounts_crashes_the_node(tmp_path: Path) -> None:
    require_fuse()
    image = mkfs(tmp_path / "cman.img", "cman")
    with user_node(tmp_path, "cman", image, CLUSTER) as node:
        assert node.run(HBCTL, "mount", str(image), "/m/a").rc == 0
        daemon = node._procs[0]
        daemon.kill()  # its ocfs2_control handle closes with a mount live
        daemon.wait()
        wait_for(lambda: node.stack_user()["crashed"] != "-", what="the emergency restart")
        assert node.mounts() == ""
        assert node.stack_user()["control_daemons"] == "0"
        assert node.wire_since(0)[-1][2] != f"UNMOUNT ocfs2 {uuid_of(image)} ocfs2"


def test_pcmk_probes_the_dlm_then_uses_the_daemon(tmp_path: Path) -> None:
    require_fuse()
    image = mkfs(tmp_path / "pcmk.img", "pcmk")
    with user_node(tmp_path, "pcmk", image, CLUSTER) as node:
        uuid = uuid_of(image)
        assert node.run(PY_HB_CTL, "-S", "-d", str(image), "svc").rc == 0
        assert node.run(PY_HB_CTL, "-K", "-d", str(image), "svc").rc == 0
        assert [t for _, d, t in node.wire_since(0) if d == "C>D"] == [
            f"MOUNT ocfs2 {uuid} {CLUSTER} {image} svc", f"MRESULT ocfs2 {uuid} 0 svc",
            f"UNMOUNT ocfs2 {uuid} svc"]


def test_pcmk_with_recover_callbacks_needs_no_daemon(tmp_path: Path) -> None:
    require_fuse()
    image = mkfs(tmp_path / "pcmk.img", "pcmk")
    with user_node(tmp_path, "pcmk", image, CLUSTER,
                   mount_args=("--dlm-recover-callbacks",)) as node:
        assert node.run(PY_HB_CTL, "-S", "-d", str(image), "svc").rc == 0  # a4
        assert node.run(PY_HB_CTL, "-K", "-d", str(image), "svc").rc == 0
        assert node.wire_records() == []


def test_the_wrong_running_stack_is_refused(cman: tuple[UserNode, str], tmp_path: Path) -> None:
    node, _ = cman
    pcmk = mkfs(tmp_path / "pcmk.img", "pcmk")
    r = node.run(PY_HB_CTL, "-S", "-d", str(pcmk), "svc")
    assert (r.rc, r.err) == (1, "ocfs2_hb_ctl: Cluster stack is invalid while starting "
                                "heartbeat\n")
    assert node.wire_records() == []


# -- the kernel side over FUSE (no daemon): the device files through real syscalls -------


def test_ocfs2_control_and_dlm_control_over_fuse(tmp_path: Path) -> None:
    require_fuse()
    with fakecfs_mount(tmp_path / "mnt", "--cluster-stack", "pcmk") as mnt:
        assert read_attr(mnt / "sys/fs/ocfs2/loaded_cluster_plugins") == "o2cb\n\0\0\0\0\0"
        assert not (mnt / "sys/fs/ocfs2/dlm_recover_callback_support").exists()
        assert read_attr(mnt / "proc/misc").splitlines()[:2] == \
            ["  0 ocfs2_control", "  0 dlm-control"]
        image = mkfs(tmp_path / "pcmk.img", "pcmk")
        uuid = uuid_of(image)
        mount = f"mount {image} /m/a cluster_stack=pcmk\n"
        with pytest.raises(OSError) as e:  # WITH_CONTROLD: no daemon holds ocfs2_control
            write_attr(mnt / "fakecfs/mounts", mount)
        assert e.value.errno == errno.ESRCH
        fd = os.open(mnt / "dev/misc/ocfs2_control", os.O_RDWR)
        try:
            with pytest.raises(OSError) as e:
                os.write(fd, b"T01\n")  # before reading the protocol list
            assert e.value.errno == errno.EINVAL
            assert os.read(fd, 4) == b"T01\n"
            assert os.read(fd, 4) == b""
            assert os.write(fd, b"T01\n") == 4
            with pytest.raises(OSError) as e:
                os.write(fd, b"SETN 00000001\nSETV 01 00\n")  # two messages in one write
            assert e.value.errno == errno.EINVAL
            assert os.write(fd, b"SETN 00000001\n") == 14
            assert os.write(fd, b"SETV 01 00\n") == 11
            assert (mnt / "fakecfs/stack_user").read_text().startswith("control_daemons 1\n")
            write_attr(mnt / "fakecfs/mounts", mount)
            assert os.write(fd, f"DOWN {uuid} 00000002\n".encode()) == 47
            status = (mnt / "fakecfs/stack_user").read_text()
            assert f"node_downs {uuid}:2\n" in status and "crashed -\n" in status
            down = Events(mnt).wait_for(kind="node_down", timeout=5)
            assert (down["region"], down["node"]) == (uuid, 2)
        finally:
            os.close(fd)  # the last daemon, with a mount live: the node "restarts"
        status = (mnt / "fakecfs/stack_user").read_text()
        assert status.startswith("control_daemons 0\n") and "crashed emergency" in status
        fenced = Events(mnt).wait_for(kind="fenced", timeout=5)
        assert fenced["message"].startswith("ocfs2: Unexpected release of ocfs2_control!")
        assert read_attr(mnt / "fakecfs/mounts") == ""
        fd = os.open(mnt / "dev/misc/dlm-control", os.O_RDWR)
        try:
            assert struct.unpack("=3I", os.read(fd, 12)) == (6, 0, 2)
            with pytest.raises(OSError) as e:
                os.read(fd, 4)
            assert e.value.errno == errno.EINVAL
        finally:
            os.close(fd)


# -- fakecfs run: a node's network namespace -------------------------------------------------

def _run_probe(mnt: Path, *opts: str) -> tuple[str, str]:
    """(the command's network namespace, whether it reaches an @ocfs2_controld_sock)"""
    from tests.fakecfs_fixtures import FAKECFS

    probe = ("import os, socket\n"
             "print(os.readlink('/proc/self/ns/net'))\n"
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
             "try:\n"
             "    s.connect(b'\\0ocfs2_controld_sock'); print('daemon')\n"
             "except OSError:\n"
             "    print('no daemon')\n")
    out = subprocess.run([FAKECFS, "run", str(mnt), *opts, "--", "python3", "-c", probe],
                         capture_output=True, text=True, check=True).stdout
    ns, reached = out.splitlines()[:2]
    return ns, reached


def test_fakecfs_run_gives_a_node_its_own_network_namespace_or_joins_one(
        tmp_path: Path) -> None:
    require_fuse()
    if os.geteuid() != 0:
        pytest.skip("--netns needs root")
    host = os.readlink("/proc/self/ns/net")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    try:
        wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/net") != host,
                 what="the holder's network namespace")
        theirs = os.readlink(f"/proc/{holder.pid}/ns/net")
        # A daemon listening in the holder's namespace: only a node that joins it sees it.
        listener = subprocess.Popen(
            ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--", "python3", "-c",
             "import socket, time\n"
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
             "s.bind(b'\\0ocfs2_controld_sock'); s.listen(5); print('up', flush=True)\n"
             "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline() == "up\n"
        try:
            with fakecfs_mount(tmp_path / "mnt") as mnt:
                ns1, seen1 = _run_probe(mnt, "--node", "n1")
                ns2, _ = _run_probe(mnt, "--node", "n2")
                joined, seen3 = _run_probe(mnt, "--node", "n3", "--netns",
                                           f"/proc/{holder.pid}/ns/net")
                plain, _ = _run_probe(mnt)
        finally:
            listener.kill()
            listener.wait()
    finally:
        holder.kill()
        holder.wait()
    # Each node its own, never the host's (one after the other: the number may be reused).
    assert host not in (ns1, ns2)
    assert (joined, seen3, seen1) == (theirs, "daemon", "no daemon")
    assert plain == host  # without --node: the caller's namespace
