"""The user-stack cluster end to end: three nodes, each its corosync, controld and fakecfs.

One volume made by ``mkfs.ocfs2 --cluster-stack=pcmk`` (or ``cman``), shared by three
emulated hosts (tests/userstack/fscluster.py). The scenario:

* every node joins: ``hbctl mount`` on nodes 1 and 3, Debian's ``mount.ocfs2`` on node 2;
  each join waits for corosync's CPG and hands the node's kernel a T01 handshake;
* a second service (``ocfs2_hb_ctl -S -d DEV otherservice``: ours on node 1, Debian's on
  node 3) joins the same group;
* two mounts and a bind mount on node 1 end in exactly one kernel ``-K -u UUID``, at the
  last umount: node 1's ``ocfs2`` service leaves and the others' daemons see it go;
* node 2 killed (``kill -9`` of its corosync, controld and fakecfs): the survivors' daemons
  see it leave within a bound made of corosync's token timeout and their kernels get
  ``DOWN`` for it;
* the last leave on the survivors removes the group everywhere (``debugfs.ocfs2 -R
  "controld dump"`` shows it).

Times are measured and printed (``pytest -s``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.compat.ctools import C_HB_CTL, require_ctools
from tests.mount.test_user_stack import mkfs, uuid_of
from tests.userstack.cluster import START_TIMEOUT_S, TOKEN_MS, wait_until
from tests.userstack.fscluster import HBCTL, PY_HB_CTL, Result, fakecfs_cluster

pytestmark = pytest.mark.slow

MOUNT_OCFS2 = "/sbin/mount.ocfs2"
# corosync declares a silent node lost after its token timeout — token plus
# token_coefficient (650 ms) per node beyond two — and consensus (1.2 x that): 3.63 s here.
# The rest (new ring, CPG sync, our dispatch, a FUSE write) gets a few times that on two
# loaded cores.
EFFECTIVE_TOKEN_MS = TOKEN_MS + 650 * (3 - 2)
DEATH_BOUND_S = 3 * 2.2 * EFFECTIVE_TOKEN_MS / 1000


def ok(r: Result) -> None:
    assert r.rc == 0, r


@pytest.mark.parametrize("stack", ["pcmk", "cman"])
def test_three_fakecfs_nodes_on_corosync(tmp_path: Path, stack: str) -> None:
    require_ctools()
    image = mkfs(tmp_path / f"{stack}.img", stack)
    uuid = uuid_of(image)
    dev = str(image)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with fakecfs_cluster(tmp_path, image, stack) as fs:
        n1, n2, n3 = fs
        nodes = [f.node for f in fs]
        timings["start_to_3_daemons_s"] = time.monotonic() - t0
        for f in fs:
            assert f.stack_user()["control_daemons"] == "1"  # handshaken at start-up

        # Join on every node: ours on 1 and 3, Debian's mount.ocfs2 on 2.
        (n2.node.dir / "m").mkdir()
        for f in fs:
            t = time.monotonic()
            if f is n2:
                ok(f.ctool(MOUNT_OCFS2, dev, str(n2.node.dir / "m")))
            else:
                ok(f.run(HBCTL, "mount", dev, "/m/a"))
            timings[f"join_node{f.nodeid}_s"] = time.monotonic() - t
            assert f.stack_user()["control_daemons"] == "1"
            assert uuid in f.stack_user()["live_connections"]
        assert f"Mountgroup {uuid} joined (nodes [1, 2, 3])" in n3.dump()
        for f in (n1, n2):
            wait_until(f"node{f.nodeid} to see node 3 join",
                       lambda f=f: f"Node 3 joins group {uuid}" in f.dump(),
                       START_TIMEOUT_S, nodes)

        # A second service on a joined filesystem (ours on node 1, Debian's on node 3): no
        # new group, it simply joins.
        ok(n1.run(PY_HB_CTL, "-S", "-d", dev, "otherservice"))
        ok(n3.ctool(C_HB_CTL, "-S", "-d", dev, "otherservice"))
        for f in (n1, n3):
            assert (f'Adding service "otherservice" to device "{dev}" uuid "{uuid}"'
                    in f.dump())
            assert f.groups() == [uuid]

        # Two mounts and a bind mount on node 1: one "ocfs2" service, one kernel -K at
        # the last umount (and not before); otherservice keeps the group on node 1.
        ok(n1.run(HBCTL, "mount", dev, "/m/b"))
        ok(n1.run(HBCTL, "mount", "--bind", "/m/a", "/m/c"))
        assert sorted(n1.mounts()) == ["/m/a", "/m/b", "/m/c"]
        for d in ("/m/c", "/m/b"):
            ok(n1.run(HBCTL, "umount", d))
            assert n1.kernel_stops() == []
        ok(n1.run(HBCTL, "umount", "/m/a"))
        assert n1.kernel_stops() == [f"-K -u {uuid}"]
        assert n1.mounts() == []
        assert n1.groups() == [uuid]  # otherservice still holds it
        t = time.monotonic()
        ok(n1.run(PY_HB_CTL, "-K", "-d", dev, "otherservice"))
        assert n1.groups() == []
        for f in (n2, n3):
            wait_until(f"node{f.nodeid} to see node 1 leave",
                       lambda f=f: f"Node 1 leaves group {uuid}" in f.dump(),
                       START_TIMEOUT_S, nodes)
        timings["leave_node1_seen_s"] = time.monotonic() - t
        assert all(f.node_downs() == [] for f in fs)  # a clean leave is no death

        # Node 1 joins again, then node 2 crashes: its corosync, controld and kernel die.
        rejoin = f"Node 1 joins group {uuid}"
        seen = {f.nodeid: f.dump().count(rejoin) for f in (n2, n3)}
        ok(n1.run(HBCTL, "mount", dev, "/m/a"))
        for f in (n2, n3):
            wait_until(f"node{f.nodeid} to see node 1 back",
                       lambda f=f: f.dump().count(rejoin) > seen[f.nodeid],
                       START_TIMEOUT_S, nodes)
        t_kill = time.monotonic()
        n2.node.kill(corosync=True)
        for f in (n1, n3):
            wait_until(f"DOWN for node 2 on node{f.nodeid}",
                       lambda f=f: f"{uuid}:2" in f.node_downs(), DEATH_BOUND_S, nodes)
            timings[f"crash_of_node2_to_DOWN_on_node{f.nodeid}_s"] = time.monotonic() - t_kill
            assert f.node_downs() == [f"{uuid}:2"]
            assert "node down 2" in f.dump()

        # The survivors' last leaves (node 3's otherservice, then the kernel's -K at each
        # last umount) end the group everywhere.
        ok(n3.ctool(C_HB_CTL, "-K", "-d", dev, "otherservice"))
        assert n3.groups() == [uuid]
        for f in (n3, n1):
            ok(f.run(HBCTL, "umount", "/m/a"))
            assert f.kernel_stops()[-1] == f"-K -u {uuid}"
            assert f.groups() == []
            assert f.stack_user()["live_connections"] == "-"
        dump = n1.ctool("debugfs.ocfs2", "-R", "controld dump")
        ok(dump)
        # Node 1, the last member, saw node 3 go and then left itself.
        assert dump.out.index(f"Node 3 leaves group {uuid}") < dump.out.rindex(
            f"Left group {uuid}")
        assert f"Left group {uuid}" in n3.dump()
    timings["total_s"] = time.monotonic() - t0
    print(f"\nfakecfs cluster lane ({stack}) timings: "
          + ", ".join(f"{k}={v:.3f}" for k, v in timings.items()))

