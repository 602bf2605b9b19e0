"""A three-node user-stack cluster on one host whose kernels are fakecfs.

Built on :func:`tests.userstack.cluster.corosync_nodes` (network namespaces joined by a
bridge in a namespace of its own, each node its Debian corosync), each node is a whole
emulated host: network, mount, IPC and UTS namespaces of its own, in which run

* ``fakecfs mount --cluster-stack pcmk|cman SYSROOT`` in the foreground (its FUSE mount lives in
  the node's mount namespace only, so a node killed with ``kill -9`` leaves nothing on the
  host: the mount goes with the namespace);
* ``ocfs2_controld.pcmk|cman -D --membership corosync --sysroot SYSROOT``: the control device is
  fakecfs's emulated ``dev/misc/ocfs2_control``, so ``DOWN`` reaches the emulated kernel,
  which lists it in ``SYSROOT/fakecfs/stack_user`` (``node_downs``);
* our tools (``HBCTL_SYSROOT``) and Debian's C tools (``fakecfs run --device IMAGE``).

The kernel's put_super helper is our ``ocfs2_hb_ctl`` behind a wrapper that appends its
argv to ``helper.log``: the lane counts the kernel's ``-K -u UUID`` calls.
The test process reads a node's sysroot through ``/proc/HOLDER/root``, i.e. in that node's
mount namespace.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hbctl.controld import proto
from tests.fakecfs_fixtures import FAKECFS, VENV_BIN, require_fuse
from tests.usernode import HBCTL, PY_HB_CTL, Result
from tests.userstack.cluster import (
    CLUSTER,
    START_TIMEOUT_S,
    Node,
    corosync_nodes,
    members_line,
    spawn,
    wait_until,
)

__all__ = ["HBCTL", "PY_HB_CTL", "FsNode", "Result", "fakecfs_cluster"]


@dataclass
class FsNode:
    """One node of the cluster: corosync, controld and fakecfs (``node.kernel``)."""

    node: Node
    image: Path
    stack: str

    @property
    def nodeid(self) -> int:
        return self.node.nodeid

    @property
    def sysroot(self) -> Path:
        return self.node.dir / "sysroot"

    @property
    def helper_log(self) -> Path:
        return self.node.dir / "helper.log"

    def view(self, rel: str) -> Path:
        """``SYSROOT/rel`` as this node's mount namespace sees it."""
        return Path(f"/proc/{self.node.ns.holder.pid}/root{self.sysroot}/{rel}")

    def stack_user(self) -> dict[str, str]:
        text = self.view("fakecfs/stack_user").read_text()
        return dict(line.split(" ", 1) for line in text.splitlines())

    def node_downs(self) -> list[str]:
        downs = self.stack_user()["node_downs"]
        return [] if downs == "-" else downs.split()

    def mounts(self) -> list[str]:
        return [line.split()[1] for line in
                self.view("fakecfs/mounts").read_text().splitlines()]

    def kernel_stops(self) -> list[str]:
        """The argv of every put_super helper the kernel ran on this node."""
        if not self.helper_log.exists():
            return []
        return self.helper_log.read_text().splitlines()

    def run(self, *argv: str) -> Result:
        """One of our tools (or any command) in the node, against its sysroot."""
        env = {**os.environ, "HBCTL_SYSROOT": str(self.sysroot),
               "HBCTL_DEVICES": str(self.image)}
        p = subprocess.run(self.node.ns.cmd(*argv), capture_output=True, text=True,
                           env=env, timeout=120, check=False)
        return Result(p.returncode, p.stdout, p.stderr)

    def ctool(self, *argv: str) -> Result:
        """A Debian C tool in the node, with the surfaces at the real paths."""
        return self.run(FAKECFS, "run", "--device", str(self.image), str(self.sysroot),
                        "--", *argv)

    def dump(self) -> str:
        return self.node.dump()

    def groups(self) -> list[str]:
        """The filesystems (mountgroups) this node's daemon has (LISTFS)."""
        return self.node.connect().listing(proto.listfs(CLUSTER))


def _helper_wrapper(n: FsNode) -> Path:
    """put_super's helper: the kernel gives it a bare environment, so the wrapper says
    where the node's sysroot and device are, and logs the call."""
    wrapper = n.node.dir / "hb-ctl-helper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> {n.helper_log}\n"
        f"export HBCTL_SYSROOT={n.sysroot} HBCTL_DEVICES={n.image}\n"
        f"exec {PY_HB_CTL} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


@contextmanager
def fakecfs_cluster(tmp: Path, image: Path, stack: str, n: int = 3,
                    hb_interval_ms: int = 100) -> Iterator[list[FsNode]]:
    """``n`` corosync nodes, each with its fakecfs (``stack``: pcmk or cman) and its
    ocfs2_controld.STACK on that kernel; all the daemons are in their CPG daemon group when
    this yields."""
    require_fuse()
    with corosync_nodes(tmp, n, node_namespaces=True) as nodes:
        fs = [FsNode(node, image, stack) for node in nodes]
        for f in fs:
            f.sysroot.mkdir()
            f.node.kernel = spawn(f.node.ns.cmd(
                FAKECFS, "mount", "--hb-interval-ms", str(hb_interval_ms),
                "--cluster-stack", stack, "--hb-ctl-path", str(_helper_wrapper(f)),
                str(f.sysroot)), f.node.dir / "fakecfs.log")
        for f in fs:
            wait_until(f"fakecfs on node{f.nodeid}",
                       lambda f=f: f.view("dev/misc/ocfs2_control").exists(),
                       START_TIMEOUT_S, nodes)
            f.node.controld = spawn(f.node.ns.cmd(
                str(VENV_BIN / f"ocfs2_controld.{stack}"), "-D", "--membership", "corosync",
                "--sysroot", str(f.sysroot), "--pid-file", "none"),
                f.node.dir / "controld.log")
        for f in fs:
            wait_until(f"node{f.nodeid} to see {n} daemons",
                       lambda f=f: members_line(n) in f.dump(), START_TIMEOUT_S, nodes)
        yield fs
