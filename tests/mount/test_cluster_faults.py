"""Faults through the project's own pytest fixture: nodes with their own namespaces, hbctl."""

from __future__ import annotations

import json
from collections.abc import Callable

from fakecfs.cluster import Cluster


def test_failing_disk_fences_one_node_and_the_others_carry_on(
        fakecfs_cluster: Callable[..., Cluster]) -> None:
    cluster = fakecfs_cluster(3)
    n0, n1, n2 = cluster.nodes
    n1.fault(f"eio region={cluster.uuid} op=write")
    timeout = n1.wait_for(event="write_timeout")
    assert timeout["message"].startswith("Heartbeat write timeout to device shared.img after")
    fenced = n1.wait_for(event="fenced")
    assert fenced["reason"] == timeout["message"]
    for survivor in (n0, n2):
        survivor.wait_for(live=[0, 2], event="node_down", node=1)
    # hbctl on the fenced node: the region is still configured (its reference is held) but
    # nothing heartbeats; its daemon answers as before.
    status = json.loads(n1.run("hbctl status --json", check=True).stdout)
    (region,) = status["clusters"][0]["regions"]
    assert region["refs"] == 1 and not region["live_nodes"] and region["pid"] is None
    assert n1.run(["ocfs2_hb_ctl", "-I", "-u", cluster.uuid], check=True).stdout.strip() == \
        f"{cluster.uuid}: 1 refs"
    # the survivors still stop cleanly, and the fenced node's reference can be dropped
    n1.hbctl("stop", "-u", cluster.uuid)
    n2.hbctl("stop", "-u", cluster.uuid)
    n0.wait_for(live=[0], event="node_down", node=2)
