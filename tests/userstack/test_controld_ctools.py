"""Debian's C clients (libo2cb 1.8.7) against our ocfs2_controld: the daemon side of §4.

A private mount + network namespace gives the C tools what ``o2cb_init`` wants for a
``cman`` volume (``/sys/fs/ocfs2/cluster_stack``, ``/sys/fs/o2cb/interface_revision``, a
``/sys/kernel/config`` whose statfs the project's preload shim answers as configfs) and a
private ``@ocfs2_controld_sock``; our daemon runs there with the single-node membership.
``cman`` because libo2cb probes no DLM for it (spec §7.1). The full client matrix, with
fakecfs as the kernel, is hbctl's client-side suite; this checks the daemon answers the
real client exactly as upstream's did (spec §4 rows b1-b6, d1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbctl.controld import proto
from tests.userstack import ctl
from tests.userstack.daemon import BIN, fake_sysroot
from tests.userstack.netns import NetNs, require_root, wait_unshared

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "fakecfs/preload/fakecfs_preload.so"


class Node(NetNs):
    def cmd(self, *argv: str) -> list[str]:
        return ["nsenter", "--mount", "--net", "-t", str(self.holder.pid), "--", *argv]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    require_root()
    for tool in ("ocfs2_hb_ctl", "mkfs.ocfs2", "debugfs.ocfs2"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (Debian's ocfs2-tools) is not installed")
    if not SHIM.exists():
        pytest.skip(f"{SHIM} is not built (make setup builds it)")
    holder = subprocess.Popen(["unshare", "--mount", "--net", "--propagation", "private",
                               "sleep", "infinity"])
    try:
        wait_unshared(holder.pid)
        n = Node(holder)
        surf = tmp_path / "surfaces"
        (surf / "ocfs2").mkdir(parents=True)
        (surf / "o2cb").mkdir()
        (surf / "ocfs2/cluster_stack").write_text("cman\n")
        (surf / "o2cb/interface_revision").write_text("5\n")
        n.run("sh", "-c", f"""set -e
            ip link set lo up
            mount -t tmpfs tmpfs /sys/kernel && mkdir /sys/kernel/config
            mount -t tmpfs tmpfs /sys/fs && mkdir /sys/fs/ocfs2 /sys/fs/o2cb
            mount --bind {surf}/ocfs2 /sys/fs/ocfs2
            mount --bind {surf}/o2cb /sys/fs/o2cb""")
        yield n
    finally:
        holder.kill()
        holder.wait()


def c_tool(node: Node, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "LD_PRELOAD": str(SHIM)}
    return subprocess.run(node.cmd(*argv), capture_output=True, text=True, timeout=60, env=env)


def test_debian_ocfs2_hb_ctl_and_debugfs_against_our_daemon(node: Node,
                                                            tmp_path: Path) -> None:
    image = tmp_path / "cman.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ocfs2", "-q", "-F", "-b", "4096", "-C", "4096", "-N", "2",
                    "-J", "size=4M", "--cluster-stack=cman", "--cluster-name=uc", str(image)],
                   check=True, capture_output=True, timeout=120)
    sysroot = fake_sysroot(tmp_path / "sysroot", "cman")
    log = tmp_path / "controld.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen(
            node.cmd(str(BIN / "ocfs2_controld.cman"), "-D", "--membership", "local",
                     "--cluster-name", "uc", "--sysroot", str(sysroot),
                     "--control-device", "none", "--pid-file", "none"),
            stdout=out, stderr=subprocess.STDOUT)
    try:
        ctl.connect(node.socket()).close()  # up
        dev = str(image)
        r = c_tool(node, "ocfs2_hb_ctl", "-S", "-d", dev, "svc")
        assert (r.returncode, r.stderr) == (0, "")  # b1
        r = c_tool(node, "ocfs2_hb_ctl", "-S", "-d", dev, "svc")
        assert r.returncode == 1  # b2
        assert r.stderr == ("ocfs2_hb_ctl: Configuration error discovered while starting "
                            "heartbeat\n")
        assert c_tool(node, "ocfs2_hb_ctl", "-S", "-d", dev, "svc2").returncode == 0  # b3
        uuid = ctl.connect(node.socket()).listing(proto.listfs("uc"))[0]
        r = c_tool(node, "debugfs.ocfs2", "-R", "controld dump")  # d1
        assert r.returncode == 0
        assert f'start_mount: uuid "{uuid}", device "{dev}", service "svc2"' in r.stdout
        assert c_tool(node, "ocfs2_hb_ctl", "-K", "-d", dev, "svc").returncode == 0  # b4
        assert c_tool(node, "ocfs2_hb_ctl", "-K", "-d", dev, "svc2").returncode == 0  # b5
        assert ctl.connect(node.socket()).listing(proto.listfs("uc")) == []
        r = c_tool(node, "ocfs2_hb_ctl", "-K", "-d", dev, "svc")  # b6
        assert r.returncode == 1
        assert r.stderr == ("ocfs2_hb_ctl: Configuration error discovered while stopping "
                            "heartbeat\n")
        text = log.read_text()
        assert f"mount: Filesystem {uuid} is already mounted on svc" in text
        assert f"Left group {uuid}" in text
    finally:
        daemon.kill()
        daemon.wait()
