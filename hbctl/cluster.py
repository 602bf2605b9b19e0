"""cluster.conf, and registering a cluster in configfs as ``o2cb register-cluster`` does.

Two parts:

* :func:`parse` (a core): the text of ``/etc/ocfs2/cluster.conf`` to a
  :class:`Config`. Stanzas (``cluster:``, ``node:``, ``heartbeat:``) start in
  column 0 and end with ``:``; their parameters follow on indented
  ``key = value`` lines (tabs or spaces); blank lines separate stanzas and
  ``#`` starts a comment. Errors name the line: ``cluster.conf:12: ...``.
* :func:`register` / :func:`unregister` / :func:`show` (the shell): the
  configfs writes of ``o2cb register-cluster`` in its order — mkdir the
  cluster, ``heartbeat/mode``, drop nodes that differ from the file, then per
  node mkdir + ``ipv4_port``, ``ipv4_address``, ``num``, ``local`` (values
  without newline) — plus the init script's timeouts (written with a newline,
  as ``echo`` does).
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from hbctl import semaphores
from hbctl.errors import Code, O2cbError, from_mkdir, from_rmdir
from hbctl.regions import list_dir, list_regions
from hbctl.stack import OS_CONFIGFS, ConfigfsIO, configfs_path, read_attr, write_attr
from hbctl.sysroot import Sysroot

DEFAULT_PATH = "/etc/ocfs2/cluster.conf"
MAX_NODES = 255
MAX_CLUSTER_NAME = 16
HEARTBEAT_MODES = ("local", "global")

# -- the parser (core) ----------------------------------------------------------------


class ConfigError(ValueError):
    """A cluster.conf that cannot be used; str() is ``file:line: what``."""

    def __init__(self, filename: str, line: int, message: str) -> None:
        super().__init__(f"{filename}:{line}: {message}")
        self.filename = filename
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Node:
    name: str
    number: int
    ip_address: str
    ip_port: int
    cluster: str
    line: int = 0


@dataclass(frozen=True)
class Cluster:
    name: str
    node_count: int | None = None
    heartbeat_mode: str = "local"
    line: int = 0
    nodes: tuple[Node, ...] = ()
    regions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Heartbeat:
    region: str
    cluster: str
    line: int = 0


@dataclass(frozen=True)
class Config:
    clusters: tuple[Cluster, ...] = ()
    heartbeats: tuple[Heartbeat, ...] = ()

    def cluster(self, name: str) -> Cluster | None:
        return next((c for c in self.clusters if c.name == name), None)


@dataclass
class _Stanza:
    kind: str
    line: int
    params: dict[str, tuple[str, int]] = field(default_factory=dict)


_STANZA_KINDS = ("cluster", "node", "heartbeat")
_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_NAME = re.compile(r"^[A-Za-z0-9]+$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_UUID = re.compile(r"^[0-9A-F]{32}$")


def _split(text: str, filename: str) -> list[_Stanza]:
    stanzas: list[_Stanza] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            head = line.strip()
            if not head.endswith(":") or head[:-1].strip() not in _STANZA_KINDS:
                raise ConfigError(
                    filename,
                    lineno,
                    f"expected a stanza header 'cluster:', 'node:' or 'heartbeat:', got {head!r}",
                )
            stanzas.append(_Stanza(head[:-1].strip(), lineno))
            continue
        if not stanzas:
            raise ConfigError(filename, lineno, "parameter outside of any stanza")
        key, eq, value = line.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise ConfigError(filename, lineno, f"expected 'key = value', got {line.strip()!r}")
        if not value:
            raise ConfigError(filename, lineno, f"{key}: missing value")
        st = stanzas[-1]
        if key in st.params:
            raise ConfigError(filename, lineno, f"{key}: given twice in this {st.kind} stanza")
        st.params[key] = (value, lineno)
    return stanzas


def _int(st: _Stanza, key: str, filename: str, lo: int, hi: int) -> int:
    value, lineno = st.params[key]
    if not value.isdigit():
        raise ConfigError(filename, lineno, f"{key}: not a number: {value!r}")
    n = int(value)
    if not lo <= n <= hi:
        raise ConfigError(filename, lineno, f"{key}: {n} is out of range {lo}..{hi}")
    return n


def _require(st: _Stanza, keys: tuple[str, ...], filename: str) -> None:
    missing = [k for k in keys if k not in st.params]
    if missing:
        raise ConfigError(filename, st.line, f"{st.kind} stanza lacks {', '.join(missing)}")


def parse(text: str, filename: str = "cluster.conf") -> Config:
    """Parse cluster.conf text; ConfigError names the offending line."""
    clusters: dict[str, Cluster] = {}
    nodes: list[Node] = []
    heartbeats: list[Heartbeat] = []
    for st in _split(text, filename):
        p = st.params
        if st.kind == "cluster":
            _require(st, ("name",), filename)
            name, lineno = p["name"]
            if not _NAME.match(name) or len(name) > MAX_CLUSTER_NAME:
                raise ConfigError(
                    filename, lineno, f"name: cluster names are 1-16 letters or digits: {name!r}"
                )
            if name in clusters:
                raise ConfigError(filename, lineno, f"cluster {name!r} defined twice")
            mode = p.get("heartbeat_mode", ("local", st.line))
            if mode[0] not in HEARTBEAT_MODES:
                raise ConfigError(
                    filename, mode[1], f"heartbeat_mode: must be local or global, not {mode[0]!r}"
                )
            count = _int(st, "node_count", filename, 0, MAX_NODES) if "node_count" in p else None
            clusters[name] = Cluster(name, count, mode[0], st.line)
        elif st.kind == "node":
            _require(st, ("name", "number", "ip_address", "ip_port", "cluster"), filename)
            name, lineno = p["name"]
            if not _NODE_NAME.match(name) or len(name) > 64:
                raise ConfigError(filename, lineno, f"name: bad node name {name!r}")
            addr, alineno = p["ip_address"]
            m = _IPV4.match(addr)
            if not m or any(int(o) > 255 for o in m.groups()):
                raise ConfigError(filename, alineno, f"ip_address: not an IPv4 address: {addr!r}")
            nodes.append(
                Node(
                    name,
                    _int(st, "number", filename, 0, MAX_NODES - 1),
                    addr,
                    _int(st, "ip_port", filename, 1, 65534),
                    p["cluster"][0],
                    st.line,
                )
            )
        else:
            _require(st, ("region", "cluster"), filename)
            region, lineno = p["region"]
            if not _UUID.match(region):
                raise ConfigError(
                    filename, lineno, f"region: expected 32 upper-case hex digits, got {region!r}"
                )
            heartbeats.append(Heartbeat(region, p["cluster"][0], st.line))

    by_cluster: dict[str, list[Node]] = {name: [] for name in clusters}
    for n in nodes:
        if n.cluster not in by_cluster:
            raise ConfigError(filename, n.line, f"node {n.name!r}: unknown cluster {n.cluster!r}")
        for other in by_cluster[n.cluster]:
            for what, a, b in (
                ("name", n.name, other.name),
                ("number", n.number, other.number),
                ("ip_address", n.ip_address, other.ip_address),
            ):
                if a == b:
                    raise ConfigError(
                        filename,
                        n.line,
                        f"node {n.name!r}: {what} {a} already used by node {other.name!r}"
                        f" (line {other.line})",
                    )
        by_cluster[n.cluster].append(n)
    for h in heartbeats:
        if h.cluster not in clusters:
            raise ConfigError(filename, h.line, f"heartbeat: unknown cluster {h.cluster!r}")
    out = []
    for name, c in clusters.items():
        regions = tuple(h.region for h in heartbeats if h.cluster == name)
        out.append(
            Cluster(
                c.name, c.node_count, c.heartbeat_mode, c.line, tuple(by_cluster[name]), regions
            )
        )
    return Config(tuple(out), tuple(heartbeats))


def load(path: str = DEFAULT_PATH) -> Config:
    with open(path, encoding="utf-8") as f:
        return parse(f.read(), path)


def is_local(node_name: str, hostname: str) -> bool:
    """o2cb's rule: the node is us if its name is the hostname or its first label(s).

    Case-insensitive prefix match of the whole node name, followed in the
    hostname by its end or a dot (node ``node1`` is local on ``NODE1.example``).
    """
    n = len(node_name)
    return hostname[:n].lower() == node_name.lower() and hostname[n : n + 1] in ("", ".")


# -- registration (shell) ----------------------------------------------------------------


def _cluster_dir(sysroot: Sysroot, name: str) -> str:
    return f"{configfs_path(sysroot)}/cluster/{name}"


def _same_node(fs: ConfigfsIO, path: str, node: Node) -> bool:
    """Whether a registered node dir has the file's address, port and number."""
    try:
        addr = read_attr(fs, f"{path}/ipv4_address", 64).strip()
        port = read_attr(fs, f"{path}/ipv4_port").strip()
        num = read_attr(fs, f"{path}/num").strip()
    except O2cbError:
        return False
    return addr == node.ip_address and port == str(node.ip_port) and num == str(node.number)


