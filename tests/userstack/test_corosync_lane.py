"""Three ocfs2_controld daemons on three real corosync nodes (network namespaces, a bridge).

Membership is real CPG: a join is answered only once corosync confirms it, a clean leave
is seen by the others as a leave, and a peer whose daemon dies (``kill -9`` of controld:
PROCDOWN) or whose whole node dies (corosync too: NODEDOWN) is reported by the survivors'
corosync, whose daemons then write ``DOWN`` to their kernel control device. Times are
measured and printed (``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from hbctl.controld import proto
from tests.userstack.cluster import (
    CLUSTER,
    CONSENSUS_MS,
    START_TIMEOUT_S,
    TOKEN_MS,
    Node,
    corosync_cluster,
    members_line,
    wait_until,
)

pytestmark = pytest.mark.slow

U = "1431E6308F3E4C30B5A4906741DD1C4D"

# corosync declares a silent node lost after the token timeout plus consensus; on two
# cores shared with other work the rest (a new ring, CPG sync, our dispatch) can take a few
# times that, so the bound is a multiple of what corosync needs, not a fixed wall time.
DEATH_BOUND_S = 5 * (TOKEN_MS + CONSENSUS_MS) / 1000


def join(node: Node, service: str, device: str) -> tuple[tuple[int, str], float]:
    c = node.connect()
    t0 = time.monotonic()
    first = c.call(proto.mount(U, CLUSTER, device, service))
    took = time.monotonic() - t0
    assert c.call(proto.mresult(U, 0, service)) == (0, "OK")
    c.close()
    return first, took


def groups(node: Node) -> list[str]:
    return node.connect().listing(proto.listfs(CLUSTER))


def test_three_corosync_nodes(tmp_path: Path) -> None:
    image = tmp_path / "us.img"
    image.write_bytes(b"\0" * 4096)
    dev = str(image)
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    with corosync_cluster(tmp_path) as nodes:
        n1, n2, n3 = nodes
        # Every daemon is up once its CPG daemon group shows all three.
        for node in nodes:
            wait_until(f"node{node.nodeid} to see 3 daemons",
                       lambda node=node: members_line(3) in node.dump(),
                       START_TIMEOUT_S, nodes)
        timings["start_to_3_daemons_s"] = time.monotonic() - t_start
        # Cluster name and node ids come from corosync (cmap, cpg_local_get).
        assert n2.connect().listing(proto.listclusters()) == [CLUSTER]
        assert n2.connect().call(proto.mount(U, "pacemaker", dev, "x")) == (
            22, "Invalid cluster name")
        assert "SETN" not in n1.control.read_text()  # no join yet, no kernel handshake

        # Join on three nodes, one after the other: each MOUNT waits for CPG.
        for node in nodes:
            status, took = join(node, "ocfs2", dev)
            assert status == (0, "OK")
            timings[f"join_node{node.nodeid}_s"] = took
            assert node.kernel_writes() == (
                f"T01\nSETN {node.nodeid:08X}\nSETV 01 00\n".encode())
        assert f"Mountgroup {U} joined (nodes [1, 2, 3])" in n3.dump()
        # A second service on a joined filesystem: go ahead at once, no new group.
        assert join(n1, "fsck.ocfs2", dev)[0] == (114, "Already mounted, go ahead")
        assert n1.connect().call(proto.unmount(U, "fsck.ocfs2")) == (0, "OK")

        # The last leave on every node removes the group everywhere; clean leaves are no
        # deaths: nobody gets DOWN.
        for node in nodes:
            assert node.connect().call(proto.unmount(U, "ocfs2")) == (0, "OK")
            assert groups(node) == []
        assert "Node 1 leaves group" in n3.dump()
        assert all(b"DOWN" not in node.kernel_writes() for node in nodes)

        # Again, then node 3's daemon dies on a live node (CPG: PROCDOWN), then node 2
        # crashes: corosync and controld killed with SIGKILL (NODEDOWN).
        for node in nodes:
            join(node, "ocfs2", dev)
        for node in (n1, n2):
            wait_until(f"node{node.nodeid} to see node 3 in the group",
                       lambda node=node: "Node 3 joins group" in node.dump(),
                       START_TIMEOUT_S, nodes)
        for victim, corosync_too, survivors in ((n3, False, (n1, n2)), (n2, True, (n1,))):
            t_kill = time.monotonic()
            victim.kill(corosync=corosync_too)
            down = f"DOWN {U} {victim.nodeid:08X}\n".encode()
            what = "crash" if corosync_too else "daemon_death"
            for node in survivors:
                wait_until(f"DOWN {victim.nodeid} on node{node.nodeid}",
                           lambda node=node, down=down: down in node.kernel_writes(),
                           DEATH_BOUND_S, nodes)
                timings[f"{what}_of_node{victim.nodeid}_to_DOWN_on_node{node.nodeid}_s"] = (
                    time.monotonic() - t_kill)
                assert node.kernel_writes().count(down) == 1
        assert "kill node 3 - ocfs2_controld PROCDOWN" in n1.dump()
        assert "node down 2" in n1.dump()
        # The survivor keeps serving and its last leave ends the group.
        assert n1.connect().call(proto.unmount(U, "ocfs2")) == (0, "OK")
        assert groups(n1) == []
        # A daemon whose corosync dies under it exits (status 1), as upstream's does.
        assert n1.corosync is not None and n1.controld is not None
        os.killpg(n1.corosync.pid, signal.SIGKILL)
        assert n1.controld.wait(timeout=START_TIMEOUT_S) == 1
        assert "cluster connection lost" in n1.log()
    timings["total_s"] = time.monotonic() - t_start
    print("\ncorosync lane timings: " + ", ".join(f"{k}={v:.3f}" for k, v in timings.items()))
