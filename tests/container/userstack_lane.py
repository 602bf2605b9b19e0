"""The Docker lane's user-stack part: three pcmk containers, each its corosync, controld, fakecfs.

The node image runs with ``OCFS2_CLUSTER_STACK=pcmk`` (container/entrypoint.py: fakecfs with
``--cluster-stack pcmk``, then corosync, then ``ocfs2_controld.pcmk --membership
corosync``) and ``--network none``; ``container/wire-userstack.sh`` links the three to a
bridge in a network namespace of the lane's own (never the host's network), which is what
each entrypoint waits for before it starts corosync. One image made here with
``mkfs.ocfs2 --cluster-stack=pcmk --cluster-name=uc`` is shared through the bind-mounted
folder. The checks: all three daemons in their group; every node joins (``hbctl mount`` on
nodes 1 and 3, Debian's ``mount.ocfs2`` on node 2); a second service (Debian's
``ocfs2_hb_ctl -S -d DEV otherservice``) joins the same group; ``docker kill`` of node 2 ->
the survivors' kernels get ``DOWN`` for it within a bound made of corosync's token timeout;
the survivors' last umounts remove the group everywhere. Everything started is removed,
whatever happened.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.container.dockerd import Engine

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "container"
PREFIX = "fakecfs-lane-us"
NODES = ("node1", "node2", "node3")
CAPS = ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN", "--cap-add", "IPC_OWNER"]
IMG = "/shared/pcmk.img"
# container/corosync.conf: token 1000 ms; with three nodes corosync adds token_coefficient
# (650 ms) once, and waits 1.2 x that more (consensus) before it forms a new ring.
EFFECTIVE_TOKEN_S = (1000 + 650) / 1000
DEATH_S = EFFECTIVE_TOKEN_S * 2.2
DEATH_BOUND_S = 3 * DEATH_S + 5  # a loaded machine, and `docker exec` to look


class UserStackFailure(AssertionError):
    pass


def make_image(shared: Path) -> str:
    """The shared pcmk volume; its UUID."""
    path = shared / "pcmk.img"
    subprocess.run(["truncate", "-s", "128M", str(path)], check=True)
    subprocess.run(["mkfs.ocfs2", "-q", "-F", "-b", "4096", "-C", "4096", "-N", "4", "-J",
                    "size=4M", "--cluster-stack=pcmk", "--cluster-name=uc", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    from hbctl.devices import read_volume

    return read_volume(str(path)).uuid


class UserStackCluster:
    def __init__(self, eng: Engine, shared: Path, image: str) -> None:
        self.eng = eng
        self.shared = shared
        self.image = image
        self.netns = f"{PREFIX}-{os.getpid()}"
        self.names = [f"{PREFIX}-{n}" for n in NODES]

    def wire(self, *args: str) -> None:
        subprocess.run([str(CONTAINER / "wire-userstack.sh"), "--netns", self.netns, *args],
                       env=dict(self.eng.env, DOCKER=self.eng.docker), check=True,
                       capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        for node, name in zip(NODES, self.names, strict=True):
            self.eng.run("run", "-d", "--name", name, "--hostname", node, "--network", "none",
                         *CAPS, "-v", f"{CONTAINER / 'corosync.conf'}:/etc/corosync/"
                         "corosync.conf:ro", "-v", f"{self.shared}:/shared",
                         "-e", "OCFS2_CLUSTER_STACK=pcmk", "-e", "FAKECFS_HB_INTERVAL_MS=500",
                         self.image)
        self.wire(*self.names)

    def sh(self, i: int, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.eng.run("exec", self.names[i], "sh", "-c", script, check=check,
                            timeout=120)

    def ctool(self, i: int, *argv: str) -> subprocess.CompletedProcess[str]:
        """A Debian C tool in node i, with the surfaces at the real paths."""
        return self.eng.run("exec", self.names[i], "fakecfs", "run", "--device", IMG,
                            "/run/fakecfs", "--", *argv, timeout=120)

    def dump(self, i: int) -> str:
        return self.ctool(i, "debugfs.ocfs2", "-R", "controld dump").stdout

    def stack_user(self, i: int) -> dict[str, str]:
        text = self.sh(i, "cat /run/fakecfs/fakecfs/stack_user").stdout
        return dict(line.split(" ", 1) for line in text.splitlines())

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n" + self.eng.run("logs", n, check=False).stdout
                         + self.eng.run("logs", n, check=False).stderr for n in self.names)

    def remove(self) -> None:
        self.eng.run("rm", "-f", *self.names, check=False)
        self.wire("--remove")


def wait(what: str, cond: Callable[..., object], timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        try:
            if cond():
                return time.monotonic() - t0
        except (RuntimeError, KeyError):  # a node not up yet: docker exec fails
            pass
        if time.monotonic() - t0 > timeout:
            raise UserStackFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def check(cond: object, what: str) -> None:
    if not cond:
        raise UserStackFailure(what)


def scenario(c: UserStackCluster, uuid: str) -> dict[str, float]:
    t: dict[str, float] = {}
    t0 = time.monotonic()
    c.start()
    for i in range(3):
        wait(f"{NODES[i]} ready", lambda i=i: c.sh(
            i, "test -e /run/fakecfs-node/ready", check=False).returncode == 0, 180)
    for i in range(3):
        wait(f"{NODES[i]}'s daemon to see three", lambda i=i: 'group "ocfs2:controld" '
             "confchg: members 3," in c.dump(i), 120)
    t["start_to_3_daemons_s"] = time.monotonic() - t0

    for i in range(3):
        mark = time.monotonic()
        if i == 1:
            c.sh(i, "mkdir -p /mnt/a")
            c.ctool(i, "mount.ocfs2", IMG, "/mnt/a")
        else:
            c.eng.run("exec", c.names[i], "hbctl", "mount", IMG, "/m/a", timeout=120)
        t[f"join_{NODES[i]}_s"] = time.monotonic() - mark
        su = c.stack_user(i)
        check(su["control_daemons"] == "1" and uuid in su["live_connections"],
              f"{NODES[i]}'s kernel after the join: {su}")
    check(f"Mountgroup {uuid} joined (nodes [1, 2, 3])" in c.dump(2),
          "node3 joined the group of three")
    c.ctool(0, "ocfs2_hb_ctl", "-S", "-d", IMG, "otherservice")
    check(f'Adding service "otherservice" to device "{IMG}" uuid "{uuid}"' in c.dump(0),
          "the second service joined")
    c.ctool(0, "ocfs2_hb_ctl", "-K", "-d", IMG, "otherservice")

    kill = time.monotonic()
    c.eng.run("kill", c.names[1])
    for i in (0, 2):
        wait(f"DOWN for node 2 in {NODES[i]}'s kernel",
             lambda i=i: f"{uuid}:2" in c.stack_user(i)["node_downs"], DEATH_BOUND_S)
        t[f"kill_node2_to_DOWN_{NODES[i]}_s"] = time.monotonic() - kill
        check("node down 2" in c.dump(i), f"{NODES[i]}'s daemon saw node 2 down")

    for i in (2, 0):
        c.eng.run("exec", c.names[i], "hbctl", "umount", "/m/a", timeout=120)
        wait(f"{NODES[i]} to leave", lambda i=i: f"Left group {uuid}" in c.dump(i), 60)
        check(c.stack_user(i)["live_connections"] == "-", f"{NODES[i]}'s kernel let go")
    t["total_s"] = time.monotonic() - t0
    return t


def run(eng: Engine, shared: Path, image: str,
        log: Callable[[str], None]) -> dict[str, float]:
    """The user-stack cluster of three containers; its timings."""
    uuid = make_image(shared)
    c = UserStackCluster(eng, shared, image)
    c.remove()  # leftovers of a killed earlier run
    try:
        return scenario(c, uuid)
    except BaseException:
        log("user-stack node logs:\n" + c.logs())
        raise
    finally:
        c.remove()