def add_node(fs: ConfigfsIO, cluster_path: str, node: Node, local: bool) -> bool:
    """``o2cb_add_node``: mkdir + port, address, num, local. False if it exists."""
    path = f"{cluster_path}/node/{node.name}"
    try:
        fs.mkdir(path)
    except OSError as e:
        if e.errno == errno.EEXIST:
            return False
        raise from_mkdir(e, path, Code.NODE_EXISTS) from e
    try:
        write_attr(fs, f"{path}/ipv4_port", str(node.ip_port))
        write_attr(fs, f"{path}/ipv4_address", node.ip_address)
        write_attr(fs, f"{path}/num", str(node.number))
        write_attr(fs, f"{path}/local", "1" if local else "0")
    except BaseException:
        with contextlib.suppress(OSError):
            fs.rmdir(path)
        raise
    return True


@dataclass(frozen=True)
class Timeouts:
    """The init script's tunables; None leaves the kernel's value."""

    dead_threshold: int | None = None
    idle_timeout_ms: int | None = None
    keepalive_delay_ms: int | None = None
    reconnect_delay_ms: int | None = None


def write_timeouts(
    sysroot: Sysroot, cluster: str, timeouts: Timeouts, fs: ConfigfsIO = OS_CONFIGFS
) -> list[str]:
    """Write the given timeouts as ``echo VAL > attr`` does; returns the attrs written.

    Attributes the kernel lacks are skipped, as the init script tests ``-f``.
    """
    base = _cluster_dir(sysroot, cluster)
    written = []
    for attr, value in (
        ("heartbeat/dead_threshold", timeouts.dead_threshold),
        ("idle_timeout_ms", timeouts.idle_timeout_ms),
        ("keepalive_delay_ms", timeouts.keepalive_delay_ms),
        ("reconnect_delay_ms", timeouts.reconnect_delay_ms),
    ):
        if value is None:
            continue
        try:
            write_attr(fs, f"{base}/{attr}", f"{value}\n")
        except O2cbError as e:
            if e.code is Code.SERVICE_UNAVAILABLE:
                continue
            raise
        written.append(attr)
    return written


