"""o2nm: the ``cluster`` configfs subsystem — one cluster, its nodes and o2net settings.

The rules are the kernel's ``fs/ocfs2/cluster/nodemanager.c`` (6.1 = newest here), from the
spec (kernel-o2hb.md §1, §3, §4). Deliberate difference: ``local=1`` does not open the o2net
listening socket (fakecfs has no o2net), so it never fails with EADDRNOTAVAIL/EADDRINUSE.
``local=0`` on the local node also clears ``cl_has_local``, as Debian's 6.1 kernel does
(recorded by the real-kernel lane, tests/catalogue/kernel-results.json): a later ``local=1``
on that node or another one succeeds. Mainline's quirk (``cl_has_local`` left set, so a new
``local=1`` gives EBUSY) is not reproduced.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from .configfs import AttrSpec, ConfigGroup, ConfigItem
from .kparse import sscanf_ipv4, strtoul_strict
from .o2hb import HeartbeatGroup, O2hbGlobals
from .tree import KernelError

MAX_NODES = 255
INVALID_NODE_NUM = 255
MAX_NAME_LEN = 64
U32_MAX = 0xFFFFFFFF
U16_MAX = 0xFFFF
FENCE_METHODS = ("reset", "panic")


@dataclass(frozen=True)
class LocalNodeLost:
    """Effect: the local node stopped being local; running heartbeat must stop."""

    cluster: Cluster


class ClusterSubsystem(ConfigGroup):
    """``/sys/kernel/config/cluster``: mkdir makes the one cluster (ENOSPC for a second)."""

    def __init__(self, hb: O2hbGlobals) -> None:
        super().__init__("cluster", default=True)
        self.hb = hb
        self.cluster: Cluster | None = None

    def make_item(self, name: str) -> ConfigItem:
        if self.cluster is not None:
            raise KernelError(errno.ENOSPC, "only one cluster")
        self.cluster = Cluster(name, self.hb)
        return self.cluster

    def drop_item(self, child: ConfigItem) -> object:
        self.cluster = None
        return None


def _cluster_attr(data: bytes) -> int:
    """o2nm_cluster_attr_write: 0 is EINVAL, >= U32_MAX is ERANGE."""
    value = strtoul_strict(data, 0)
    if value == 0:
        raise KernelError(errno.EINVAL)
    if value >= U32_MAX:
        raise KernelError(errno.ERANGE)
    return value


def _store_idle(item: ConfigItem, data: bytes) -> None:
    cl = _as_cluster(item)
    value = _cluster_attr(data)
    # No o2net peers are ever connected here, so only the ordering rule applies.
    if value <= cl.keepalive_delay_ms:
        raise KernelError(errno.EINVAL, "idle timeout must be larger than keepalive delay")
    cl.idle_timeout_ms = value


def _store_keepalive(item: ConfigItem, data: bytes) -> None:
    cl = _as_cluster(item)
    value = _cluster_attr(data)
    if value >= cl.idle_timeout_ms:
        raise KernelError(errno.EINVAL, "keepalive delay must be smaller than idle timeout")
    cl.keepalive_delay_ms = value


def _store_reconnect(item: ConfigItem, data: bytes) -> None:
    _as_cluster(item).reconnect_delay_ms = _cluster_attr(data)


def _store_fence(item: ConfigItem, data: bytes) -> None:
    # The trailing newline is required; then a case-insensitive exact match.
    if data[-1:] != b"\n":
        raise KernelError(errno.EINVAL, "fence_method needs a trailing newline")
    word = data[:-1].split(b"\0")[0].decode("latin-1").lower()
    for i, method in enumerate(FENCE_METHODS):
        if len(data) == len(method) + 1 and word == method:
            _as_cluster(item).fence_method = i
            return
    raise KernelError(errno.EINVAL)


def _as_cluster(item: ConfigItem) -> Cluster:
    assert isinstance(item, Cluster)
    return item


class Cluster(ConfigItem):
    """``cluster/<name>``: o2net timeouts, fence method, and the node/heartbeat groups."""

    attr_specs = (
        AttrSpec("idle_timeout_ms", lambda c: f"{_as_cluster(c).idle_timeout_ms}\n", _store_idle),
        AttrSpec(
            "keepalive_delay_ms",
            lambda c: f"{_as_cluster(c).keepalive_delay_ms}\n",
            _store_keepalive,
        ),
        AttrSpec(
            "reconnect_delay_ms",
            lambda c: f"{_as_cluster(c).reconnect_delay_ms}\n",
            _store_reconnect,
        ),
        AttrSpec(
            "fence_method",
            lambda c: f"{FENCE_METHODS[_as_cluster(c).fence_method]}\n",
            _store_fence,
        ),
    )

    def __init__(self, name: str, hb: O2hbGlobals) -> None:
        self.idle_timeout_ms: int = 30000
        self.keepalive_delay_ms: int = 2000
        self.reconnect_delay_ms: int = 2000
        self.fence_method: int = 0
        self.nodes: list[Node | None] = [None] * MAX_NODES
        self.has_local = False
        self.local_node = INVALID_NODE_NUM
        self.ip_owner: dict[tuple[int, int, int, int], Node] = {}
        super().__init__(name)
        self.node_group = NodeGroup(self)
        self.heartbeat = HeartbeatGroup(hb, self)
        # Added in this order, so the 6.1 readdir shows "heartbeat node fence_method ...".
        self._attach(self.node_group)
        self._attach(self.heartbeat)
        self.node_group.default = True
        self.heartbeat.default = True

    def this_node(self) -> int:
        """o2nm_this_node(): the local node number, or 255 when there is none."""
        return self.local_node if self.has_local else MAX_NODES

    def configured_nodes(self) -> set[int]:
        """Node numbers whose ``num`` is set (the heartbeat's configured map)."""
        return {i for i, node in enumerate(self.nodes) if node is not None}


class NodeGroup(ConfigGroup):
    """``cluster/<name>/node``: mkdir makes a node (name up to 64 bytes)."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__("node", default=True)
        self.cluster = cluster

    def make_item(self, name: str) -> ConfigItem:
        if len(name.encode()) > MAX_NAME_LEN:
            raise KernelError(errno.ENAMETOOLONG)
        return Node(name, self.cluster)

    def drop_item(self, child: ConfigItem) -> object:
        assert isinstance(child, Node)
        cl = self.cluster
        if child.num_set and cl.nodes[child.num] is child:
            if cl.local_node == child.num:
                cl.has_local = False
                cl.local_node = INVALID_NODE_NUM
            cl.nodes[child.num] = None
        if child.address is not None and cl.ip_owner.get(child.address) is child:
            del cl.ip_owner[child.address]
        return None


def _as_node(item: ConfigItem) -> Node:
    assert isinstance(item, Node)
    return item


def _store_num(item: ConfigItem, data: bytes) -> None:
    node = _as_node(item)
    value = strtoul_strict(data, 0)
    if value >= MAX_NODES:
        raise KernelError(errno.ERANGE)
    if node.address is None or node.port is None:
        raise KernelError(errno.EINVAL, "set ipv4_address and ipv4_port before num")
    cl = node.cluster
    if cl.nodes[value] is not None:  # also when rewriting this node's own number
        raise KernelError(errno.EEXIST)
    if node.num_set:
        raise KernelError(errno.EBUSY)
    cl.nodes[value] = node
    node.num = value
    node.num_set = True


def _store_port(item: ConfigItem, data: bytes) -> None:
    node = _as_node(item)
    value = strtoul_strict(data, 0)
    if value == 0:
        raise KernelError(errno.EINVAL)
    if value >= U16_MAX:
        raise KernelError(errno.ERANGE)
    if node.port is not None:
        raise KernelError(errno.EBUSY)
    node.port = value & U16_MAX


def _store_address(item: ConfigItem, data: bytes) -> None:
    node = _as_node(item)
    octets = sscanf_ipv4(data)
    if octets is None:
        raise KernelError(errno.EINVAL)
    if any(o > 255 for o in octets):
        raise KernelError(errno.ERANGE)
    cl = node.cluster
    # The rb-tree lookup finds this node too: rewriting its own address is EEXIST.
    if octets in cl.ip_owner:
        raise KernelError(errno.EEXIST)
    if node.address is not None:
        raise KernelError(errno.EBUSY)
    cl.ip_owner[octets] = node
    node.address = octets


def _store_local(item: ConfigItem, data: bytes) -> object:
    node = _as_node(item)
    local = bool(strtoul_strict(data, 0))
    if node.address is None or not node.num_set or node.port is None:
        raise KernelError(errno.EINVAL, "set ipv4_address, num and ipv4_port before local")
    cl = node.cluster
    if local and cl.has_local and cl.local_node != node.num:
        raise KernelError(errno.EBUSY, "another node is already local")
    effect: object = None
    if not local and cl.has_local and cl.local_node == node.num:
        # Debian's 6.1 clears cl_has_local too (recorded from the kernel, see above).
        cl.has_local = False
        cl.local_node = INVALID_NODE_NUM
        effect = LocalNodeLost(cl)
    node.local = local
    if local:
        cl.has_local = True
        cl.local_node = node.num
    return effect


def _show_address(item: ConfigItem) -> str:
    addr = _as_node(item).address or (0, 0, 0, 0)
    return ".".join(str(o) for o in addr) + "\n"


class Node(ConfigItem):
    """``node/<name>``: num, ipv4_port, ipv4_address are write-once; local needs all three."""

    attr_specs = (
        AttrSpec("num", lambda n: f"{_as_node(n).num}\n", _store_num),
        AttrSpec("ipv4_port", lambda n: f"{_as_node(n).port or 0}\n", _store_port),
        AttrSpec("ipv4_address", _show_address, _store_address),
        AttrSpec("local", lambda n: f"{int(_as_node(n).local)}\n", _store_local),
    )

    def __init__(self, name: str, cluster: Cluster) -> None:
        self.cluster = cluster
        self.num: int = 0
        self.num_set = False
        self.port: int | None = None
        self.address: tuple[int, int, int, int] | None = None
        self.local: bool = False
        super().__init__(name)
