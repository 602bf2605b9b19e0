"""A three-node corosync cluster on one host, each node with its own ocfs2_controld.

Topology: four network namespaces made by the test (never the host's): one holds a bridge,
each of the three nodes has a veth pair into it and an address in 10.213.0.0/24 *inside its
namespace only*. Each node also has a private mount namespace (its own ``/run``,
``/dev/shm`` — where libqb keeps corosync's IPC files — and ``/var/lib/corosync``) shared by
its Debian corosync 3 (knet, ``token: 1000``, ``-f -c FILE``) and its ``ocfs2_controld.pcmk
--membership corosync``, whose kernel control device is a plain file (``T01\\n`` to read;
the daemon's writes land after it). Everything is killed and removed at the end, whatever
happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hbctl.controld import proto
from tests.userstack import ctl
from tests.userstack.daemon import BIN, control_file, fake_sysroot
from tests.userstack.netns import NetNs, network_namespace, require_root

SUBNET = "10.213.0"
CLUSTER = "uc"
TOKEN_MS = 1000
CONSENSUS_MS = int(TOKEN_MS * 1.2)  # corosync's default: 1.2 x token
START_TIMEOUT_S = 60.0


def corosync_conf(n: int) -> str:
    nodes = "".join(
        f"    node {{\n        ring0_addr: {SUBNET}.{i}\n        nodeid: {i}\n"
        f"        name: node{i}\n    }}\n" for i in range(1, n + 1))
    return (
        "totem {\n    version: 2\n    cluster_name: " + CLUSTER + "\n    transport: knet\n"
        f"    token: {TOKEN_MS}\n    crypto_cipher: none\n    crypto_hash: none\n}}\n"
        f"nodelist {{\n{nodes}}}\n"
        "quorum {\n    provider: corosync_votequorum\n}\n"
        "logging {\n    to_stderr: yes\n    to_syslog: no\n    to_logfile: no\n"
        "    timestamp: on\n}\n")


def require_corosync() -> None:
    require_root()
    for tool in ("corosync", "unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make setup installs corosync)")
    if not os.path.isdir("/var/lib/corosync"):
        pytest.skip("/var/lib/corosync is missing: corosync is not installed properly")


@dataclass
class Node:
    nodeid: int
    ns: NetNs
    dir: Path
    corosync: subprocess.Popen[bytes] | None = None
    controld: subprocess.Popen[bytes] | None = None

    @property
    def control(self) -> Path:
        return self.dir / "ocfs2_control"

    def kernel_writes(self) -> bytes:
        """What the daemon wrote to its kernel control device after the offered T01."""
        return self.control.read_bytes()[len(b"T01\n"):]

    def connect(self) -> ctl.Conn:
        return ctl.connect(self.ns.socket())

    def dump(self) -> str:
        return "".join(self.connect().listing(proto.dump()))

    def log(self) -> str:
        return "\n".join((self.dir / f).read_text(errors="replace")
                         for f in ("corosync.log", "controld.log") if (self.dir / f).exists())

    def kill(self, corosync: bool = True) -> None:
        """``kill -9`` of this node's controld and (``corosync``) its corosync: a crashed
        node, or with ``corosync=False`` a daemon that died on a live node."""
        procs = [self.controld] + ([self.corosync] if corosync else [])
        for proc in procs:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            if proc is not None:
                proc.wait(timeout=30)


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        # A session of its own: teardown kills the whole group (nsenter, unshare, sh...).
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_until(what: str, cond: object, timeout: float, nodes: list[Node]) -> float:
    """Poll ``cond()`` until true; return the seconds it took. Fails with the nodes' logs."""
    t0 = time.monotonic()
    while True:
        try:
            if cond():  # type: ignore[operator]
                return time.monotonic() - t0
        except (OSError, EOFError):
            pass
        if time.monotonic() - t0 > timeout:
            logs = "\n".join(f"--- node{n.nodeid}\n{n.log()[-3000:]}" for n in nodes)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(0.05)


def corosync_answers(node: Node) -> bool:
    """True once ``corosync-cmapctl`` gets an answer; a skip if corosync died first (it
    cannot run here: a kernel or sandbox without what knet needs)."""
    assert node.corosync is not None
    if node.corosync.poll() is not None:
        pytest.skip(f"corosync cannot run here (exit {node.corosync.returncode}): "
                    + node.log()[-500:].strip())
    return node.ns.run("corosync-cmapctl", "-g", "totem.cluster_name",
                       check=False).returncode == 0


@contextmanager
def corosync_cluster(tmp: Path, n: int = 3) -> Iterator[list[Node]]:
    require_corosync()
    with ExitStack() as stack:
        bridge = stack.enter_context(network_namespace())
        nodes: list[Node] = []
        try:
            bridge.run("ip", "link", "add", "br0", "type", "bridge")
            bridge.run("ip", "link", "set", "br0", "up")
            for i in range(1, n + 1):
                ns = stack.enter_context(network_namespace(mount=True))
                d = tmp / f"node{i}"
                (d / "var-lib-corosync").mkdir(parents=True)
                ns.run("mount", "--bind", str(d / "var-lib-corosync"), "/var/lib/corosync")
                ns.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
                       "netns", bridge.path)
                bridge.run("ip", "link", "set", f"p{i}", "master", "br0", "up")
                ns.run("ip", "addr", "add", f"{SUBNET}.{i}/24", "dev", "eth0")
                ns.run("ip", "link", "set", "eth0", "up")
                nodes.append(Node(i, ns, d))
        except subprocess.CalledProcessError as e:
            pytest.skip(f"cannot wire network namespaces here ({' '.join(e.cmd[3:])}): "
                        f"{e.stderr.strip()}")
        stack.callback(lambda: [node.kill() for node in nodes])
        for node in nodes:
            conf = node.dir / "corosync.conf"
            conf.write_text(corosync_conf(n))
            node.corosync = _spawn(node.ns.cmd("corosync", "-f", "-c", str(conf)),
                                   node.dir / "corosync.log")
        for node in nodes:
            # Like an init system: the daemon starts once its corosync answers.
            wait_until(f"corosync on node{node.nodeid}",
                       lambda node=node: corosync_answers(node), START_TIMEOUT_S, nodes)
            sysroot = fake_sysroot(node.dir / "sysroot", "pcmk")
            control_file(node.control)
            node.controld = _spawn(
                node.ns.cmd(str(BIN / "ocfs2_controld.pcmk"), "-D", "--membership",
                            "corosync", "--sysroot", str(sysroot),
                            "--control-device", str(node.control), "--pid-file", "none"),
                node.dir / "controld.log")
        yield nodes


def members_line(count: int) -> str:
    return f'group "ocfs2:controld" confchg: members {count},'