def register(
    sysroot: Sysroot,
    config: Config,
    name: str,
    node_name: str | None = None,
    timeouts: Timeouts | None = None,
    fs: ConfigfsIO = OS_CONFIGFS,
) -> list[str]:
    """``o2cb register-cluster NAME``; returns the nodes added.

    ``node_name`` stands in for the hostname when deciding which node is
    local (default: ``socket.gethostname()``). The caller checks the running
    stack (:func:`hbctl.stack.o2cb_init`) first.
    """
    cluster = config.cluster(name)
    if cluster is None:
        raise O2cbError(Code.CONFIGURATION_ERROR, f"Unknown cluster '{name}'")
    me = node_name if node_name is not None else socket.gethostname()
    base = _cluster_dir(sysroot, name)
    try:
        fs.mkdir(base)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise from_mkdir(e, base, Code.CLUSTER_EXISTS) from e
    try:
        write_attr(fs, f"{base}/heartbeat/mode", cluster.heartbeat_mode)
    except O2cbError as e:
        # old kernels have no mode attribute: fine as long as we want local
        if not (e.code is Code.SERVICE_UNAVAILABLE and cluster.heartbeat_mode == "local"):
            raise
    wanted = {n.name: n for n in cluster.nodes}
    for existing in list_dir(fs, f"{base}/node"):
        path = f"{base}/node/{existing}"
        node = wanted.get(existing)
        if node is None or not _same_node(fs, path, node):
            try:
                fs.rmdir(path)
            except OSError as e:
                raise from_rmdir(e, path) from e
    added = []
    for node in cluster.nodes:
        if add_node(fs, base, node, is_local(node.name, me)):
            added.append(node.name)
    if timeouts is not None:
        write_timeouts(sysroot, name, timeouts, fs)
    return added


