"""N emulated nodes on one fresh ocfs2 image: the shell behind the pytest plugin and
``fakecfs cluster up|status|down``.

A node is what a host would be: a fakecfs mount (its own emulated kernel), its own IPC
namespace (libo2cb's semaphore refcounts) and UTS namespace (hostname = node name), held
open by a small holder process so they outlive single commands; the node's daemon runs in
them too, so put_super's ``ocfs2_hb_ctl -K`` sees the node's semaphores. The cluster is
registered from a generated cluster.conf with ``hbctl cluster register`` and heartbeat is
started with ``hbctl start`` on every node.

Joins are scheduled: the kernel's dev write returns only after a run of heartbeat
iterations without a membership change, and gives up ("Unable to stabilize", EIO) after
three times that, so nodes joining one after another keep aborting each other. Nodes are
started in waves of ``wave`` at once (each wave's joins see each other within a period or
two), the next wave once the last is steady; an aborted join is retried.

Everything here is plain subprocess work (no trio); it needs root for the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import daemon
from .control import Events, Faults

BIN = Path(sys.executable).parent
STATE = "cluster.json"


class ClusterError(Exception):
    """Bringing the cluster up (or a node command) failed; the message says why."""


def _tool(name: str) -> str:
    local = BIN / name
    return str(local) if local.exists() else name


def make_image(path: Path, cluster: str, size: str = "64M") -> None:
    """A fresh mkfs.ocfs2 image for ``cluster`` (o2cb stack, 4 slots)."""
    path.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    try:
        subprocess.run(["mkfs.ocfs2", "-q", "-F", "-b", "4096", "-C", "4096", "-N", "4",
                        "-J", "size=4M", "-L", cluster, "--cluster-stack=o2cb",
                        f"--cluster-name={cluster}", str(path)], check=True,
                       stdin=subprocess.DEVNULL, capture_output=True)
    except FileNotFoundError as exc:
        raise ClusterError("mkfs.ocfs2 not found (install ocfs2-tools)") from exc
    except subprocess.CalledProcessError as exc:
        raise ClusterError(f"mkfs.ocfs2 failed: {exc.stderr.decode().strip()}") from exc


def cluster_conf(cluster: str, names: Sequence[str]) -> str:
    out = [f"cluster:\n\tnode_count = {len(names)}\n\theartbeat_mode = local\n"
           f"\tname = {cluster}\n\n"]
    for num, name in enumerate(names):
        out.append(f"node:\n\tip_port = 7777\n\tip_address = 127.0.{num // 250}.{num % 250 + 1}"
                   f"\n\tnumber = {num}\n\tname = {name}\n\tcluster = {cluster}\n\n")
    return "".join(out)


@dataclass
class NodeState:
    """What identifies a node across commands (kept in DIR/cluster.json)."""

    name: str
    num: int
    root: str
    holder: int  # pid of the process holding the IPC and UTS namespaces


class Node:
    """One emulated node of a :class:`Cluster`."""

    def __init__(self, cluster: Cluster, state: NodeState) -> None:
        self.cluster = cluster
        self.state = state
        self.name = state.name
        self.num = state.num
        self.root = Path(state.root)
        self.faults = Faults(self.root)
        self._events: Events | None = None

    # -- running commands as this node --

    def env(self) -> dict[str, str]:
        return {**os.environ, "HBCTL_SYSROOT": str(self.root),
                "HBCTL_DEVICES": str(self.cluster.image),
                "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def command(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` inside this node's IPC and UTS namespaces."""
        return ["nsenter", "--ipc", "--uts", "--target", str(self.state.holder), *cmd]

    def run(self, cmd: str | Sequence[str], *, check: bool = False, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (a list, or a string for ``sh -c``) as this node, output captured."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return subprocess.run(self.command(argv), env=self.env(), capture_output=True,
                              text=True, check=check, timeout=timeout, input=input)

    def hbctl(self, *args: str) -> str:
        proc = self.run([_tool("hbctl"), *args])
        if proc.returncode:
            raise ClusterError(f"{self.name}: hbctl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    # -- lifecycle --

    def daemon_pid(self) -> int | None:
        return daemon.daemon_pid(str(self.root))

    def kill(self) -> None:
        """kill -9 of the node's emulated kernel: no clean leave, peers see it die."""
        pid = self.daemon_pid()
        if pid is None:
            raise ClusterError(f"{self.name}: not running")
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            for _ in range(500):
                os.kill(pid, 0)
                time.sleep(0.01)

    def stop(self) -> None:
        """A clean stop: heartbeat stops with generation-0 blocks, the mount goes."""
        subprocess.run([_tool("fakecfs"), "umount", str(self.root)], capture_output=True,
                       check=False)

    def freeze(self) -> None:
        self.faults.freeze()

    def thaw(self) -> None:
        self.faults.thaw()

    def fault(self, command: str) -> None:
        """Any fakecfs/faults command, e.g. ``f"eio region={cluster.uuid} op=write"``."""
        self.faults.command(command)

    # -- observing --

    @property
    def events(self) -> Events:
        if self._events is None:
            self._events = Events(self.root)
        return self._events

    def livenodes(self) -> list[int] | None:
        """The region's live nodes in this node's debugfs; None while not running."""
        path = self.root / "sys/kernel/debug/o2hb" / self.cluster.uuid / "livenodes"
        try:
            return [int(x) for x in path.read_text().split()]
        except OSError:
            return None

    def wait_for(self, live: Sequence[int] | None = None, event: str | dict[str, Any] |
                 None = None, timeout: float = 60.0, **fields: Any) -> dict[str, Any] | None:
        """Wait until this node sees exactly ``live`` and/or the ``event`` (a kind, or fields).

        Returns the event waited for (None when only ``live`` was given).
        """
        deadline = time.monotonic() + timeout
        found = None
        if event is not None:
            want = {"kind": event} if isinstance(event, str) else dict(event)
            found = self.events.wait_for(timeout=timeout, **want, **fields)
        if live is not None:
            wanted = sorted(live)
            while self.livenodes() != wanted:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} sees {self.livenodes()}, not {wanted}, "
                                       f"after {timeout}s")
                time.sleep(0.02)
        return found

    async def wait_for_async(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """wait_for from a trio test, in a worker thread (the run loop goes on)."""
        import functools

        import trio

        return await trio.to_thread.run_sync(functools.partial(self.wait_for, *args, **kwargs))


class Cluster:
    """N nodes on one image under a work directory."""

    def __init__(self, workdir: Path, name: str = "fakecfs", interval_ms: int = 2000,
                 dead_threshold: int = 31) -> None:
        self.workdir = Path(workdir)
        self.name = name
        self.interval_ms = interval_ms
        self.dead_threshold = dead_threshold
        self.image = self.workdir / "shared.img"
        self.uuid = ""
        self.nodes: list[Node] = []

    # -- state on disk --

    def save(self) -> None:
        data = {"name": self.name, "interval_ms": self.interval_ms, "uuid": self.uuid,
                "dead_threshold": self.dead_threshold, "image": str(self.image),
                "nodes": [asdict(n.state) for n in self.nodes]}
        (self.workdir / STATE).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, workdir: Path) -> Cluster:
        try:
            data = json.loads((Path(workdir) / STATE).read_text())
        except FileNotFoundError as exc:
            raise ClusterError(f"{workdir}: no cluster here (no {STATE})") from exc
        cluster = cls(Path(workdir), data["name"], data["interval_ms"], data["dead_threshold"])
        cluster.uuid = data["uuid"]
        cluster.nodes = [Node(cluster, NodeState(**n)) for n in data["nodes"]]
        return cluster

    # -- up / down --

    def up(self, count: int, *, wave: int = 4, retries: int = 3,
           progress: Callable[[str], None] | None = None) -> None:
        """Make the image, mount and register ``count`` nodes, start heartbeat in waves."""
        if os.geteuid() != 0:
            raise ClusterError("a cluster needs root (one IPC and UTS namespace per node)")
        if not 1 <= count <= 255:
            raise ClusterError(f"{count} nodes: o2nm allows 1 to 255")
        for tool in ("unshare", "nsenter"):
            if shutil.which(tool) is None:
                raise ClusterError(f"{tool} not found (util-linux)")
        say = progress or (lambda _msg: None)
        self.workdir.mkdir(parents=True, exist_ok=True)
        make_image(self.image, self.name)
        names = [f"node{i}" for i in range(count)]
        (self.workdir / "cluster.conf").write_text(cluster_conf(self.name, names))
        try:
            for num, name in enumerate(names):
                self.nodes.append(self._mount(num, name))
                self.save()
            say(f"{count} nodes mounted and registered")
            # The userland reads the volume (fakecfs does not import hbctl).
            info = json.loads(self.nodes[0].hbctl("info", "--json", str(self.image)))
            self.uuid = info["uuid"]
            self.save()
            for first in range(0, count, wave):
                batch = self.nodes[first:first + wave]
                self._start(batch, retries)
                say(f"heartbeat started on {first + len(batch)}/{count} nodes")
            self._armed(time.monotonic())
        except BaseException:
            self.down()
            raise

    def _mount(self, num: int, name: str) -> Node:
        root = self.workdir / name
        root.mkdir(exist_ok=True)
        holder = subprocess.Popen(
            ["unshare", "--ipc", "--uts", "sh", "-c", f"hostname {name} && exec sleep infinity"],
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)  # it must not hold a caller's pipe open
        ours = os.readlink("/proc/self/ns/ipc")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/ipc") == ours:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise ClusterError(f"{name}: unshare --ipc --uts failed")
            time.sleep(0.005)
        node = Node(self, NodeState(name, num, str(root), holder.pid))
        self.nodes.append(node)  # so down() finds it if the rest fails
        try:
            proc = node.run([_tool("fakecfs"), "mount", "--background", "--hb-interval-ms",
                             str(self.interval_ms), str(root)])
            if proc.returncode:
                raise ClusterError(f"{name}: fakecfs mount: {proc.stderr.strip()}")
            node.hbctl("cluster", "register", "--config", str(self.workdir / "cluster.conf"),
                       "--node", name, "--dead-threshold", str(self.dead_threshold), self.name)
        finally:
            self.nodes.pop()
        return node

    def _start(self, batch: list[Node], retries: int) -> None:
        errors: dict[str, str] = {}

        def start(node: Node) -> None:
            for _ in range(retries + 1):
                proc = node.run([_tool("hbctl"), "start", "-d", str(self.image)])
                if proc.returncode == 0:
                    errors.pop(node.name, None)
                    return
                errors[node.name] = proc.stderr.strip()
            # every attempt aborted (joins kept disturbing it): reported below

        threads = [threading.Thread(target=start, args=(n,)) for n in batch]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise ClusterError("; ".join(f"{k}: hbctl start: {v}" for k, v in errors.items()))

    def _armed(self, started: float, timeout: float = 120.0) -> None:
        """Until every node wrote once after its start returned.

        The kernel arms the write timeout at the first good write after steady state, just
        after the dev write returns: a fault injected before it would never fence. Waiting
        for that write makes the cluster that up() returns react to faults as a running
        cluster does.
        """
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            path = node.root / "sys/kernel/debug/o2hb" / self.uuid / "elapsed_time_in_ms"
            while int(path.read_text()) >= (time.monotonic() - started) * 1000:
                if time.monotonic() > deadline:
                    raise ClusterError(f"{node.name}: no heartbeat write since its start")
                time.sleep(0.01)

    def down(self) -> None:
        """Stop every node cleanly (a killed node's dead mount is cleared) and the holders."""
        for node in self.nodes:
            node.stop()
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.state.holder, signal.SIGKILL)
        for node in self.nodes:
            _wait_gone(node.state.holder)
        self.nodes = []
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / STATE).unlink()

    # -- views --

    def status(self) -> dict[str, Any]:
        rows = []
        for node in self.nodes:
            pid = node.daemon_pid()
            rows.append({"name": node.name, "num": node.num, "root": str(node.root),
                         "daemon": pid, "running": pid is not None and daemon.is_mounted(
                             str(node.root)), "live": node.livenodes()})
        return {"cluster": self.name, "uuid": self.uuid, "image": str(self.image),
                "interval_ms": self.interval_ms, "dead_threshold": self.dead_threshold,
                "nodes": rows}

    def wait_for(self, live: Sequence[int] | None = None, timeout: float = 60.0) -> None:
        """Every running node sees exactly ``live`` (default: every node)."""
        want = list(range(len(self.nodes))) if live is None else list(live)
        for node in self.nodes:
            if node.daemon_pid() is not None:
                node.wait_for(live=want, timeout=timeout)


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Until ``pid`` exited (gone, or a zombie its new parent has not reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except (OSError, IndexError):
            return
        time.sleep(0.01)


def _cpu_ticks_and_rss(pid: int) -> tuple[int, int]:
    """utime + stime (clock ticks) and RSS (bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return ticks, rss


def bench(cluster: Cluster, sample_s: float, timeout: float) -> dict[str, Any]:
    """Per-node CPU and memory over ``sample_s``, then how long survivors take to see a kill.

    The last node's daemon is killed (kill -9); each survivor's node_down event time (from
    its event stream, CLOCK_MONOTONIC) minus the kill time is its detection delay. The
    kernel's rule: dead after dead_threshold periods without a new write.
    """
    hz = os.sysconf("SC_CLK_TCK")
    pids = {n.name: n.daemon_pid() for n in cluster.nodes}
    before = {name: _cpu_ticks_and_rss(pid) for name, pid in pids.items() if pid}
    t0 = time.monotonic()
    time.sleep(sample_s)  # the measurement window itself, not a wait for a condition
    elapsed = time.monotonic() - t0
    after = {name: _cpu_ticks_and_rss(pid) for name, pid in pids.items() if pid}
    cpu = {n: (after[n][0] - before[n][0]) / hz / elapsed for n in after}
    rss = {n: after[n][1] for n in after}
    victim = cluster.nodes[-1]
    survivors = cluster.nodes[:-1]
    for node in survivors:
        node.events.read()  # start reading from now on
    killed = time.monotonic()
    victim.kill()
    delays = []
    for node in survivors:
        event = node.events.wait_for(kind="node_down", node=victim.num, timeout=timeout)
        delays.append(event["t"] - killed)
    rule = cluster.dead_threshold * cluster.interval_ms / 1000
    return {
        "nodes": len(cluster.nodes), "interval_ms": cluster.interval_ms,
        "dead_threshold": cluster.dead_threshold, "sample_s": round(elapsed, 3),
        "cpu_total": round(sum(cpu.values()), 4),
        "cpu_per_node": {"min": round(min(cpu.values()), 4),
                         "max": round(max(cpu.values()), 4)},
        "rss_per_node_mib": {"min": round(min(rss.values()) / 2**20, 1),
                             "max": round(max(rss.values()) / 2**20, 1)},
        "death_rule_s": rule,
        "death_detected_s": {"min": round(min(delays), 3), "max": round(max(delays), 3)}
        if delays else None,
    }
