"""pytest plugin (entry point ``pytest11: fakecfs``): emulated OCFS2 clusters as a fixture.

    def test_failover(fakecfs_cluster):
        cluster = fakecfs_cluster(3)              # 3 nodes on a fresh image, all see all
        n0, n1, n2 = cluster.nodes
        n2.kill()                                 # kill -9 of its emulated kernel
        n0.wait_for(live=[0, 1], event="node_down", node=2)
        n1.freeze()                               # or n1.fault(f"eio region={cluster.uuid}")
        n0.run("hbctl status --json")             # any command, as node 0

``fakecfs_cluster(nodes=3, interval_ms=100, dead_threshold=11, name="fakecfs")`` may be
called more than once per test. Each node has ``run(cmd)``, ``kill()``, ``stop()``,
``freeze()``/``thaw()``, ``fault(command)``, ``faults`` (fakecfs.control.Faults),
``events`` (fakecfs.control.Events), ``livenodes()`` and ``wait_for(live=..., event=...)``
(``await node.wait_for_async(...)`` in pytest-trio tests). At teardown every node is
stopped and its namespaces removed, whether the test passed, failed or killed nodes. The
fixture skips (with the reason) where FUSE, root or mkfs.ocfs2 are missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .cluster import Cluster


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "fakecfs_cluster needs root (an IPC and UTS namespace per node)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is missing or not accessible"
    for tool in ("mkfs.ocfs2", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture
def fakecfs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        Callable[..., Cluster]]:
    """A factory of emulated clusters: ``fakecfs_cluster(nodes=3, **options)``."""
    made: list[Cluster] = []

    def make(nodes: int = 3, *, interval_ms: int = 100, dead_threshold: int = 11,
             name: str = "fakecfs", **up: Any) -> Cluster:
        why = _unavailable()
        if why:
            pytest.skip(why)
        cluster = Cluster(tmp_path_factory.mktemp("fakecfs-cluster"), name, interval_ms,
                          dead_threshold)
        made.append(cluster)
        cluster.up(nodes, **up)
        cluster.wait_for(timeout=max(60.0, 3 * dead_threshold * interval_ms / 1000))
        return cluster

    yield make
    for cluster in made:
        cluster.down()