REGION_ACTIVE = "At least one heartbeat region is still active"


def unregister(sysroot: Sysroot, name: str, fs: ConfigfsIO = OS_CONFIGFS) -> None:
    """``o2cb unregister-cluster NAME``: refuse while a region exists, else remove it all."""
    clusters = list_dir(fs, f"{configfs_path(sysroot)}/cluster")
    if not clusters or clusters[0] != name:
        raise O2cbError(Code.INVALID_CLUSTER_NAME, f"cluster {name!r} is not registered")
    if list_regions(sysroot, name, fs):
        raise O2cbError(Code.REGION_IN_USE, REGION_ACTIVE)
    base = _cluster_dir(sysroot, name)
    for node in list_dir(fs, f"{base}/node"):
        path = f"{base}/node/{node}"
        try:
            fs.rmdir(path)
        except OSError as e:
            raise from_rmdir(e, path) from e
    try:
        fs.rmdir(base)
    except OSError as e:
        err = from_rmdir(e, base)
        # an emulation that keeps default groups says ENOTEMPTY: libo2cb's words
        raise O2cbError(Code.INTERNAL_FAILURE, err.detail) from e


_NODE_ATTRS = ("num", "ipv4_address", "ipv4_port", "local")
_CLUSTER_ATTRS = ("idle_timeout_ms", "keepalive_delay_ms", "reconnect_delay_ms", "fence_method")
_REGION_ATTRS = ("block_bytes", "start_block", "blocks", "dev", "pid")


def _attrs(fs: ConfigfsIO, path: str, names: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for a in names:
        try:
            out[a] = read_attr(fs, f"{path}/{a}", 4096).strip()
        except O2cbError:
            out[a] = None
    return out


def show(sysroot: Sysroot, fs: ConfigfsIO = OS_CONFIGFS) -> list[dict[str, Any]]:
    """What is registered: per cluster its mode, attributes, nodes and regions (with refs)."""
    out = []
    for name in list_dir(fs, f"{configfs_path(sysroot)}/cluster"):
        base = _cluster_dir(sysroot, name)
        hb = _attrs(fs, f"{base}/heartbeat", ("mode", "dead_threshold"))
        nodes = {
            n: _attrs(fs, f"{base}/node/{n}", _NODE_ATTRS) for n in list_dir(fs, f"{base}/node")
        }
        regions = {}
        for r in list_regions(sysroot, name, fs):
            info: dict[str, Any] = dict(_attrs(fs, f"{base}/heartbeat/{r}", _REGION_ATTRS))
            info["refs"] = semaphores.peek_refs(r)
            regions[r] = info
        out.append(
            {
                "cluster": name,
                "mode": hb["mode"] or "local",
                "dead_threshold": hb["dead_threshold"],
                **_attrs(fs, base, _CLUSTER_ATTRS),
                "nodes": nodes,
                "regions": regions,
            }
        )
    return out
